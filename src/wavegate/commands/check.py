"""`wavegate check`: the live release's checks, once or continuously, and roll back on a fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wavegate.clock import SystemClock
from wavegate.commands import report as pages
from wavegate.commands.common import ended, fleet_option, live_table, load_fleet, output_option
from wavegate.commands.report import html_option
from wavegate.config import durations
from wavegate.engine import live_checks as livecheck
from wavegate.engine import rollback as rollbacks
from wavegate.engine import session
from wavegate.errors import EXIT_OK, EXIT_ROLLED_BACK, InputError


@click.command()
@click.argument("app_name", metavar="APP")
@click.option("-c", "--cluster", "clusters", multiple=True, help="A cluster (repeatable).")
@click.option("--every", "every", help="Keep checking at this interval (e.g. 5m).")
@click.option("--rollback-on-fail", is_flag=True,
              help="On a failed check, roll the release back on every cluster.")
@fleet_option
@output_option
@html_option
@click.pass_context
def check(context: click.Context, app_name: str, clusters: tuple[str, ...], every: str | None,
          rollback_on_fail: bool, fleet_path: Path | None, output: str,
          html_path: Path | None) -> int:
    """Run the live release's checks: once, or continuously with --every."""
    fleet = load_fleet(fleet_path)
    names = session.select_clusters(fleet, clusters)
    interval = _interval(every)
    folder = livecheck.app_folder(app_name)
    app = folder.name if folder else Path(app_name).name
    live = session.drivers_for(fleet, names)  # each reached on its own, in its round
    page = pages.CheckPage(html_path, app=app, fleet=fleet, names=names)
    code = EXIT_OK
    for rows in livecheck.rounds(app, live, fleet.policy, folder, every=interval):
        _print_checks(rows, output)
        page.record(rows)
        failed = [row for row in rows if row["outcome"] == "fail"]
        if failed and rollback_on_fail:
            report = livecheck.roll_back(fleet, app, failed, by=session.actor(),
                                         clock=SystemClock(), watch=live_table(context),
                                         folder=folder)
            for line in rollbacks.left_behind(report):
                click.echo(f"wavegate: {line}", err=True)
            code = ended(report)
            return page.rolled_back(report, EXIT_ROLLED_BACK if code == EXIT_OK else code)
        code = 1 if any(row["outcome"] in ("fail", "error") for row in rows) else EXIT_OK
    return page.finish(code)


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
