"""`wavegate deploy`: roll an app out at a version, wave by wave, checking after every cluster."""

from __future__ import annotations

from pathlib import Path

import click

from wavegate.clock import SystemClock
from wavegate.commands.common import ended, fleet_option, live_table
from wavegate.commands.report import html_option
from wavegate.engine import deploy as deploys
from wavegate.engine import session


@click.command()
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
@click.option("--force-conflicts", is_flag=True,
              help="Take over fields another field manager owns (kubectl, Helm, a controller).")
@click.pass_context
def deploy(context: click.Context, app_name: str, version: str, fleet_path: Path | None,
           overrides: tuple[str, ...], auto_approve: bool, dry_run: bool,
           report_path: Path | None, junit_path: Path | None, html_path: Path | None,
           ignore_windows: bool, reason: str | None, force_conflicts: bool) -> int:
    """Roll APP out at VERSION, wave by wave, checking after every cluster."""
    outputs = session.Outputs(report=report_path, junit=junit_path, html=html_path)
    begin = deploys.start(app_name, version, fleet_file=fleet_path, overrides=overrides,
                          auto_approve=auto_approve, ignore_windows=ignore_windows,
                          reason=reason, outputs=outputs, force_conflicts=force_conflicts)
    if dry_run:
        click.echo(f"dry run: {begin.app.name} {version} is valid for "
                   f"{len(begin.fleet.clusters)} clusters in {len(begin.fleet.waves)} waves; "
                   "nothing was touched")
        return 0
    return ended(deploys.launch(begin, by=session.actor(), clock=SystemClock(), outputs=outputs,
                                watch=live_table(context)))
