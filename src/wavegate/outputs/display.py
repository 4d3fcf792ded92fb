"""The live per-cluster table a release engineer watches on a terminal (rich)."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from wavegate import redact
from wavegate.outputs.report import RunReport

_STYLES = {
    "verified": "green", "baking": "cyan", "verifying": "cyan", "rolling-out": "yellow",
    "applying": "yellow", "failed": "bold red", "rolling-back": "magenta",
    "rolled-back": "magenta", "rollback-failed": "bold red", "interrupted": "red",
    "pending": "dim",
}


def table(report: RunReport) -> Table:
    title = f"{report.command} {report.app} {report.version or ''}  run {report.run_id}"
    grid = Table(title=title, title_justify="left", expand=False)
    for column in ("cluster", "wave", "state", "from", "to", "checks", "detail"):
        grid.add_column(column, overflow="fold")
    for entry in list(report.clusters.values()):
        style = _STYLES.get(entry.state, "")
        passed = sum(1 for c in entry.checks if c.get("outcome") == "pass")
        checks = f"{passed}/{len(entry.checks)}" if entry.checks else ""
        grid.add_row(entry.cluster, entry.wave, f"[{style}]{entry.state}[/]",
                     entry.from_version or "-", entry.to_version or "-", checks,
                     escape(_short(redact.scrub(entry.detail or ""))))
    return grid


class LiveTable:
    """The table, shown while the run changes the report; a context manager around the run.

    It is built again at most `REFRESH` times a second, and only if the report changed: a
    large fleet changes many times a second, and each build walks every cluster."""

    REFRESH = 8  # per second

    def __init__(self, report: RunReport, console: Console | None = None) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._table, self._stale = table(report), False
        self.built = 1
        self._live = Live(get_renderable=self._current, console=console or Console(),
                          refresh_per_second=self.REFRESH, transient=False)
        report.listen(self._changed)

    def _changed(self, report: RunReport) -> None:
        with self._lock:
            self._stale = True

    def _current(self) -> Table:
        with self._lock:
            if self._stale:
                self._table, self._stale = table(self.report), False
                self.built += 1
            return self._table

    def __enter__(self) -> LiveTable:
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._changed(self.report)  # the last refresh shows how the run ended
        self._live.__exit__(kind, error, trace)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
