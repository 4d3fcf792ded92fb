"""The live table on a terminal: it shows how the run ended, and a fleet that changes many times a
second does not rebuild it for every change."""

from __future__ import annotations

import io

from rich.console import Console

from wavegate.outputs.display import LiveTable
from wavegate.outputs.report import RunReport


def test_a_burst_of_changes_rebuilds_the_table_a_few_times_and_it_ends_current() -> None:
    report = RunReport(run_id="run-1", app="library-app", version="1.1.0", command="deploy")
    names = [f"c{index:04d}" for index in range(200)]
    for name in names:
        report.add_cluster(name, "wave-0", to_version="1.1.0")
    screen = io.StringIO()
    live = LiveTable(report, Console(file=screen, force_terminal=True, width=160, height=400))
    with live:
        for name in names:
            for state in ("applying", "rolling-out", "verifying", "verified"):
                report.update(name, state=state)
    assert live.built < 50  # not once for each of the 800 changes
    last = screen.getvalue().rsplit("run run-1", 1)[1]  # the frame shown at the end
    assert last.count("verified") == len(names) and "rolling-out" not in last
