"""`wavegate plan`: waves, clusters, what would change, and the earliest finish."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wavegate.commands.common import fleet_option, load_fleet, output_option
from wavegate.config import app as apps
from wavegate.engine import deploy as deploys
from wavegate.engine import plan as plans


@click.command()
@click.argument("app_name", metavar="APP")
@click.option("--version", "version", required=True, help="The version to roll out.")
@fleet_option
@click.option("--set", "overrides", multiple=True, metavar="K=V", help="Template value.")
@output_option
def plan(app_name: str, version: str, fleet_path: Path | None, overrides: tuple[str, ...],
         output: str) -> int:
    """Waves, clusters, what would change, and the earliest finish."""
    fleet, app = load_fleet(fleet_path), apps.resolve(app_name)
    prepared = deploys.prepare(fleet, app, version, apps.parse_overrides(overrides))
    releases = {name: target.release for name, target in prepared.targets.items()}
    drivers = {name: target.driver for name, target in prepared.targets.items()}
    result = plans.plan(fleet, releases, drivers)
    click.echo(json.dumps(result, indent=2) if output == "json" else plans.render_text(result))
    return 0
