"""`wavegate abort`: stop a run, running or paused, and apply its failure policy."""

from __future__ import annotations

import click

from wavegate.clock import SystemClock
from wavegate.commands.common import ended
from wavegate.engine import deploy as deploys
from wavegate.engine import resume as resumes
from wavegate.engine import session


@click.command()
@click.argument("run_id")
def abort(run_id: str) -> int:
    """Stop a run (running or paused) and apply its failure policy."""
    found = resumes.journaled(run_id)
    pid = resumes.signal_abort(found)
    if pid is not None:
        click.echo(f"asked run {run_id} (pid {pid}) to abort; it rolls back and ends")
        return 0
    begin = resumes.begin(found, abort=True)
    return ended(deploys.launch(begin, by=session.actor(), clock=SystemClock()))
