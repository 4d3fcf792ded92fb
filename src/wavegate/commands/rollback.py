"""`wavegate rollback`: the emergency path, every chosen cluster back to a verified release."""

from __future__ import annotations

from pathlib import Path

import click

from wavegate.clock import SystemClock
from wavegate.commands.common import ended, fleet_option, live_table, load_fleet
from wavegate.commands.report import html_option
from wavegate.engine import live_checks as livecheck
from wavegate.engine import rollback as rollbacks
from wavegate.engine import session
from wavegate.errors import InputError


@click.command()
@click.argument("app_name", metavar="APP")
@click.option("--all", "all_clusters", is_flag=True, help="Every cluster of the fleet.")
@click.option("-c", "--cluster", "clusters", multiple=True, help="A cluster (repeatable).")
@click.option("--to", "to_version", help="The version to go back to.")
@click.option("--reason", default="emergency rollback", help="Why, for the ledger.")
@fleet_option
@click.option("--report", "report_path", type=click.Path(path_type=Path))
@html_option
@click.pass_context
def rollback(context: click.Context, app_name: str, all_clusters: bool,
             clusters: tuple[str, ...], to_version: str | None, reason: str,
             fleet_path: Path | None, report_path: Path | None, html_path: Path | None) -> int:
    """Emergency: every chosen cluster back to its last verified release, in parallel."""
    if all_clusters == bool(clusters):
        raise InputError("give either --all or one or more -c CLUSTER")
    fleet = load_fleet(fleet_path)
    app = Path(app_name).name if Path(app_name).is_dir() else app_name
    report = rollbacks.emergency(
        fleet, app, session.select_clusters(fleet, clusters), to_version=to_version,
        reason=reason, by=session.actor(), clock=SystemClock(),
        outputs=session.Outputs(report=report_path, html=html_path), watch=live_table(context),
        folder=livecheck.app_folder(app_name))
    for line in rollbacks.left_behind(report):
        click.echo(f"wavegate: {line}", err=True)
    return ended(report)
