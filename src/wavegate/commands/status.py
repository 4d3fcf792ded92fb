"""`wavegate status`: per cluster, the live version, the last-known-good and the lock."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wavegate.commands import report as pages
from wavegate.commands.common import fleet_option, load_fleet
from wavegate.engine import session
from wavegate.engine import status as statuses
from wavegate.errors import InputError


@click.command()
@click.argument("app_name", metavar="APP", default="library-app")
@click.argument("html_path", metavar="[FILE]", required=False, type=click.Path(path_type=Path))
@fleet_option
@click.option("-o", "--output", type=click.Choice(["table", "json", "html"]), default="table",
              show_default=True, help="html: write the fleet's page to FILE.")
def status(app_name: str, html_path: Path | None, fleet_path: Path | None, output: str) -> int:
    """Per cluster: live version, last-known-good, lock (-o html FILE: a page, with history)."""
    fleet = load_fleet(fleet_path)
    drivers = session.drivers_for(fleet, [c.name for c in fleet.clusters])
    if output == "html" or html_path is not None:
        if output != "html":
            raise InputError(f"unexpected argument {html_path} (a FILE goes with -o html)")
        click.echo(pages.status_page(Path(app_name).name, drivers, fleet=fleet, path=html_path))
        return 0
    result = statuses.status(Path(app_name).name, drivers)
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
