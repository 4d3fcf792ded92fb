"""`wavegate rollback`: the emergency path. Every chosen cluster, in parallel, back to a
verified release, whatever else is running.

Each cluster is reached, locked and rolled back on its own worker, with its own deadline: a
cluster whose API server does not answer is named, with the exact command that finishes the job
once it answers again, while every other cluster is rolled back (exit 3). It takes each
cluster's lock by force, so a deploy still running loses its lease and stops before its next
write. It is never held by a deploy window, nor by a webhook variable that is not set (that
webhook is skipped with a warning). It posts the same webhook events as a deploy:
`check.failed` (when checks triggered it), `run.started`, `rollback.done`, `run.finished`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from wavegate.clock import Clock
from wavegate.config.app import App
from wavegate.config.fleet import Fleet, Policy
from wavegate.decide import ledger, rollout
from wavegate.drivers.base import Driver
from wavegate.engine import notify, restore
from wavegate.engine.fanout import MAX_WORKERS
from wavegate.engine.locks import Locks
from wavegate.engine.notify import Notifier
from wavegate.engine.session import (
    NO_OUTPUTS,
    Outputs,
    Watch,
    drivers_for,
    new_run_id,
    reported,
    unwatched,
)
from wavegate.errors import EXIT_NEEDS_HUMAN, EXIT_OK, DriverError, LockHeld, WavegateError
from wavegate.outputs.report import RunReport

log = structlog.get_logger(__name__)

# How long one API call may take at worst, retries included (a hung API server is reported
# after this): the client's read timeout (30 s) plus a margin. Each cluster's deadline is this
# plus its rollout timeout plus the time its verification may take.
API_DEADLINE = 45.0


@dataclass(frozen=True)
class Request:
    """What was asked, so a cluster left behind can be given the command that finishes it."""

    app: str
    to_version: str | None
    reason: str
    run_id: str
    by: str
    folder: App | None = None  # the app folder, whose checks stand in for unusable stored ones


def new_report(app: str, clusters: list[str], fleet: Fleet, run_id: str,
               to_version: str | None) -> RunReport:
    report = RunReport(run_id=run_id, app=app, version=to_version, command="rollback",
                       fleet=fleet.name)
    for name in clusters:
        report.add_cluster(name, fleet.wave_of(name).name, to_version=to_version)
    return report


def emergency(fleet: Fleet, app: str, clusters: list[str], *, to_version: str | None,
              reason: str, by: str, clock: Clock, outputs: Outputs = NO_OUTPUTS,
              watch: Watch = unwatched, failed_checks: Mapping[str, str] | None = None,
              folder: App | None = None) -> RunReport:
    """Roll `clusters` back as one run of its own; its report, saved wherever asked.
    FAILED_CHECKS (cluster -> detail) are what triggered it, when checks did."""
    run_id = new_run_id()
    report = new_report(app, clusters, fleet, run_id, to_version)
    asked = Request(app=app, to_version=to_version, reason=reason, run_id=run_id, by=by,
                    folder=folder)
    return reported(report, lambda: run(
        fleet, drivers_for(fleet, clusters), asked, clock=clock, report=report,
        failed_checks=failed_checks), outputs=outputs, watch=watch)


def run(fleet: Fleet, chosen: dict[str, Driver], asked: Request, *, clock: Clock,
        report: RunReport, failed_checks: Mapping[str, str] | None = None) -> int:
    """The exit code. CHOSEN are drivers not contacted yet: each is reached on its own."""
    urls = notify.resolve_urls(fleet, skip_unset=True)
    notifier = Notifier(urls, run_id=asked.run_id, app=asked.app, version=asked.to_version)
    try:
        for name, detail in (failed_checks or {}).items():
            notifier.send("check.failed", f"{name} failed: {detail}", cluster=name,
                          detail=detail)
        notifier.send("run.started", f"emergency rollback of {len(chosen)} clusters: "
                      f"{asked.reason}", reason=asked.reason)
        code = _roll_back_all(fleet, chosen, asked, clock=clock, report=report)
        states = {name: entry.state for name, entry in report.clusters.items()}
        notifier.send("rollback.done", "rollback: " + ", ".join(
            f"{name} {state}" for name, state in states.items()), clusters=states)
        notifier.send("run.finished", f"run {report.outcome}", outcome=report.outcome)
    finally:
        notifier.close()
    return code


def _finish_with(fleet: Fleet, asked: Request, report: RunReport, name: str) -> str:
    to = report.clusters[name].to_version  # the target, once the cluster's ledger was read
    return restore.finish_with(fleet.path, app=asked.app, cluster=name, to=to,
                               run_id=asked.run_id)


def left_behind(report: RunReport) -> list[str]:
    """Each cluster the rollback could not reach (or finish in time), with its command."""
    return [f"{entry.cluster}: {entry.detail}" for entry in report.clusters.values()
            if entry.state == rollout.State.ROLLBACK_FAILED and entry.detail
            and "finish with `wavegate rollback" in entry.detail]


def deadline(policy: Policy) -> float:
    """One cluster's budget: reached, rolled out, verified (each error round retried)."""
    verify = (policy.max_check_errors + 1) * (policy.check_timeout
                                              + rollout.retry_pause(policy))
    return API_DEADLINE + policy.rollout_timeout + verify


def _roll_back_all(fleet: Fleet, chosen: dict[str, Driver], asked: Request, *, clock: Clock,
                   report: RunReport) -> int:
    log.info("rollback.started", run_id=asked.run_id, app=asked.app, clusters=list(chosen),
             reason=asked.reason)
    report.by = report.by or asked.by
    with Locks(chosen, app=asked.app, holder=asked.run_id, force=True,
               all_at_once=False) as locks:
        work = {name: _worker(fleet, driver, asked, locks=locks, clock=clock, report=report)
                for name, driver in chosen.items()}
        results = _each(work, deadline=deadline(fleet.policy))
    for name, ok in results.items():
        if ok is None:  # still at work when its deadline passed
            report.update(name, state=rollout.State.ROLLBACK_FAILED.value, detail=(
                f"not finished within {deadline(fleet.policy):g}s; "
                f"{_finish_with(fleet, asked, report, name)}"))
    code = EXIT_OK if all(results.values()) else EXIT_NEEDS_HUMAN
    report.finish(outcome="rolled-back" if code == EXIT_OK else "needs-human", exit_code=code,
                  message=_message(report, results))
    return code


def _message(report: RunReport, results: Mapping[str, bool | None]) -> str | None:
    """What a human must look at: failed clusters (with the command for those not reached),
    and clusters rolled back without their own checks to prove it."""
    failed = [e.cluster for e in report.clusters.values() if e.state == "rollback-failed"]
    unproven = [f"{e.cluster}: {e.detail}" for e in report.clusters.values()
                if e.state != "rollback-failed" and results.get(e.cluster) is False]
    parts = [f"rollback failed on {', '.join(failed)}"] if failed else []
    return "; ".join(parts + left_behind(report) + unproven) or None


def _worker(fleet: Fleet, driver: Driver, asked: Request, *, locks: Locks, clock: Clock,
            report: RunReport) -> Callable[[threading.Event], bool]:
    """One cluster's whole rollback: reach it, lock it, roll it back. A worker whose deadline
    passed (`late` set) writes nothing more than what it was writing then."""
    name = driver.cluster.name

    def work(late: threading.Event) -> bool:
        try:
            driver.connect(confirm=False)  # taking the lock is the first request
            locks.take(name)
        except (DriverError, LockHeld) as error:
            report.update(name, state=rollout.State.ROLLBACK_FAILED.value, detail=(
                f"not reached: {error}; {_finish_with(fleet, asked, report, name)}"))
            return False
        if late.is_set():
            return False
        try:
            return _one(driver, asked, fleet=fleet, clock=clock, report=report)
        except WavegateError as error:  # Preempted: another rollback took it over
            report.update(name, state=rollout.State.ROLLBACK_FAILED.value, detail=str(error))
            return False
    return work


def _each(work: Mapping[str, Callable[[threading.Event], bool]], *,
          deadline: float) -> dict[str, bool | None]:
    """Each cluster's work on a thread of its own (at most MAX_WORKERS at once), waited for
    until `deadline` seconds from now; None where it had not ended by then. The threads are
    daemons: a worker stuck on a hung server cannot keep the command from exiting."""
    done: queue.Queue[tuple[str, bool]] = queue.Queue()
    slots = threading.BoundedSemaphore(MAX_WORKERS)
    late = threading.Event()

    def start(name: str, job: Callable[[threading.Event], bool]) -> None:
        with slots:
            ok = False
            try:
                ok = job(late)
            except Exception as error:  # a bug must not hide the cluster's outcome
                log.error("rollback.bug", cluster=name, error=f"{type(error).__name__}: {error}")
                log.debug("rollback.bug.traceback", cluster=name, exc_info=error)
            finally:
                done.put((name, ok))

    for name, job in work.items():
        threading.Thread(target=start, args=(name, job), daemon=True,
                         name=f"rollback-{name}").start()
    results: dict[str, bool | None] = dict.fromkeys(work)
    until = time.monotonic() + deadline
    for _ in work:
        try:
            name, ok = done.get(timeout=max(until - time.monotonic(), 0))
        except queue.Empty:
            late.set()
            break
        results[name] = ok
    return results


def _one(driver: Driver, asked: Request, *, fleet: Fleet, clock: Clock,
         report: RunReport) -> bool:
    name, app, to_version = driver.cluster.name, asked.app, asked.to_version
    try:
        records = driver.records(app, with_releases=True)  # one request, not two
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
        driver, app=app, records=records, replacing=current, target=target,
        run_id=asked.run_id, by=asked.by, reason=f"emergency rollback: {asked.reason}",
        policy=fleet.policy, clock=clock, fallback=asked.folder,
        on_state=lambda state: report.update(name, state=state.value))
    detail = result.detail
    if not result.ok and not result.checks:
        # Stopped before any check judged the release: the cluster failed, not the release,
        # and the same rollback finishes the job once the cluster answers again.
        detail += f"; {_finish_with(fleet, asked, report, name)}"
    report.update(name, detail=detail, checks=result.checks, rollback_revision=result.revision)
    return result.ok and not result.unverified
