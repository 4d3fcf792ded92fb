"""`wavegate status` and `wavegate history`: what the ledgers say, per cluster."""

from __future__ import annotations

from typing import Any

from wavegate.decide import ledger
from wavegate.drivers.base import Driver
from wavegate.engine import fanout
from wavegate.errors import DriverError


def status(app: str, live: dict[str, Driver]) -> dict[str, Any]:
    with fanout.pool(len(live)) as pool:
        rows = list(pool.map(lambda driver: _cluster_status(app, driver), live.values()))
    return {"app": app, "clusters": rows}


def _cluster_status(app: str, driver: Driver) -> dict[str, Any]:
    row: dict[str, Any] = {"cluster": driver.cluster.name, "live_version": None,
                           "live_revision": None, "last_known_good": None, "lock": None}
    try:
        records = driver.records(app)
        lock = driver.read_lock(app)
    except DriverError as error:
        row["error"] = str(error)
        return row
    current, good = ledger.live(records), ledger.last_known_good(records)
    if current is not None:
        row.update(live_version=current.version, live_revision=current.revision,
                   live_status=current.status.value)
    if good is not None:
        row["last_known_good"] = {"version": good.version, "revision": good.revision}
    if lock is not None:
        row["lock"] = {"holder": lock.holder, "expires": lock.expires}
    broken = ledger.unreadable(records)
    if broken:  # shown, never in the way: every decision skips them
        row["unreadable"] = [{"revision": r.revision, "detail": r.reason} for r in broken]
    return row


def history(app: str, live: dict[str, Driver]) -> dict[str, Any]:
    with fanout.pool(len(live)) as pool:
        per_cluster = list(pool.map(lambda driver: driver.records(app), live.values()))
    records = [record for records in per_cluster for record in records]
    records.sort(key=lambda r: (r.started_at, r.revision), reverse=True)
    return {"app": app, "records": [_history_row(record) for record in records]}


def _history_row(record: ledger.Record) -> dict[str, Any]:
    return {"cluster": record.cluster, "revision": record.revision, "version": record.version,
            "status": record.status.value, "run_id": record.run_id,
            "started_at": record.started_at, "finished_at": record.finished_at,
            "by": record.by, "reason": record.reason, "rollback_of": record.rollback_of,
            "checks": {"passed": record.checks.passed, "failed": record.checks.failed,
                       "errors": record.checks.errors}}
