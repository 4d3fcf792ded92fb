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

Expiry across machines is judged on the reader's clock, never by comparing the holder's
renewTime with it (clock skew would make a live run look dead, and `resume` of a live run
drives it twice): a reader notes when it first saw each resourceVersion (a `Sighting`) and
calls the lease expired only once it has seen no renewal for a whole lease term. Timestamps
that look expired are only a reason to watch (`looks_expired`). Readers that share the
writer's clock (the local fleet) may pass no sighting and judge by the timestamps.

A lease is released by clearing its holder, not deleted: a run whose lease was taken and then
released by an emergency rollback reads "released" and stops, while a lease that is gone (deleted
by hand) is taken again by the live run that held it.

A released lease is taken in one request, without reading it first (`take_if_released`): a JSON
patch whose first operation tests that the lease has no holder, which the server applies to the
lease as stored, atomically (of two runs racing, the second one's test fails: 422). Anything
else (a holder, a lease left with an empty holder by another tool) fails the test, and the
taker reads the lease and decides as above. leaseTransitions counts hand-overs: one when a
holder releases the lease or has it taken from them, so a take of a released lease, which
knows no count to add to, adds nothing.

Fencing, cheaply. A writer that saw the lease as its own (a read, or a renewal the server
accepted) may trust that for a short window, `trust(term)`, a tenth of the lease term (3 s at
the usual 30 s), measured from when it sent that request; past it, the next fence asks again.
Safe because whoever takes the lease from a live holder waits out that same window before its
first write (`takeover_wait`): by then every write the old holder let through on trust has
reached the server, so the taker's writes come after them and win. A rollback that preempts a
deploy pays those seconds; one that finds the lease released pays nothing.

MicroTime fields must be RFC 3339 with exactly six fractional digits in v1.20: `isoformat()`
drops the fraction at a whole second and writes `+00:00`, which the server refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from wavegate.config.app import APP_LABEL, MANAGED_BY

DEFAULT_TERM = 30.0  # seconds, for a lease retaken where its run's ttl is not known
TRUST_SHARE = 0.1  # of a lease term: how long a holder trusts its last look at the lease
RENEW_SHARE = 1 / 3  # of a lease term: how often a run renews its leases (`engine.locks`)


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


@dataclass(frozen=True)
class Sighting:
    """A lease as one reader saw it: its holder and version, and when (on the reader's own
    monotonic clock) the reader first saw that version."""

    holder: str | None
    version: str
    since: float


def sighted(previous: Sighting | None, lease: dict[str, Any], *, at: float) -> Sighting:
    """The reader's sighting after reading `lease` at `at`: kept while the lease is unchanged,
    new as soon as it was renewed or changed hands."""
    seen = Sighting(holder(lease), _version(lease), at)
    if previous is not None and (previous.holder, previous.version) == (seen.holder,
                                                                        seen.version):
        return previous
    return seen


def term(lease: dict[str, Any]) -> float:
    return float((lease.get("spec") or {}).get("leaseDurationSeconds") or 0)


def trust(term: float) -> float:
    """How long a holder's last look at its lease stands in for a new one before a write."""
    return term * TRUST_SHARE


def takeover_wait(lease: dict[str, Any], *, taker: str) -> float:
    """Seconds a run that just took `lease` (as it read it before taking) waits before its
    first write: the trust window of the holder it took it from; none from nobody or itself."""
    previous = holder(lease)
    return trust(term(lease)) if previous is not None and previous != taker else 0.0


@dataclass(frozen=True)
class Held:
    """This process's own hold on a lease: the lease as last read or written (its
    resourceVersion makes the next renewal a compare-and-set without reading it first), and
    when, on our monotonic clock, the request that showed it ours was sent."""

    lease: dict[str, Any]
    holder: str
    confirmed: float

    def trusted(self, holder_id: str, *, at: float, within: float | None = None) -> bool:
        """Still good enough to fence a write of `holder_id` at `at`, without asking; WITHIN
        asks for a fresher look than the trust window (a wait that must notice a loss soon)."""
        window = trust(term(self.lease)) if within is None else min(within, trust(term(self.lease)))
        return self.holder == holder_id and at - self.confirmed < window


def looks_expired(lease: dict[str, Any], *, now: datetime) -> bool:
    """The lease's own timestamps say it ran out: a reason to watch it, not a verdict (the
    holder's clock may be ahead or behind ours)."""
    until = expires(lease)
    return until is not None and until <= now


def decide(lease: dict[str, Any], *, holder_id: str, force: bool, now: datetime,
           seen: Sighting | None = None, at: float = 0.0) -> Decision:
    """SEEN (this reader's sighting of `lease`, `at` its clock now) judges expiry by silence
    for a whole lease term; without it, by the lease's timestamps (one clock only)."""
    current = holder(lease)
    if current == holder_id:
        return Decision.RENEW
    if current is None or force:
        return Decision.TAKE
    if seen is not None:
        silent = at - seen.since
        return Decision.STALE if term(lease) > 0 and silent >= term(lease) else Decision.HELD
    return Decision.STALE if looks_expired(lease, now=now) else Decision.HELD


def renewed(lease: dict[str, Any], *, ttl: float, now: datetime) -> dict[str, Any]:
    """The lease extended by its holder; it keeps its resourceVersion (compare-and-set)."""
    spec = {**lease["spec"], "leaseDurationSeconds": duration(ttl), "renewTime": micro_time(now)}
    return {**_for_update(lease), "spec": spec}


def taken(lease: dict[str, Any], *, holder_id: str, ttl: float, now: datetime) -> dict[str, Any]:
    """The lease handed to `holder_id`; it keeps its resourceVersion (compare-and-set)."""
    spec = lease.get("spec") or {}
    handed_over = 1 if holder(lease) is not None else 0  # a release counted its own
    spec = {**spec, "holderIdentity": holder_id, "leaseDurationSeconds": duration(ttl),
            "acquireTime": micro_time(now), "renewTime": micro_time(now),
            "leaseTransitions": _transitions(lease) + handed_over}
    return {**_for_update(lease), "spec": spec}


def take_if_released(*, holder_id: str, ttl: float, now: datetime) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) that takes the lease if, and only if, it has no holder."""
    return [{"op": "test", "path": "/spec/holderIdentity", "value": None},
            {"op": "add", "path": "/spec/holderIdentity", "value": holder_id},
            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": duration(ttl)},
            {"op": "add", "path": "/spec/acquireTime", "value": micro_time(now)},
            {"op": "add", "path": "/spec/renewTime", "value": micro_time(now)}]


def released(lease: dict[str, Any]) -> dict[str, Any]:
    """The lease with no holder: kept, so a run that lost it reads "released", not "gone"."""
    spec = {key: value for key, value in (lease.get("spec") or {}).items()
            if key != "holderIdentity"}
    spec["leaseTransitions"] = _transitions(lease) + 1
    return {**_for_update(lease), "spec": spec}


def _transitions(lease: dict[str, Any]) -> int:
    return int((lease.get("spec") or {}).get("leaseTransitions") or 0)


def _version(lease: dict[str, Any]) -> str:
    """What changes on every write of the lease: its resourceVersion, else its renewTime."""
    version = (lease.get("metadata") or {}).get("resourceVersion")
    spec = lease.get("spec") or {}
    return str(version or spec.get("renewTime") or spec.get("acquireTime") or "")


def _for_update(lease: dict[str, Any]) -> dict[str, Any]:
    """The lease as read, minus what an update need not send back (managedFields, status)."""
    metadata = {key: value for key, value in (lease.get("metadata") or {}).items()
                if key != "managedFields"}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}
