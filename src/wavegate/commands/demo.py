"""`wavegate demo`: the incident in README.md, replayed, and this time stopped at the canary.

It runs on a private copy of the local fleet (its own state folder), so it neither reads nor
disturbs a fleet you brought up yourself, and it leaves no process running. The fleet and the
app are the ones that ship with wavegate, so it works from any folder and from a bare wheel.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console

from wavegate.clock import SystemClock
from wavegate.commands import report as pages
from wavegate.config import app as apps
from wavegate.config import bundled
from wavegate.config.fleet import Fleet
from wavegate.config.fleet import load as load_fleet
from wavegate.engine import deploy, status
from wavegate.engine import local_fleet as fleetctl
from wavegate.engine import session as runs
from wavegate.errors import EXIT_OK, EXIT_ROLLED_BACK, InputError
from wavegate.outputs import logs
from wavegate.outputs.display import table
from wavegate.outputs.report import RunReport

GOOD, BAD = "1.0.0", "2.0.0"
SEARCH_LEAK = "2.1.0"  # lists and reads filtered, search not: no check was written for search
DRIFT_CHECK = "no principal gains access"  # the access_drift check of manifests/library-app
TOKEN_VARIABLES = ("LIBRARY_TOKEN_ALICE", "LIBRARY_TOKEN_BOB", "LIBRARY_TOKEN_CAROL")

Echo = Callable[[str], None]


def run(*, echo: Echo, keep: bool = False, fleet_file: Path | None = None,
        app_folder: Path | None = None) -> int:
    """0 when the safety net held: 2.0.0 stopped on prod-0, rolled back, nowhere else."""
    fleet_file = fleet_file or bundled.local_fleet()
    app_folder = app_folder or bundled.app_folder("library-app")
    if not fleet_file.is_file() or not app_folder.is_dir():
        raise InputError(f"the demo needs {fleet_file} and {app_folder}; reinstall wavegate")
    _ensure_tokens()
    with tempfile.TemporaryDirectory(prefix="wavegate-demo-") as state:
        fleet = _private_fleet(load_fleet(fleet_file), Path(state))
        try:
            return _story(fleet, apps.App.from_folder(app_folder), echo)
        finally:
            if not keep:
                fleetctl.down(fleet)
                echo("\nfleet down: no process left running")


def _story(fleet: Fleet, app: apps.App, echo: Echo) -> int:
    echo("The Library App on six clusters (Production 0-5), rolled out in waves:")
    echo("  " + "  ->  ".join(f"{w.name} [{', '.join(w.clusters)}]" for w in fleet.waves))
    for row in fleetctl.up(fleet):
        echo(f"  {row['cluster']:<8} {row['region']:<14} {row['endpoint']}")

    echo(f"\n1. Deploy {GOOD}, the good release, everywhere.")
    good = _deploy(fleet, app, GOOD)
    if good.exit_code != EXIT_OK:
        echo(f"   unexpected: {good.outcome}: {good.message}")
        return good.exit_code or 3

    echo(f"\n2. Deploy {BAD}: the change that dropped the Space member filter.")
    bad = _deploy(fleet, app, BAD)
    code = _verdict(fleet, app.name, bad, echo)
    echo(f"\nThe run's page (timeline, the failing check, every cluster): "
         f"{pages.demo_page(bad)}")
    if code != EXIT_OK:
        return code
    echo(f"\n4. Deploy {SEARCH_LEAK}: search skips the member filter; lists and reads are "
         "right, and no check was written for search.")
    return _drift_verdict(_deploy(fleet, app, SEARCH_LEAK), echo)


def _deploy(fleet: Fleet, app: apps.App, version: str) -> RunReport:
    run_id = runs.new_run_id()
    prepared = deploy.prepare(fleet, app, version, {})
    report = deploy.new_report(fleet, app, version, run_id)
    deploy.run(fleet, prepared, run_id=run_id, by="wavegate-demo", clock=SystemClock(),
               report=report)
    Console().print(table(report))
    return report


def _verdict(fleet: Fleet, app: str, bad: RunReport, echo: Echo) -> int:
    canary = bad.clusters["prod-0"]
    leaks = [c for c in canary.checks if c["outcome"] == "fail" and c["severity"] == "security"]
    for leak in leaks[:4]:
        echo(f"   SECURITY on prod-0: {leak['principal'] or 'anonymous'} {leak['request']} "
             f"-> {leak['status']}: {leak['detail']}")
    drivers = runs.drivers_for(fleet, [c.name for c in fleet.clusters])
    history = status.history(app, drivers)["records"]
    touched = sorted({r["cluster"] for r in history if r["version"] == BAD})
    echo("\n3. The ledger, newest first:")
    for row in history:
        echo(f"   {row['finished_at'] or row['started_at']}  {row['cluster']}  r{row['revision']}"
             f"  {row['version']:<6} {row['status']:<12} {row['reason'] or ''}"[:150])
    held = (bad.exit_code == EXIT_ROLLED_BACK and bool(leaks) and touched == ["prod-0"]
            and canary.state == "rolled-back")
    echo(f"\n{BAD} reached: {', '.join(touched) or 'no cluster'}; prod-0 is "
         f"{canary.state}; prod-1..5 never ran {BAD}.")
    echo(f"The incident: unnoticed for 3 days on prod-0 and 5 hours on prod-1..5, then 31 "
         f"minutes of manual rollback. Here: {BAD} was on prod-0 for "
         f"{_seconds_on_canary(history):.1f} s, checks and rollback included.")
    echo("The safety net held." if held else "The safety net did NOT hold.")
    return EXIT_OK if held else 3


def _drift_verdict(report: RunReport, echo: Echo) -> int:
    """Held when access drift alone stopped the search leak on the canary."""
    canary = report.clusters["prod-0"]
    failed = [c for c in canary.checks if c["outcome"] == "fail"]
    drift = next((c for c in failed if c["name"] == DRIFT_CHECK), None)
    if drift is not None:
        echo(f"   ACCESS DRIFT on prod-0: {drift['principal'] or 'anonymous'} "
             f"{drift['request']} -> {drift['status']}: {drift['detail']}")
    reached = sorted(e.cluster for e in report.clusters.values() if e.state != "pending")
    alone = drift is not None and all(c["name"] == DRIFT_CHECK for c in failed)
    held = report.exit_code == EXIT_ROLLED_BACK and alone and reached == ["prod-0"]
    echo(f"{SEARCH_LEAK} reached: {', '.join(reached) or 'no cluster'}; prod-0 is "
         f"{canary.state}; caught by access drift alone, against what {GOOD} showed.")
    echo("The safety net held." if held else "The safety net did NOT hold.")
    return EXIT_OK if held else 3


def _seconds_on_canary(history: list[dict[str, object]]) -> float:
    bad = next(r for r in history if r["cluster"] == "prod-0" and r["version"] == BAD)
    started, finished = (datetime.fromisoformat(str(bad[key]))
                         for key in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def _private_fleet(fleet: Fleet, state: Path) -> Fleet:
    assert fleet.local is not None
    return dataclasses.replace(fleet, local=dataclasses.replace(fleet.local, state_dir=state))


def _ensure_tokens() -> None:
    """The demo's users get fresh random tokens unless you set your own."""
    for variable in TOKEN_VARIABLES:
        os.environ.setdefault(variable, secrets.token_urlsafe(24))


@click.command()
@click.option("--keep", is_flag=True, help="Leave the demo fleet running afterwards.")
def demo(keep: bool) -> int:
    """The incident, replayed and stopped: 2.0.0 leaks Spaces; the canary catches it."""
    logs.quiet()  # the story is the output; warnings and errors still show
    return run(echo=click.echo, keep=keep)
