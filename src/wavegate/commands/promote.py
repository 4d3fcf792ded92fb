"""`wavegate promote`: open the approval gate a paused run waits at, and continue it."""

from __future__ import annotations

import click

from wavegate.clock import SystemClock
from wavegate.commands.common import ended
from wavegate.engine import deploy as deploys
from wavegate.engine import resume as resumes
from wavegate.engine import session


@click.command()
@click.argument("run_id")
def promote(run_id: str) -> int:
    """Open the approval gate a paused run waits at, and continue it."""
    begin = resumes.begin(resumes.journaled(run_id), promote=True)
    return ended(deploys.launch(begin, by=session.actor(), clock=SystemClock()))
