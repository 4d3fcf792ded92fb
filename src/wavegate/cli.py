"""The command line: thin click commands over the modules named after each concept.

Every command ends the same way: `WavegateError` becomes one line on stderr and its exit code;
anything else is a bug, reported in one line (the traceback only with -v).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from wavegate.clock import SystemClock
from wavegate.commands import report as reports
from wavegate.config import app as apps
from wavegate.config import durations
from wavegate.config import fleet as fleets
from wavegate.engine import deploy as deploys
from wavegate.engine import live_checks as livecheck
from wavegate.engine import local_fleet as fleetctl
from wavegate.engine import plan as plans
from wavegate.engine import rollback as rollbacks
from wavegate.engine import session as runs
from wavegate.engine import status as statuses
from wavegate.engine.runner import Options
from wavegate.errors import EXIT_NEEDS_HUMAN, EXIT_ROLLED_BACK, InputError, WavegateError
from wavegate.outputs import journal, logs

F = TypeVar("F", bound=Callable[..., Any])
log = structlog.get_logger(__name__)


def _fail_cleanly(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = command(*args, **kwargs)
        except WavegateError as error:
            click.echo(f"wavegate: {error}", err=True)
            sys.exit(error.exit_code)
        except Exception as error:
            if click.get_current_context().find_root().params.get("verbose"):
                raise
            click.echo(f"wavegate: internal error ({type(error).__name__}: {error}); "
                       "rerun with -v for details", err=True)
            sys.exit(EXIT_NEEDS_HUMAN)
        sys.exit(code or 0)
    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-format", type=click.Choice(["console", "json"]), default=None,
              help="Log lines as console text or JSON (default: JSON unless on a terminal).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs, and tracebacks for bugs.")
@click.version_option(package_name="wavegate")
@click.pass_context
def main(context: click.Context, log_format: str | None, verbose: bool) -> None:
    """Roll releases out in waves, prove authorization after every cluster, roll back alone."""
    interactive = sys.stdout.isatty()
    logs.configure(fmt=log_format or ("console" if interactive else "json"), verbose=verbose)
    context.obj = {"interactive": interactive and log_format != "json"}


fleet_option = click.option("-f", "--fleet", "fleet_path", type=click.Path(path_type=Path),
                            help="Fleet file (default: $WAVEGATE_FLEET, then clusters/local.yaml).")
output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]),
                             default="table", show_default=True)
html_option = click.option("--report-html", "html_path", type=click.Path(path_type=Path),
                           help="Write the run as one self-contained HTML page here.")


def _load_fleet(path: Path | None) -> fleets.Fleet:
    return fleets.load(fleets.resolve_path(path))


@main.command()
@click.argument("app_name", metavar="APP")
@click.option("--version", "version", required=True, help="The version to roll out.")
@fleet_option
@click.option("--set", "overrides", multiple=True, metavar="K=V", help="Template value.")
@output_option
@_fail_cleanly
def plan(app_name: str, version: str, fleet_path: Path | None, overrides: tuple[str, ...],
         output: str) -> int:
    """Waves, clusters, what would change, and the earliest finish."""
    fleet, app = _load_fleet(fleet_path), apps.resolve(app_name)
    prepared = deploys.prepare(fleet, app, version, apps.parse_overrides(overrides))
    releases = {name: target.release for name, target in prepared.targets.items()}
    drivers = {name: target.driver for name, target in prepared.targets.items()}
    result = plans.plan(fleet, releases, drivers)
    click.echo(json.dumps(result, indent=2) if output == "json" else plans.render_text(result))
    return 0


@main.command()
@click.argument("app_name", metavar="APP")
@click.option("--version", "version", required=True, help="The version to roll out.")
@fleet_option
@click.option("--set", "overrides", multiple=True, metavar="K=V", help="Template value.")
@click.option("--auto-approve", is_flag=True, help="Do not wait at approval gates.")
@click.option("--dry-run", is_flag=True, help="Validate and plan; touch nothing.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="Write the run report (JSON) here, whatever the outcome.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path),
              help="Write a JUnit XML file (one testcase per cluster and check).")
@html_option
@click.option("--ignore-windows", is_flag=True, help="Deploy outside the deploy windows.")
@click.option("--reason", help="Why the windows are ignored (required with --ignore-windows).")
@click.pass_context
@_fail_cleanly
def deploy(context: click.Context, app_name: str, version: str, fleet_path: Path | None,
           overrides: tuple[str, ...], auto_approve: bool, dry_run: bool,
           report_path: Path | None, junit_path: Path | None, html_path: Path | None,
           ignore_windows: bool, reason: str | None) -> int:
    """Roll APP out at VERSION, wave by wave, checking after every cluster."""
    run_id = runs.new_run_id()
    try:
        if ignore_windows and not reason:
            raise InputError("--ignore-windows needs --reason TEXT (it goes in the ledger)")
        fleet, app = _load_fleet(fleet_path), apps.resolve(app_name)
        values = apps.parse_overrides(overrides)
        prepared = deploys.prepare(fleet, app, version, values)
        deploys.check_windows(fleet, ignore_reason=reason if ignore_windows else None,
                              at=datetime.now(UTC))
    except InputError as error:
        _input_error_report(report_path, run_id, app_name, version, error)
        raise
    if dry_run:
        click.echo(f"dry run: {app.name} {version} is valid for {len(fleet.clusters)} clusters "
                   f"in {len(fleet.waves)} waves; nothing was touched")
        return 0
    report = deploys.new_report(fleet, app, version, run_id)
    approved = frozenset(w.name for w in fleet.waves) if auto_approve else frozenset()
    ignored = reason if ignore_windows else None
    deploys.start_journal(report, journal.Inputs(
        fleet=str(fleet.path.resolve()), app=str(app.path.resolve()), version=version,
        overrides=values, auto_approve=auto_approve, ignore_windows=ignored, pid=os.getpid()))
    options = Options(approved=approved, ignore_windows=ignored)
    return _run_with_report(context, report, report_path, lambda: deploys.run(
        fleet, prepared, run_id=run_id, by=runs.actor(), clock=SystemClock(), report=report,
        options=options), junit_path=junit_path, html_path=html_path)


@main.command()
@click.argument("run_id", required=False)
@click.option("--app", "app_name", help="With no RUN_ID: the newest unfinished run of APP.")
@fleet_option
@click.option("--report", "report_path", type=click.Path(path_type=Path))
@click.pass_context
@_fail_cleanly
def resume(context: click.Context, run_id: str | None, app_name: str | None,
           fleet_path: Path | None, report_path: Path | None) -> int:
    """Continue, or unwind, an interrupted run (default: the newest unfinished one).

    With no local journal (a new CI runner), give --app and -f: the ledgers say the rest."""
    if fleet_path is not None and app_name is not None and not (
            run_id and journal.path(run_id).exists()):
        found, inputs = deploys.inputs_from_ledgers(run_id, fleet_path, apps.resolve(app_name))
        return _resume(context, found, report_path, known=inputs)
    return _resume(context, run_id or journal.newest_unfinished(app_name), report_path)


@main.command()
@click.argument("run_id")
@click.pass_context
@_fail_cleanly
def promote(context: click.Context, run_id: str) -> int:
    """Open the approval gate a paused run waits at, and continue it."""
    return _resume(context, run_id, None, promote=True)


@main.command()
@click.argument("run_id")
@click.pass_context
@_fail_cleanly
def abort(context: click.Context, run_id: str) -> int:
    """Stop a run (running or paused) and apply its failure policy."""
    data, inputs = journal.read(run_id)
    if data.get("outcome") not in journal.UNFINISHED:
        raise InputError(f"run {run_id} already finished ({data.get('outcome')})")
    if journal.alive(inputs.pid):
        os.kill(inputs.pid, signal.SIGUSR1)
        click.echo(f"asked run {run_id} (pid {inputs.pid}) to abort; it rolls back and ends")
        return 0
    return _resume(context, run_id, None, abort=True)


def _resume(context: click.Context, run_id: str, report_path: Path | None, *,
            promote: bool = False, abort: bool = False,
            known: journal.Inputs | None = None) -> int:
    holder: dict[str, Any] = {}

    def action() -> int:
        report, code = deploys.resume(run_id, by=runs.actor(), clock=SystemClock(),
                                      promote=promote, abort=abort, known=known)
        holder["report"] = report
        return code

    from wavegate.outputs.report import RunReport

    placeholder = RunReport(run_id=run_id, app="", version=None, command="resume")
    return _run_with_report(context, placeholder, report_path, action, live=False,
                            final=lambda: holder.get("report", placeholder))


@main.command()
@click.argument("app_name", metavar="APP")
@click.option("--all", "all_clusters", is_flag=True, help="Every cluster of the fleet.")
@click.option("-c", "--cluster", "clusters", multiple=True, help="A cluster (repeatable).")
@click.option("--to", "to_version", help="The version to go back to.")
@click.option("--reason", default="emergency rollback", help="Why, for the ledger.")
@fleet_option
@click.option("--report", "report_path", type=click.Path(path_type=Path))
@html_option
@click.pass_context
@_fail_cleanly
def rollback(context: click.Context, app_name: str, all_clusters: bool,
             clusters: tuple[str, ...], to_version: str | None, reason: str,
             fleet_path: Path | None, report_path: Path | None, html_path: Path | None) -> int:
    """Emergency: every chosen cluster back to its last verified release, in parallel."""
    if all_clusters == bool(clusters):
        raise InputError("give either --all or one or more -c CLUSTER")
    fleet = _load_fleet(fleet_path)
    app = Path(app_name).name if Path(app_name).is_dir() else app_name
    names = runs.select_clusters(fleet, clusters)
    run_id = runs.new_run_id()
    report = rollbacks.new_report(app, names, fleet, run_id, to_version)
    return _run_with_report(context, report, report_path, lambda: rollbacks.run(
        fleet, runs.connect(runs.drivers_for(fleet, names)), app=app, to_version=to_version,
        reason=reason, run_id=run_id, by=runs.actor(), clock=SystemClock(), report=report),
        html_path=html_path)


@main.command()
@click.argument("app_name", metavar="APP", default="library-app")
@click.argument("html_path", metavar="[FILE]", required=False, type=click.Path(path_type=Path))
@fleet_option
@click.option("-o", "--output", type=click.Choice(["table", "json", "html"]), default="table",
              show_default=True, help="html: write the fleet's page to FILE.")
@_fail_cleanly
def status(app_name: str, html_path: Path | None, fleet_path: Path | None, output: str) -> int:
    """Per cluster: live version, last-known-good, lock (-o html FILE: a page, with history)."""
    fleet = _load_fleet(fleet_path)
    app = Path(app_name).name
    if output == "html" or html_path is not None:
        if output != "html":
            raise InputError(f"unexpected argument {html_path} (a FILE goes with -o html)")
        click.echo(reports.status_page(app, _drivers(fleet), fleet=fleet, path=html_path))
        return 0
    result = statuses.status(app, _drivers(fleet))
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return 0
    click.echo(f"{'cluster':<10} {'live':<14} {'last-known-good':<18} lock")
    for row in result["clusters"]:
        live = f"{row['live_version']} (r{row['live_revision']})" if row["live_version"] else "-"
        good = row["last_known_good"]
        good_text = f"{good['version']} (r{good['revision']})" if good else "-"
        lock = row["lock"]["holder"] if row["lock"] else "-"
        click.echo(f"{row['cluster']:<10} {live:<14} {good_text:<18} {lock}"
                   + (f"  ({row['error']})" if "error" in row else ""))
    return 0


@main.command()
@click.argument("app_name", metavar="APP", default="library-app")
@click.option("-c", "--cluster", "clusters", multiple=True)
@fleet_option
@output_option
@_fail_cleanly
def history(app_name: str, clusters: tuple[str, ...], fleet_path: Path | None,
            output: str) -> int:
    """The ledger, newest first."""
    fleet = _load_fleet(fleet_path)
    names = runs.select_clusters(fleet, clusters)
    result = statuses.history(Path(app_name).name, _drivers(fleet, names))
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return 0
    for row in result["records"]:
        checks = row["checks"]
        click.echo(f"{row['started_at']}  {row['cluster']:<8} r{row['revision']:<3} "
                   f"{row['version']:<10} {row['status']:<12} run {row['run_id']} by "
                   f"{row['by']}  checks {checks['passed']}/{checks['failed']}/"
                   f"{checks['errors']}" + (f"  {row['reason']}" if row["reason"] else ""))
    return 0


@main.command("report")
@click.argument("run_id")
@click.option("--html", "html_path", type=click.Path(path_type=Path), required=True,
              help="Write the run as one self-contained HTML page here.")
@_fail_cleanly
def report_command(run_id: str, html_path: Path) -> int:
    """A finished run's page, from its journal (or a file written with --report)."""
    click.echo(reports.from_run(run_id, html_path))
    return 0


def _drivers(fleet: fleets.Fleet, names: list[str] | None = None) -> dict[str, Any]:
    return runs.drivers_for(fleet, names or [c.name for c in fleet.clusters])


def _run_with_report(context: click.Context, report: Any, report_path: Path | None,
                     action: Callable[[], int], junit_path: Path | None = None, *,
                     live: bool = True, final: Callable[[], Any] | None = None,
                     html_path: Path | None = None) -> int:
    from wavegate.outputs.display import LiveTable

    interactive = context.obj["interactive"] and live
    if interactive:
        logs.quiet()
    try:
        if interactive:
            with LiveTable(report):
                code = action()
        else:
            code = action()
    except WavegateError as error:
        report = final() if final else report
        if report.exit_code is None:
            report.finish(outcome="error", exit_code=error.exit_code, message=str(error))
        runs.save(report, report_path, junit_path)
        reports.write_run(report, html_path)
        raise
    report = final() if final else report
    runs.save(report, report_path, junit_path)
    reports.write_run(report, html_path)
    click.echo(f"{report.outcome}: {report.message}" if report.message else report.outcome)
    return code


def _input_error_report(path: Path | None, run_id: str, app: str, version: str,
                        error: InputError) -> None:
    if path is None:
        return
    from wavegate.outputs.report import RunReport

    report = RunReport(run_id=run_id, app=Path(app).name, version=version, command="deploy")
    report.finish(outcome="bad-input", exit_code=error.exit_code, message=str(error))
    report.write(path)


@main.command()
@click.argument("app_name", metavar="APP")
@click.option("-c", "--cluster", "clusters", multiple=True, help="A cluster (repeatable).")
@click.option("--every", "every", help="Keep checking at this interval (e.g. 5m).")
@click.option("--rollback-on-fail", is_flag=True,
              help="On a failed check, roll the release back on every cluster.")
@fleet_option
@output_option
@html_option
@click.pass_context
@_fail_cleanly
def check(context: click.Context, app_name: str, clusters: tuple[str, ...], every: str | None,
          rollback_on_fail: bool, fleet_path: Path | None, output: str,
          html_path: Path | None) -> int:
    """Run the live release's checks: once, or continuously with --every."""
    fleet = _load_fleet(fleet_path)
    names = runs.select_clusters(fleet, clusters)
    interval = _interval(every)
    folder = _app_folder(app_name)
    app = folder.name if folder else Path(app_name).name
    live = runs.connect(runs.drivers_for(fleet, names))
    page = reports.CheckPage(html_path, app=app, fleet=fleet, names=names)
    while True:
        rows = livecheck.check_all(app, live, fleet.policy, folder)
        _print_checks(rows, output)
        page.record(rows)
        failed = [row for row in rows if row["outcome"] == "fail"]
        if failed and rollback_on_fail:
            return _rollback_after_check(context, fleet, app, failed, page)
        if interval is None:
            return page.finish(1 if any(row["outcome"] in ("fail", "error") for row in rows)
                               else 0)
        time.sleep(interval)


def _app_folder(app_name: str) -> apps.App | None:
    try:
        return apps.resolve(app_name)
    except InputError:
        return None  # no folder here: judge with the checks stored in the ledger


def _rollback_after_check(context: click.Context, fleet: fleets.Fleet, app: str,
                          failed: list[dict[str, Any]], page: reports.CheckPage) -> int:
    """The leak that sat on a cluster for three days, caught by the next check: roll back."""
    reason = "; ".join(f"{row['cluster']}: {row['detail']}" for row in failed)
    names = [cluster.name for cluster in fleet.clusters]
    run_id = runs.new_run_id()
    report = rollbacks.new_report(app, names, fleet, run_id, None)
    code = _run_with_report(context, report, None, lambda: rollbacks.run(
        fleet, runs.connect(runs.drivers_for(fleet, names)), app=app, to_version=None,
        reason=f"check failed: {reason}", run_id=run_id, by=runs.actor(),
        clock=SystemClock(), report=report))
    return page.rolled_back(report, EXIT_ROLLED_BACK if code == 0 else code)


def _interval(every: str | None) -> float | None:
    if every is None:
        return None
    try:
        return durations.parse(every)
    except ValueError as error:
        raise InputError(str(error), field="--every") from None


def _print_checks(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        click.echo(json.dumps({"clusters": rows}))
        return
    for row in rows:
        version = f" {row['version']} (r{row['revision']})" if "version" in row else ""
        detail = f"  {row['detail']}" if row.get("detail") else ""
        click.echo(f"{row['cluster']:<10}{version}  {row['outcome']}{detail}")


@main.group()
def fleet() -> None:
    """The embedded local fleet: up, down, status."""


kube_option = click.option("--kube", is_flag=True,
                           help="Real Kubernetes control planes (the kube sandbox) instead.")
dir_option = click.option("--dir", "sandbox_dir", type=click.Path(path_type=Path),
                          default=Path(".wavegate/kube"), show_default=True,
                          help="Where the kube sandbox keeps its state, kubeconfig, fleet.yaml.")


@fleet.command("up")
@fleet_option
@kube_option
@dir_option
@_fail_cleanly
def fleet_up(fleet_path: Path | None, kube: bool, sandbox_dir: Path) -> int:
    """Start the fleet's clusters in the background; print their endpoints."""
    if kube:
        from wavegate.sandbox import kubefleet

        endpoints = kubefleet.up(_load_fleet(fleet_path), sandbox_dir)
        for name, endpoint in endpoints.items():
            click.echo(f"{name:<10} {endpoint}")
        click.echo(f"kubeconfig: {sandbox_dir / 'kubeconfig'}\n"
                   f"deploy with: wavegate deploy APP --version V -f {sandbox_dir / 'fleet.yaml'}")
        return 0
    for row in fleetctl.up(_load_fleet(fleet_path)):
        click.echo(f"{row['cluster']:<10} {row['region']:<14} {row['endpoint']}")
    return 0


@fleet.command("down")
@fleet_option
@kube_option
@dir_option
@_fail_cleanly
def fleet_down(fleet_path: Path | None, kube: bool, sandbox_dir: Path) -> int:
    """Stop every process the fleet started."""
    if kube:
        from wavegate.sandbox import kubefleet

        kubefleet.down(sandbox_dir)
        click.echo(f"stopped the kube sandbox in {sandbox_dir}")
        return 0
    stopped = fleetctl.down(_load_fleet(fleet_path))
    click.echo(f"stopped {', '.join(stopped)}")
    return 0


@fleet.command("status")
@fleet_option
@output_option
@_fail_cleanly
def fleet_status(fleet_path: Path | None, output: str) -> int:
    """Which local clusters run, and where."""
    rows = fleetctl.status(_load_fleet(fleet_path))
    if output == "json":
        click.echo(json.dumps({"clusters": rows}, indent=2))
        return 0
    for row in rows:
        state = f"up    {row['endpoint']}" if row["running"] else "down"
        click.echo(f"{row['cluster']:<10} {row['region']:<14} {state}")
    return 0


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: eval "$(wavegate completion bash)"."""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None  # click ships all three
    click.echo(completer(main, {}, "wavegate", "_WAVEGATE_COMPLETE").source())


@main.command()
@click.option("--keep", is_flag=True, help="Leave the demo fleet running afterwards.")
@_fail_cleanly
def demo(keep: bool) -> int:
    """The incident, replayed and stopped: 2.0.0 leaks Spaces; the canary catches it."""
    from wavegate.commands import demo as demos
    logs.quiet()  # the story is the output; warnings and errors still show
    return demos.run(echo=click.echo, keep=keep)
