"""`wavegate deploy`: prepare every cluster's release and checks, take the locks, run.

Everything that can be wrong with the input is found in `prepare`, before any cluster is
contacted: templates, checks, tokens. Then the drivers connect, the locks are taken (all or
none), and the `Runner` rolls the waves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wavegate import checks, credentials, drivers, notify
from wavegate.app import CHECKS_FILE, App
from wavegate.clock import Clock
from wavegate.drivers.local import secret_objects
from wavegate.errors import EXIT_LOCKED, LockHeld
from wavegate.fleet import Fleet
from wavegate.locks import Locks
from wavegate.notify import Notifier
from wavegate.report import RunReport
from wavegate.rollout import Ending
from wavegate.runner import EXIT_CODES, Runner, Target
from wavegate.runs import connect, stop_on_signals


@dataclass(frozen=True)
class Prepared:
    """A release rendered and judged ready for each cluster; nothing contacted yet."""

    targets: Mapping[str, Target]
    webhooks: tuple[str, ...] = ()


def prepare(fleet: Fleet, app: App, version: str, overrides: Mapping[str, str]) -> Prepared:
    if fleet.local is not None and any(c.driver == "local" for c in fleet.clusters):
        secret_objects(fleet.local, "check")  # every variable the local fleet needs is set
    targets = {}
    for cluster in fleet.clusters:
        release = app.render(cluster, version, overrides)
        suite = checks.load(release.checks, app.path / CHECKS_FILE)
        targets[cluster.name] = Target(driver=drivers.for_cluster(fleet, cluster),
                                       release=release, suite=suite,
                                       tokens=credentials.resolve(suite))
    return Prepared(targets, tuple(notify.resolve_urls(fleet)))


def new_report(fleet: Fleet, app: App, version: str, run_id: str) -> RunReport:
    report = RunReport(run_id=run_id, app=app.name, version=version, command="deploy")
    for wave in fleet.waves:
        for name in wave.clusters:
            report.add_cluster(name, wave.name, to_version=version)
    return report


def run(fleet: Fleet, prepared: Prepared, *, run_id: str, by: str, clock: Clock,
        report: RunReport) -> int:
    """The exit code of the run; the report holds the story."""
    targets = prepared.targets
    live = connect({name: target.driver for name, target in targets.items()})
    notifier = Notifier(list(prepared.webhooks), run_id=run_id, app=report.app,
                        version=report.version)
    runner = Runner(fleet=fleet, targets=targets, run_id=run_id, by=by, clock=clock,
                    report=report, notifier=notifier)
    app = next(iter(targets.values())).release.app
    try:
        with Locks(live, app=app, holder=run_id,
                   on_lost=lambda error: runner.stop(Ending.PREEMPTED)), \
                stop_on_signals(lambda: runner.stop(Ending.INTERRUPTED)):
            ending = runner.run()
    except LockHeld as error:
        report.finish(outcome="locked", exit_code=EXIT_LOCKED, message=str(error))
        raise
    finally:
        notifier.close()
    code = EXIT_CODES[ending]
    report.finish(outcome=ending.value, exit_code=code, message=_summary(report, ending))
    return code


def _summary(report: RunReport, ending: Ending) -> str:
    if ending is Ending.SUCCEEDED:
        return f"{report.app} {report.version} verified on every cluster"
    failed = [e for e in report.clusters.values() if e.state in ("rolled-back",
                                                                 "rollback-failed", "failed")]
    return "; ".join(f"{e.cluster}: {e.detail}" for e in failed if e.detail) or ending.value

