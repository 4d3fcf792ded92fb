"""What every command that changes clusters shares: run ids, who acts, drivers, signals, and
how a run's report is watched and saved whatever the outcome."""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import structlog

from wavegate import drivers
from wavegate.config.fleet import Fleet
from wavegate.drivers.base import Driver
from wavegate.engine import fanout
from wavegate.errors import DriverError, InputError, WavegateError
from wavegate.outputs import html, journal, junit, summary
from wavegate.outputs.report import RunReport

log = structlog.get_logger(__name__)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def new_holder(run_id: str) -> str:
    """The lock holder of this process's incarnation of `run_id`: the run id (so a reader
    knows which run to resume) and a token of this process (so a second process of the same
    run, a `resume` racing a live one, never passes the first one's fence)."""
    return f"{run_id}/{secrets.token_hex(4)}"


def actor() -> str:
    """Who is acting, for the ledger: explicit, then CI's user, then the login."""
    for variable in ("WAVEGATE_ACTOR", "GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_REQUESTEDFOR"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def select_clusters(fleet: Fleet, names: tuple[str, ...] | list[str]) -> list[str]:
    known = [cluster.name for cluster in fleet.clusters]
    for name in names:
        if name not in known:
            raise InputError(f"unknown cluster {name!r} (fleet has {', '.join(known)})",
                             file=fleet.path, field="-c")
    return list(names) or known


def drivers_for(fleet: Fleet, names: list[str]) -> dict[str, Driver]:
    """A driver per named cluster; none is contacted yet."""
    return {name: drivers.for_cluster(fleet, fleet.cluster(name)) for name in names}


def connect(chosen: dict[str, Driver]) -> dict[str, Driver]:
    """Confirm every cluster answers, in parallel (the slowest one counts); DriverError names
    every cluster that did not."""
    with fanout.pool(len(chosen)) as pool:
        failures = [error for error in pool.map(_try_connect, chosen.values()) if error]
    if failures:
        others = "; ".join(str(f) for f in failures[1:])
        first = str(failures[0]).removeprefix(f"{failures[0].cluster}: ")
        raise DriverError(first + (f"; {others}" if others else ""), cluster=failures[0].cluster)
    return chosen


def _try_connect(driver: Driver) -> DriverError | None:
    try:
        driver.connect()
    except DriverError as error:
        return error
    return None


@dataclass(frozen=True)
class Outputs:
    """Where a run's report goes besides its journal (`--report`, `--junit`, `--report-html`)."""

    report: Path | None = None
    junit: Path | None = None
    html: Path | None = None


NO_OUTPUTS = Outputs()

# Something that shows the report while the run changes it (the live table on a terminal).
Watch = Callable[[RunReport], AbstractContextManager[object]]


def unwatched(report: RunReport) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def reported(report: RunReport, work: Callable[[], object], *, outputs: Outputs,
             watch: Watch = unwatched) -> RunReport:
    """Do a run's `work` (which finishes `report`) under `watch`, then save the report whatever
    the outcome: an error that stops the run is written into it, then raised on."""
    try:
        with watch(report):
            work()
    except WavegateError as error:
        if report.exit_code is None:
            report.finish(outcome="error", exit_code=error.exit_code, message=str(error))
        save(report, outputs)
        raise
    save(report, outputs)
    return report


def save(report: RunReport, outputs: Outputs) -> None:
    """The journal always; --report and --junit when asked; the CI step summary when set."""
    journal.write(report)
    if outputs.report is not None:
        report.write(outputs.report)
    data = report.to_json()
    if outputs.junit is not None:
        junit.write(data, outputs.junit)
    if outputs.html is not None:
        write_page(outputs.html, html.render_run(data))
    summary.append_to_step_summary(data)


def write_page(path: Path, page: str) -> None:
    """`--report-html`: a page that cannot be written is a warning; the run's exit code stands."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        log.warning("report_html.unwritable", path=str(path), detail=error.strerror or str(error))


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None],
                    abort: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM (a CI runner cancelling the job) ask the run to stop at a safe point;
    SIGUSR1 (sent by `wavegate abort`) asks it to fail and apply its failure policy."""
    def handler(signum: int, frame: FrameType | None) -> None:
        (abort if signum == signal.SIGUSR1 and abort else stop)()

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if abort else [])
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
