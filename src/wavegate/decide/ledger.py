"""Per-cluster release history: one record per revision, stored in the cluster by its driver.

The questions every rollback asks of it (what is live, what is last-known-good, where does an
emergency rollback go) are answered here, as pure functions of the records.

    applying     written before the first object is applied
    verified     passed its checks and its bake: a last-known-good candidate
    failed       failed its checks or its rollout; still live until rolled back
    rolled-back  replaced by a rollback (a new revision carrying the target's manifests)
    interrupted  the run was stopped (SIGINT/SIGTERM) before it verified
    superseded   an unfinished record a later revision replaced
    adopted      what ran before the first wavegate release (objects kubectl or Helm applied),
                 kept as revision 0 so a failing first release goes back to it, not to nothing;
                 never checked, so never last-known-good
    unreadable   a stored record that could not be decoded: shown, and skipped by every decision

Each record carries its `inventory`: the objects its release applied (group, version, kind,
namespace, name), which is what a later revision prunes by. Records written before inventories
existed have None. How many records a cluster keeps is `trimmed`'s answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    APPLYING = "applying"
    VERIFIED = "verified"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    INTERRUPTED = "interrupted"
    SUPERSEDED = "superseded"
    ADOPTED = "adopted"
    UNREADABLE = "unreadable"


# Statuses whose manifests may still be what the cluster runs.
LIVE_STATUSES = frozenset({Status.APPLYING, Status.VERIFIED, Status.FAILED, Status.INTERRUPTED,
                           Status.ADOPTED})
# What a failed deploy or a rollback may go back to, best first.
RESTORABLE = (Status.VERIFIED, Status.ADOPTED)
DEFAULT_HISTORY = 10


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One object a release applied; namespace "" for cluster-scoped kinds."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@dataclass(frozen=True)
class Counts:
    passed: int = 0
    failed: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Record:
    app: str
    cluster: str
    revision: int
    version: str
    status: Status
    run_id: str
    by: str
    started_at: str
    finished_at: str | None = None
    checks: Counts = Counts()
    reason: str | None = None
    rollback_of: int | None = None  # the revision this one replaced in a rollback
    inventory: tuple[ObjectRef, ...] | None = None  # None: written before inventories
    resource_version: str | None = None  # the store's compare-and-set token

    def updated(self, **changes: Any) -> Record:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        data.pop("resource_version")
        if self.inventory is None:
            data.pop("inventory")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], resource_version: str | None = None) -> Record:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        values["status"] = Status(values["status"])
        values["checks"] = Counts(**values.get("checks") or {})
        if values.get("inventory") is not None:
            values["inventory"] = tuple(ObjectRef(**ref) for ref in values["inventory"])
        values["resource_version"] = resource_version
        return cls(**values)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def newest_first(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda record: record.revision, reverse=True)


def live(records: Sequence[Record]) -> Record | None:
    """The revision whose manifests the cluster runs: the newest that was not replaced."""
    return next((r for r in newest_first(records) if r.status in LIVE_STATUSES), None)


def last_known_good(records: Sequence[Record]) -> Record | None:
    return next((r for r in newest_first(records) if r.status is Status.VERIFIED), None)


def unreadable(records: Sequence[Record]) -> list[Record]:
    return [r for r in newest_first(records) if r.status is Status.UNREADABLE]


def next_revision(records: Sequence[Record]) -> int:
    return max((record.revision for record in records), default=0) + 1


def rollback_target(records: Sequence[Record], *, to_version: str | None = None) -> Record | None:
    """Where `rollback` takes a cluster.

    With a version: its newest verified revision. Without: the newest verified revision older
    than the live one and of another version, because the live release may have passed its
    checks and still be the culprit.
    """
    verified = [r for r in newest_first(records) if r.status is Status.VERIFIED]
    if to_version is not None:
        return next((r for r in verified if r.version == to_version), None)
    current = live(records)
    if current is None:
        return verified[0] if verified else None
    found = next((r for r in verified
                  if r.revision < current.revision and r.version != current.version), None)
    return found or _adopted_before(records, current.revision)


def restore_target(records: Sequence[Record], *, replacing: int) -> Record | None:
    """Where a failed deploy goes back to: the newest verified revision before `replacing`,
    else what was adopted before the first release (rather than removing a serving app)."""
    return next((r for r in newest_first(records)
                 if r.status is Status.VERIFIED and r.revision < replacing),
                None) or _adopted_before(records, replacing)


def _adopted_before(records: Sequence[Record], revision: int) -> Record | None:
    return next((r for r in newest_first(records)
                 if r.status is Status.ADOPTED and r.revision < revision), None)


def trimmed(records: Sequence[Record], *, keep: int) -> list[Record]:
    """The records a ledger of at most `keep` revisions drops, oldest first.

    Never the live one, the last-known-good, where `rollback` would go, or adopted objects no
    verified release has replaced yet: each of those is a state the cluster may need again.
    Unreadable records count like any other, so a broken one ages out too.
    """
    needed = {r.revision for r in (live(records), last_known_good(records),
                                   rollback_target(records)) if r is not None}
    if last_known_good(records) is None:
        needed |= {r.revision for r in records if r.status is Status.ADOPTED}
    extra = newest_first(records)[max(keep, 1):]
    return sorted((r for r in extra if r.revision not in needed), key=lambda r: r.revision)
