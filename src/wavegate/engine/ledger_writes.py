"""Ledger writes through a driver: open a revision, and compare-and-set status changes.

An update starts from the record the caller last read or wrote (each read of a Kubernetes
ledger lists every release Secret, so reads are passed along, not repeated), and re-reads only
when the store says it changed underneath: two writers (a run and an emergency rollback) never
overwrite each other's status blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wavegate import redact
from wavegate.config.app import Release
from wavegate.decide import ledger
from wavegate.decide.ledger import Record, Status
from wavegate.drivers.base import Driver
from wavegate.errors import Conflict

_ATTEMPTS = 3


def open_revision(driver: Driver, release: Release, *, run_id: str, by: str,
                  rollback_of: int | None = None, reason: str | None = None,
                  records: Sequence[Record] | None = None, holder: str | None = None) -> Record:
    """A new `applying` record; unfinished records it replaces become `superseded`.

    `records` are the app's records if the caller has just read them (each read of a
    Kubernetes ledger lists every release Secret). `holder` is the lock holder that fences the
    writes (the run's process incarnation), the run id when not given."""
    records = driver.records(release.app) if records is None else records
    holder = holder or run_id
    for stale in records:
        if stale.status in (Status.APPLYING, Status.INTERRUPTED):
            mark(driver, release.app, stale.revision, holder=holder, current=stale,
                 status=Status.SUPERSEDED)
    record = Record(app=release.app, cluster=driver.cluster.name,
                    revision=ledger.next_revision(records), version=release.version,
                    status=Status.APPLYING, run_id=run_id, by=by, started_at=ledger.now(),
                    rollback_of=rollback_of, reason=_scrubbed(reason))
    return driver.create_record(record, release, holder=holder)


def mark(driver: Driver, app: str, revision: int, *, holder: str,
         current: Record | None = None, **changes: Any) -> Record:
    """Set fields of one revision (compare-and-set, re-read on conflict).

    `current` is the revision as the caller last read or wrote it; without it, it is read."""
    if changes.get("status") not in (None, Status.APPLYING) and "finished_at" not in changes:
        changes["finished_at"] = ledger.now()
    if "reason" in changes:
        changes["reason"] = _scrubbed(changes["reason"])
    for attempt in range(_ATTEMPTS):
        if current is None or current.revision != revision:
            current = next(r for r in driver.records(app) if r.revision == revision)
        try:
            return driver.update_record(current.updated(**changes), holder=holder)
        except Conflict:
            current = None
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _scrubbed(reason: str | None) -> str | None:
    """A reason may quote a pod's last output or an API answer: never with a secret in it
    (ledger metadata is shown by `history` to anyone who may list the ledger)."""
    return None if reason is None else redact.scrub(reason)
