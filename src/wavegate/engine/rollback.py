"""`wavegate rollback`: the emergency path. Every chosen cluster, in parallel, back to a
verified release, whatever else is running.

It takes each cluster's lock by force, so a deploy still running loses its lease and stops
before its next write. It is never held by a deploy window, nor by a webhook variable that is
not set (that webhook is skipped with a warning). It posts the same webhook events as a deploy:
`check.failed` (when checks triggered it), `run.started`, `rollback.done`, `run.finished`.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog

from wavegate.clock import Clock
from wavegate.config.fleet import Fleet
from wavegate.decide import ledger
from wavegate.drivers.base import Driver
from wavegate.engine import notify, restore
from wavegate.engine.locks import Locks
from wavegate.engine.notify import Notifier
from wavegate.engine.session import (
    NO_OUTPUTS,
    Outputs,
    Watch,
    connect,
    drivers_for,
    new_run_id,
    reported,
    unwatched,
)
from wavegate.errors import EXIT_NEEDS_HUMAN, EXIT_OK, DriverError
from wavegate.outputs.report import RunReport

log = structlog.get_logger(__name__)


def new_report(app: str, clusters: list[str], fleet: Fleet, run_id: str,
               to_version: str | None) -> RunReport:
    report = RunReport(run_id=run_id, app=app, version=to_version, command="rollback",
                       fleet=fleet.name)
    for name in clusters:
        report.add_cluster(name, fleet.wave_of(name).name, to_version=to_version)
    return report


def emergency(fleet: Fleet, app: str, clusters: list[str], *, to_version: str | None,
              reason: str, by: str, clock: Clock, outputs: Outputs = NO_OUTPUTS,
              watch: Watch = unwatched,
              failed_checks: Mapping[str, str] | None = None) -> RunReport:
    """Roll `clusters` back as one run of its own; its report, saved wherever asked.
    FAILED_CHECKS (cluster -> detail) are what triggered it, when checks did."""
    run_id = new_run_id()
    report = new_report(app, clusters, fleet, run_id, to_version)
    return reported(report, lambda: run(
        fleet, connect(drivers_for(fleet, clusters)), app=app, to_version=to_version,
        reason=reason, run_id=run_id, by=by, clock=clock, report=report,
        failed_checks=failed_checks), outputs=outputs, watch=watch)


def run(fleet: Fleet, live: dict[str, Driver], *, app: str, to_version: str | None,
        reason: str, run_id: str, by: str, clock: Clock, report: RunReport,
        failed_checks: Mapping[str, str] | None = None) -> int:
    """The exit code; FAILED_CHECKS (cluster -> detail) are what triggered it, if checks did."""
    urls = notify.resolve_urls(fleet, skip_unset=True)
    notifier = Notifier(urls, run_id=run_id, app=app, version=to_version)
    try:
        for name, detail in (failed_checks or {}).items():
            notifier.send("check.failed", f"{name} failed: {detail}", cluster=name,
                          detail=detail)
        notifier.send("run.started", f"emergency rollback of {len(live)} clusters: {reason}",
                      reason=reason)
        code = _roll_back_all(fleet, live, app=app, to_version=to_version, reason=reason,
                              run_id=run_id, by=by, clock=clock, report=report)
        states = {name: entry.state for name, entry in report.clusters.items()}
        notifier.send("rollback.done", "rollback: " + ", ".join(
            f"{name} {state}" for name, state in states.items()), clusters=states)
        notifier.send("run.finished", f"run {report.outcome}", outcome=report.outcome)
    finally:
        notifier.close()
    return code


def _roll_back_all(fleet: Fleet, live: dict[str, Driver], *, app: str,
                   to_version: str | None, reason: str, run_id: str, by: str, clock: Clock,
                   report: RunReport) -> int:
    log.info("rollback.started", run_id=run_id, app=app, clusters=list(live), reason=reason)
    report.by = report.by or by
    with Locks(live, app=app, holder=run_id, force=True), \
            ThreadPoolExecutor(max_workers=len(live) or 1) as pool:
        results = list(pool.map(
            lambda name: _one(live[name], app=app, to_version=to_version, reason=reason,
                              run_id=run_id, by=by, fleet=fleet, clock=clock, report=report),
            live))
    code = EXIT_OK if all(results) else EXIT_NEEDS_HUMAN
    failed = [e.cluster for e in report.clusters.values() if e.state == "rollback-failed"]
    report.finish(outcome="rolled-back" if code == EXIT_OK else "needs-human", exit_code=code,
                  message=f"rollback failed on {', '.join(failed)}" if failed else None)
    return code


def _one(driver: Driver, *, app: str, to_version: str | None, reason: str, run_id: str,
         by: str, fleet: Fleet, clock: Clock, report: RunReport) -> bool:
    name = driver.cluster.name
    try:
        records = driver.records(app)
    except DriverError as error:
        report.update(name, state="rollback-failed", detail=str(error))
        return False
    current = ledger.live(records)
    target = ledger.rollback_target(records, to_version=to_version)
    report.update(name, from_version=current.version if current else None,
                  to_version=target.version if target else to_version)
    if target is None:
        wanted = f"verified {to_version}" if to_version else "earlier verified release"
        report.update(name, state="rollback-failed", detail=f"no {wanted} in the ledger; "
                      "left as it is")
        return False
    if current is not None and current.revision == target.revision:
        report.update(name, state="verified", detail=f"already on {target.version}")
        return True
    result = restore.restore(
        driver, app=app, records=records, replacing=current, target=target, run_id=run_id,
        by=by, reason=f"emergency rollback: {reason}", policy=fleet.policy, clock=clock,
        on_state=lambda state: report.update(name, state=state.value))
    report.update(name, detail=result.detail, checks=result.checks,
                  rollback_revision=result.revision)
    return result.ok
