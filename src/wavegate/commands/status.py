"""`wavegate status`: per cluster, the live version, the last-known-good and the lock."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wavegate.commands.common import fleet_option, load_fleet, output_option
from wavegate.engine import session
from wavegate.engine import status as statuses


@click.command()
@click.argument("app_name", metavar="APP", default="library-app")
@fleet_option
@output_option
def status(app_name: str, fleet_path: Path | None, output: str) -> int:
    """Per cluster: live version, last-known-good, lock."""
    fleet = load_fleet(fleet_path)
    result = statuses.status(Path(app_name).name,
                             session.drivers_for(fleet, [c.name for c in fleet.clusters]))
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
