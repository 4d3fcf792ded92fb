"""`wavegate resume`: continue, or unwind, a run that did not end."""

from __future__ import annotations

from pathlib import Path

import click

from wavegate.clock import SystemClock
from wavegate.commands.common import ended, fleet_option
from wavegate.engine import deploy as deploys
from wavegate.engine import resume as resumes
from wavegate.engine import session


@click.command()
@click.argument("run_id", required=False)
@click.option("--app", "app_name", help="With no RUN_ID: the newest unfinished run of APP.")
@fleet_option
@click.option("--report", "report_path", type=click.Path(path_type=Path))
def resume(run_id: str | None, app_name: str | None, fleet_path: Path | None,
           report_path: Path | None) -> int:
    """Continue, or unwind, an interrupted run (default: the newest unfinished one).

    With no local journal (a new CI runner), give --app and -f: the ledgers say the rest."""
    outputs = session.Outputs(report=report_path)
    begin = resumes.start(run_id, app_name=app_name, fleet_file=fleet_path, outputs=outputs)
    return ended(deploys.launch(begin, by=session.actor(), clock=SystemClock(), outputs=outputs))
