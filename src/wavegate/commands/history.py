"""`wavegate history`: the ledger, newest first."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wavegate.commands.common import fleet_option, load_fleet, output_option
from wavegate.engine import session
from wavegate.engine import status as statuses


@click.command()
@click.argument("app_name", metavar="APP", default="library-app")
@click.option("-c", "--cluster", "clusters", multiple=True)
@fleet_option
@output_option
def history(app_name: str, clusters: tuple[str, ...], fleet_path: Path | None,
            output: str) -> int:
    """The ledger, newest first."""
    fleet = load_fleet(fleet_path)
    names = session.select_clusters(fleet, clusters)
    result = statuses.history(Path(app_name).name, session.drivers_for(fleet, names))
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
