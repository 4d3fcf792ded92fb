"""`wavegate deploy`: prepare every cluster's release and checks, take the locks, run.

Everything that can be wrong with the input is found in `prepare`, before any cluster is
contacted: templates, checks, tokens. Then the drivers connect, the locks are taken (all or
none), and the `Runner` rolls the waves out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from wavegate import drivers
from wavegate.clock import Clock
from wavegate.config import checks, credentials, windows
from wavegate.config.app import CHECKS_FILE, App
from wavegate.config.fleet import Fleet
from wavegate.config.fleet import load as load_fleet
from wavegate.decide import rebuild
from wavegate.decide.ledger import Status
from wavegate.decide.rollout import Ending
from wavegate.drivers.local import secret_objects
from wavegate.engine import notify
from wavegate.engine.locks import Locks
from wavegate.engine.notify import Notifier
from wavegate.engine.runner import EXIT_CODES, Options, Runner, Target
from wavegate.engine.session import connect, stop_on_signals
from wavegate.errors import EXIT_LOCKED, InputError, LockHeld
from wavegate.outputs import journal
from wavegate.outputs.report import RunReport


@dataclass(frozen=True)
class Prepared:
    """A release rendered and judged ready for each cluster; nothing contacted yet."""

    targets: Mapping[str, Target]
    webhooks: tuple[str, ...] = ()


def prepare(fleet: Fleet, app: App, version: str, overrides: Mapping[str, str]) -> Prepared:
    if fleet.local is not None and any(c.driver == "local" for c in fleet.clusters):
        secret_objects(fleet.local, "check", fleet.path)  # every variable it needs is set
    targets = {}
    for cluster in fleet.clusters:
        release = app.render(cluster, version, overrides)
        suite = checks.load(release.checks, app.path / CHECKS_FILE)
        targets[cluster.name] = Target(driver=drivers.for_cluster(fleet, cluster),
                                       release=release, suite=suite,
                                       tokens=credentials.resolve(suite))
    return Prepared(targets, tuple(notify.resolve_urls(fleet)))


def new_report(fleet: Fleet, app: App, version: str, run_id: str) -> RunReport:
    report = RunReport(run_id=run_id, app=app.name, version=version, command="deploy",
                       fleet=fleet.name)
    for wave in fleet.waves:
        for name in wave.clusters:
            report.add_cluster(name, wave.name, to_version=version)
    return report


def check_windows(fleet: Fleet, *, ignore_reason: str | None, at: datetime) -> None:
    """A deploy does not start outside its windows, unless told why it must (exit 2)."""
    allow, freeze = fleet.policy.windows.allow, fleet.policy.windows.freeze
    if ignore_reason is not None or windows.allows(allow, freeze, at):
        return
    opening = windows.next_opening(allow, freeze, at)
    when = opening.isoformat(timespec="minutes") if opening else "not within 60 days"
    raise InputError(f"outside the deploy windows (next allowed: {when}); to deploy anyway "
                     "use --ignore-windows --reason TEXT", file=fleet.path,
                     field="policy.windows")


def run(fleet: Fleet, prepared: Prepared, *, run_id: str, by: str, clock: Clock,
        report: RunReport, options: Options | None = None) -> int:
    """The exit code of the run; the report holds the story."""
    targets = prepared.targets
    report.by = report.by or by
    live = connect({name: target.driver for name, target in targets.items()})
    notifier = Notifier(list(prepared.webhooks), run_id=run_id, app=report.app,
                        version=report.version)
    runner = Runner(fleet=fleet, targets=targets, run_id=run_id, by=by, clock=clock,
                    report=report, notifier=notifier, options=options)
    app = next(iter(targets.values())).release.app
    try:
        with Locks(live, app=app, holder=run_id,
                   on_lost=lambda error: runner.stop(Ending.PREEMPTED)) as locks, \
                stop_on_signals(lambda: runner.stop(Ending.INTERRUPTED),
                                abort=lambda: runner.stop(Ending.ABORTED)):
            ending = runner.run()
            # A paused run keeps its locks: only its promote, resume, abort, or an emergency
            # rollback may take them, never another plain deploy.
            locks.keep = ending is Ending.PAUSED
    except LockHeld as error:
        report.finish(outcome="locked", exit_code=EXIT_LOCKED, message=str(error))
        raise
    finally:
        notifier.close()
    code = EXIT_CODES[ending]
    message = _summary(report, ending)
    if ending is Ending.PAUSED:
        message = _paused(report, runner.paused_at, fleet)
        if report.inputs is not None:
            report.inputs["paused_at"] = runner.paused_at
    report.finish(outcome=ending.value, exit_code=code, message=message)
    return code


def _paused(report: RunReport, wave: str | None, fleet: Fleet) -> str:
    why = "approval gate" if wave in fleet.policy.approval else "outside the deploy windows"
    return (f"paused before wave {wave} ({why}); continue with `wavegate promote "
            f"{report.run_id}`, stop with `wavegate abort {report.run_id}`")


def _summary(report: RunReport, ending: Ending) -> str:
    if ending is Ending.SUCCEEDED:
        return f"{report.app} {report.version} verified on every cluster"
    failed = [e for e in report.clusters.values() if e.state in ("rolled-back",
                                                                 "rollback-failed", "failed")]
    return "; ".join(f"{e.cluster}: {e.detail}" for e in failed if e.detail) or ending.value



def start_journal(report: RunReport, inputs: journal.Inputs) -> None:
    """Keep the journal current as the run goes, so even a SIGKILL leaves it behind."""
    report.inputs = journal.as_dict(inputs)
    report.listen(lambda changed: changed.write(journal.path(changed.run_id)))
    report.write(journal.path(report.run_id))


def inputs_from_ledgers(run_id: str | None, fleet_file: Path,
                        app: App) -> tuple[str, journal.Inputs]:
    """A run's inputs when no journal is at hand (a new CI runner): the ledgers say which run
    is unfinished and at which version; template overrides, if it had any, are not known."""
    fleet = load_fleet(fleet_file)
    drivers_by_name = {c.name: drivers.for_cluster(fleet, c) for c in fleet.clusters}
    records = [r for d in connect(drivers_by_name).values() for r in d.records(app.name)]
    unfinished = [r for r in records if r.status in (Status.APPLYING, Status.INTERRUPTED)]
    mine = [r for r in records if r.run_id == run_id] if run_id else unfinished
    if not mine:
        raise InputError(f"no unfinished run of {app.name} in the ledgers of {fleet.name}"
                         if run_id is None else f"run {run_id} is in no ledger of {fleet.name}")
    newest = max(mine, key=lambda record: record.started_at)
    return newest.run_id, journal.Inputs(
        fleet=str(fleet_file.resolve()), app=str(app.path.resolve()), version=newest.version)


def resume(run_id: str, *, by: str, clock: Clock, promote: bool = False,
           abort: bool = False, known: journal.Inputs | None = None) -> tuple[RunReport, int]:
    """Pick up run `run_id` where its ledgers say it stands; its report and exit code."""
    data, inputs = ({"outcome": "interrupted"}, known) if known else journal.read(run_id)
    if promote and data.get("outcome") != "paused":
        raise InputError(f"run {run_id} is not paused at a gate (it is "
                         f"{data.get('outcome') or 'running'}); use `wavegate resume`")
    fleet = load_fleet(Path(inputs.fleet))
    app = App.from_folder(Path(inputs.app))
    prepared = prepare(fleet, app, inputs.version, inputs.overrides)
    live = connect({name: target.driver for name, target in prepared.targets.items()})
    records = {name: driver.records(app.name) for name, driver in live.items()}
    seen, revisions = rebuild.observed_from_ledgers(fleet.waves, records, run_id)
    approved = set(inputs.approved) | ({inputs.paused_at} if promote and inputs.paused_at
                                       else set())
    if inputs.auto_approve:
        approved |= {wave.name for wave in fleet.waves}
    report = new_report(fleet, app, inputs.version, run_id)
    for name, status in seen.clusters.items():
        report.update(name, state=status.state.value, detail=status.reason)
    start_journal(report, replace(inputs, approved=tuple(sorted(approved)), pid=os.getpid(),
                                  paused_at=None))
    options = Options(approved=frozenset(approved), ignore_windows=inputs.ignore_windows,
                      resume_from=replace(seen, stop=Ending.ABORTED) if abort else seen,
                      records=revisions)
    return report, run(fleet, prepared, run_id=run_id, by=by, clock=clock, report=report,
                       options=options)
