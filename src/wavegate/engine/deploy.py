"""`wavegate deploy`: prepare every cluster's release and checks, take the locks, run.

Everything that can be wrong with the input is found in `start` (through `prepare`), before any
cluster is contacted: templates, checks, tokens (and none sent in clear
text), windows. `launch` is the one way a deploy run
begins, new or resumed (`engine.resume` builds the `Start` of a resumed one): the drivers
connect once, the journal is kept, the locks are taken (all or none), the `Runner` rolls the
waves out, and the report comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from wavegate import drivers
from wavegate.clock import Clock
from wavegate.config import endpoints, local_secrets, windows
from wavegate.config.app import (
    CHECKS_FILE,
    App,
    env_values,
    load_checks,
    merged_values,
    parse_env_overrides,
    parse_overrides,
)
from wavegate.config.app import resolve as resolve_app
from wavegate.config.fleet import Fleet, resolve_path
from wavegate.config.fleet import load as load_fleet
from wavegate.decide import rebuild
from wavegate.decide.ledger import Record
from wavegate.decide.rollout import Ending
from wavegate.drivers.base import Driver
from wavegate.engine import credentials, notify, renderers
from wavegate.engine.locks import DEFAULT_TTL, Locks
from wavegate.engine.notify import Notifier
from wavegate.engine.runner import EXIT_CODES, Options, Runner, Target
from wavegate.engine.session import (
    NO_OUTPUTS,
    Outputs,
    Watch,
    connect,
    new_holder,
    new_run_id,
    reported,
    stop_on_signals,
    unwatched,
)
from wavegate.errors import EXIT_BAD_INPUT, EXIT_LOCKED, InputError, LockHeld, StaleLock, run_of
from wavegate.outputs import journal
from wavegate.outputs.report import RunReport

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A release rendered and judged ready for each cluster; contacted only if `connected`."""

    targets: Mapping[str, Target]
    webhooks: tuple[str, ...] = ()
    connected: bool = False  # the drivers answered already (a resume that read the ledgers)
    folder: App | None = None  # the app folder: its checks stand in for unusable stored ones


def prepare(fleet: Fleet, app: App, version: str, overrides: Mapping[str, str], *,
            live: Mapping[str, Driver] | None = None) -> Prepared:
    """Every cluster's release, checks and tokens; `live` are drivers already connected."""
    if fleet.local is not None and any(c.driver == "local" for c in fleet.clusters):
        local_secrets.objects(fleet.local, "check", fleet_file=fleet.path)  # all variables set
    targets = {}
    tokens: dict[str, Mapping[str, str | None]] = {}  # per distinct checks text: read once
    rendering = renderers.Renderers()  # kustomize or a render command: once per distinct input
    for cluster in fleet.clusters:
        release = rendering.release(app, cluster, version, overrides)
        suite = load_checks(release.checks, app.path / CHECKS_FILE)
        endpoints.refuse_tokens_in_clear(suite, cluster)
        if release.checks not in tokens:
            tokens[release.checks] = credentials.resolve(suite)
        driver = live[cluster.name] if live else drivers.for_cluster(fleet, cluster)
        targets[cluster.name] = Target(driver=driver, release=release, suite=suite,
                                       tokens=tokens[release.checks])
    return Prepared(targets, tuple(notify.resolve_urls(fleet)), connected=live is not None,
                    folder=app)


@dataclass(frozen=True)
class Start:
    """A deploy run about to begin, or to continue where its ledgers say it stands."""

    fleet: Fleet
    app: App
    version: str
    prepared: Prepared
    run_id: str
    overrides: Mapping[str, str] = field(default_factory=dict)  # --set: kept in the journal
    set_env: Mapping[str, str] = field(default_factory=dict)  # --set-env: key -> variable name
    auto_approve: bool = False
    ignore_windows: str | None = None  # the reason given, when windows are ignored
    approved: frozenset[str] = frozenset()  # gates opened by `promote`
    resuming: bool = False
    abort: bool = False  # resume only to apply the failure policy (`wavegate abort`)
    force_conflicts: bool = False  # take fields other field managers own
    records: Mapping[str, Sequence[Record]] | None = None  # ledgers read already, by cluster
    baselines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # journaled ones
    # Resuming: the run's earlier process is known to be gone (its journal's pid is not alive
    # here), so its leases are taken over even before they expire.
    predecessor_gone: bool = False


def start(app_name: str, version: str, *, fleet_file: Path | None, overrides: tuple[str, ...],
          auto_approve: bool, ignore_windows: bool, reason: str | None,
          outputs: Outputs, force_conflicts: bool = False, set_env: tuple[str, ...] = ()
          ) -> Start:
    """A new deploy, checked before any cluster is contacted. Bad input raises InputError
    (exit 2) and still leaves a `--report` that says so.

    `--set-env` values are read (and registered with `redact`) here, used only to render the
    releases, and never kept: the `Start` holds the variables' names, not their values."""
    run_id = new_run_id()
    try:
        if ignore_windows and not reason:
            raise InputError("--ignore-windows needs --reason TEXT (it goes in the ledger)")
        fleet, app = load_fleet(resolve_path(fleet_file)), resolve_app(app_name)
        values, variables = parse_overrides(overrides), parse_env_overrides(set_env)
        secrets = env_values(variables)
        prepared = prepare(fleet, app, version, merged_values(values, secrets))
        ignored = reason if ignore_windows else None
        check_windows(fleet, ignore_reason=ignored, at=datetime.now(UTC))
    except InputError as error:
        _bad_input_report(outputs, run_id, app_name, version, error)
        raise
    return Start(fleet=fleet, app=app, version=version, prepared=prepared, run_id=run_id,
                 overrides=values, set_env=variables, auto_approve=auto_approve,
                 ignore_windows=ignored, force_conflicts=force_conflicts)


def launch(begin: Start, *, by: str, clock: Clock, outputs: Outputs = NO_OUTPUTS,
           watch: Watch = unwatched) -> RunReport:
    """Run a deploy, new or resumed, to its end; the report, saved wherever asked."""
    report = new_report(begin.fleet, begin.app, begin.version, begin.run_id)
    journal.keep(report, journal.Inputs.of(
        begin.fleet, begin.app, begin.version, overrides=begin.overrides,
        auto_approve=begin.auto_approve, ignore_windows=begin.ignore_windows,
        approved=begin.approved, set_env=begin.set_env, force_conflicts=begin.force_conflicts))
    return reported(report, lambda: _launched(begin, report, by=by, clock=clock),
                    outputs=outputs, watch=watch)


def _launched(begin: Start, report: RunReport, *, by: str, clock: Clock) -> int:
    prepared = begin.prepared
    if not prepared.connected:
        connect({name: target.driver for name, target in prepared.targets.items()})
        prepared = replace(prepared, connected=True)
    return run(begin.fleet, prepared, run_id=begin.run_id, by=by, clock=clock, report=report,
               options=_options(begin, prepared, report),
               take_over=_take_over if begin.resuming else None,
               predecessor_gone=begin.predecessor_gone)


def _options(begin: Start, prepared: Prepared, report: RunReport) -> Options:
    approved = begin.approved | (frozenset(w.name for w in begin.fleet.waves)
                                 if begin.auto_approve else frozenset())
    if not begin.resuming:
        return Options(approved=approved, ignore_windows=begin.ignore_windows,
                       force_conflicts=begin.force_conflicts)
    records = begin.records if begin.records is not None else {
        name: target.driver.records(begin.app.name) for name, target in prepared.targets.items()}
    seen, revisions = rebuild.observed_from_ledgers(begin.fleet.waves, records, begin.run_id)
    for name, status in seen.clusters.items():
        report.update(name, state=status.state.value, detail=status.reason)
    for name, baseline in begin.baselines.items():
        report.keep_baseline(name, dict(baseline))  # this journal must keep them too
    return Options(approved=approved, ignore_windows=begin.ignore_windows,
                   resume_from=replace(seen, stop=Ending.ABORTED) if begin.abort else seen,
                   records=revisions, force_conflicts=begin.force_conflicts,
                   baselines=begin.baselines)


def _bad_input_report(outputs: Outputs, run_id: str, app: str, version: str,
                      error: InputError) -> None:
    if outputs.report is None:
        return
    report = RunReport(run_id=run_id, app=Path(app).name, version=version, command="deploy")
    report.finish(outcome="bad-input", exit_code=error.exit_code, message=str(error))
    report.write(outputs.report)


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
        report: RunReport, options: Options | None = None,
        take_over: TakeOver | None = None, predecessor_gone: bool = False) -> int:
    """The exit code of the run; the report holds the story. A resumed run passes
    `take_over`, which hands it the leases its own earlier process left behind."""
    targets = prepared.targets
    report.by = report.by or by
    live = {name: target.driver for name, target in targets.items()}
    if not prepared.connected:
        connect(live)
    notifier = Notifier(list(prepared.webhooks), run_id=run_id, app=report.app,
                        version=report.version)
    holder = new_holder(run_id)
    runner = Runner(fleet=fleet, targets=targets, run_id=run_id, by=by, clock=clock,
                    report=report, notifier=notifier, options=options, holder=holder,
                    fallback=prepared.folder)
    app = next(iter(targets.values())).release.app
    try:
        if take_over is not None:
            take_over(live, app=app, holder=holder, gone=predecessor_gone)
        with Locks(live, app=app, holder=holder,
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
    if runner.bad_input and ending is Ending.ROLLED_BACK:
        code = EXIT_BAD_INPUT  # refused before its objects were written: the input must change
    message = _summary(report, ending)
    if ending is Ending.PAUSED:
        message = _paused(report, runner.paused_at, fleet)
        if report.inputs is not None:
            report.inputs["paused_at"] = runner.paused_at
    report.finish(outcome=ending.value, exit_code=code, message=message)
    return code


TakeOver = Callable[..., None]
TAKE_OVER_SLACK = 5.0  # past a lease term, for a renewal that was on its way
TAKE_OVER_POLL = 1.0


def _take_over(live: Mapping[str, Driver], *, app: str, holder: str, gone: bool) -> None:
    """Take the leases an earlier process of this same run still holds: at once when that
    process is known to be gone (its journal's pid is not alive here); otherwise (no journal
    here: a new CI runner) once its lease runs out, waiting one lease term at most. A lease
    still renewed after that belongs to a live process, and LockHeld (exit 4) names it."""
    for driver in live.values():
        held = driver.read_lock(app)
        if held is None or held.holder == holder or run_of(held.holder) != run_of(holder):
            continue
        deadline = time.monotonic() + DEFAULT_TTL + TAKE_OVER_SLACK
        while True:
            try:
                driver.acquire_lock(app, holder=holder, ttl=DEFAULT_TTL, force=gone)
                break
            except StaleLock:
                driver.acquire_lock(app, holder=holder, ttl=DEFAULT_TTL, force=True)
                break
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                log.info("resume.waiting_for_lease", cluster=driver.cluster.name,
                         holder=held.holder, detail="no journal here says whether that "
                         "process lives: waiting for its lease to run out")
                time.sleep(TAKE_OVER_POLL)


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
