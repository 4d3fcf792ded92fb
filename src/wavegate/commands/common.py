"""What several commands share: their options, the fleet they name, how a run is shown on a
terminal while it goes, and the line that ends it."""

from __future__ import annotations

from pathlib import Path

import click

from wavegate.config import fleet as fleets
from wavegate.engine import session
from wavegate.errors import EXIT_NEEDS_HUMAN
from wavegate.outputs import logs
from wavegate.outputs.report import RunReport

fleet_option = click.option("-f", "--fleet", "fleet_path", type=click.Path(path_type=Path),
                            help="Fleet file (default: $WAVEGATE_FLEET, then clusters/local.yaml).")
output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]),
                             default="table", show_default=True)


def load_fleet(path: Path | None) -> fleets.Fleet:
    return fleets.load(fleets.resolve_path(path))


def live_table(context: click.Context) -> session.Watch:
    """The live per-cluster table on a terminal (log lines would tear it); nothing otherwise."""
    if not context.obj["interactive"]:
        return session.unwatched
    from wavegate.outputs.display import LiveTable  # rich's live display only when shown

    logs.quiet()
    return LiveTable


def ended(report: RunReport) -> int:
    """Print how the run ended; its exit code."""
    click.echo(f"{report.outcome}: {report.message}" if report.message else report.outcome)
    return EXIT_NEEDS_HUMAN if report.exit_code is None else report.exit_code
