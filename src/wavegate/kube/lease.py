"""The app's lock on one cluster, as a `coordination.k8s.io/v1` Lease named `wavegate-<app>`.

holderIdentity is the run id; renewTime + leaseDurationSeconds is when the lease runs out. Who
may take a lease is decided here (`decide`), as a function of the lease and the time:

    held by us                      renew it (a resumed run keeps its lock)
    held by nobody                  take it
    held by another, `force`        take it (an emergency rollback, or `resume` of a dead run)
    held by another, expired        refuse, saying the holder looks dead (StaleLock)
    held by another, live           refuse (LockHeld)

An expired lease is not taken without force: a run that stopped renewing may still be applying,
and only `resume` or `rollback` know to finish or undo what it did. Every write of a lease
carries the resourceVersion it was read at, so of two runs racing for it one gets a 409.

MicroTime fields must be RFC 3339 with exactly six fractional digits in v1.20: `isoformat()`
drops the fraction at a whole second and writes `+00:00`, which the server refuses.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from wavegate.config.app import APP_LABEL, MANAGED_BY


class Decision(Enum):
    RENEW = "renew"
    TAKE = "take"
    HELD = "held"
    STALE = "stale"


def name(app: str) -> str:
    return f"wavegate-{app}"


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """MicroTime or Time as the API server writes them (with or without a fraction)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def duration(ttl: float) -> int:
    return max(1, math.ceil(ttl))


def new(app: str, *, namespace: str, holder: str, ttl: float, now: datetime) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name(app), "namespace": namespace,
                         "labels": {APP_LABEL: app, MANAGED_BY: "wavegate"}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration(ttl),
                     "acquireTime": micro_time(now), "renewTime": micro_time(now),
                     "leaseTransitions": 0}}


def holder(lease: dict[str, Any]) -> str | None:
    return (lease.get("spec") or {}).get("holderIdentity") or None


def expires(lease: dict[str, Any]) -> datetime | None:
    spec = lease.get("spec") or {}
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return None
    return parse_time(renewed) + timedelta(seconds=spec.get("leaseDurationSeconds") or 0)


def expires_text(lease: dict[str, Any]) -> str | None:
    """When the lease runs out, as `wavegate status` shows it (ISO 8601, UTC, seconds)."""
    until = expires(lease)
    return until.isoformat(timespec="seconds") if until else None


def decide(lease: dict[str, Any], *, holder_id: str, force: bool, now: datetime) -> Decision:
    current = holder(lease)
    if current == holder_id:
        return Decision.RENEW
    if current is None or force:
        return Decision.TAKE
    until = expires(lease)
    return Decision.STALE if until is not None and until <= now else Decision.HELD


def renewed(lease: dict[str, Any], *, ttl: float, now: datetime) -> dict[str, Any]:
    """The lease extended by its holder; it keeps its resourceVersion (compare-and-set)."""
    spec = {**lease["spec"], "leaseDurationSeconds": duration(ttl), "renewTime": micro_time(now)}
    return {**_for_update(lease), "spec": spec}


def taken(lease: dict[str, Any], *, holder_id: str, ttl: float, now: datetime) -> dict[str, Any]:
    """The lease handed to `holder_id`; it keeps its resourceVersion (compare-and-set)."""
    spec = lease.get("spec") or {}
    spec = {**spec, "holderIdentity": holder_id, "leaseDurationSeconds": duration(ttl),
            "acquireTime": micro_time(now), "renewTime": micro_time(now),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1}
    return {**_for_update(lease), "spec": spec}


def _for_update(lease: dict[str, Any]) -> dict[str, Any]:
    """The lease as read, minus what an update need not send back (managedFields, status)."""
    metadata = {key: value for key, value in (lease.get("metadata") or {}).items()
                if key != "managedFields"}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}
