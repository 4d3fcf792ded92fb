"""`wavegate report RUN_ID --html FILE`, and every other way to get an HTML page of wavegate:
`--report-html FILE` on deploy, rollback and check, `status APP -o html FILE`, and the demo.

The pages themselves are drawn by `outputs.html` from report dicts; this module finds the
dicts (a run's journal, a check's rounds, the ledgers) and writes the files.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from wavegate.config.fleet import Fleet
from wavegate.drivers.base import Driver
from wavegate.engine import session
from wavegate.engine import status as statuses
from wavegate.errors import DriverError, InputError
from wavegate.outputs import html, journal
from wavegate.outputs.report import RUNS_DIR, RunReport

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# What a round of `wavegate check` leaves a cluster in, in a run report's words.
CHECK_STATES = {"pass": "passed", "fail": "failed", "error": "error", "none": "not-deployed"}


def from_run(run_id: str, path: Path) -> Path:
    """The page of a finished (or unfinished) run, from its journal or a `--report` file."""
    write_page(path, html.render_run(_read_report(run_id)), option="--html")
    return path


def write_run(report: RunReport, path: Path | None) -> None:
    """`--report-html`: written whatever the outcome; a page that cannot be written is a
    warning, never a change to the run's own exit code."""
    if path is not None:
        session.write_page(path, html.render_run(report.to_json()))


html_option = click.option("--report-html", "html_path", type=click.Path(path_type=Path),
                           help="Write the run as one self-contained HTML page here.")


@click.command("report")
@click.argument("run_id")
@click.option("--html", "html_path", type=click.Path(path_type=Path), required=True,
              help="Write the run as one self-contained HTML page here.")
def report(run_id: str, html_path: Path) -> int:
    """A finished run's page, from its journal (or a file written with --report)."""
    click.echo(from_run(run_id, html_path))
    return 0


def status_page(app: str, drivers: dict[str, Driver], *, fleet: Fleet, path: Path | None) -> Path:
    """`status APP -o html FILE`: the fleet at a glance, with its recent ledger history."""
    if path is None:
        raise InputError("-o html needs a file: wavegate status APP -o html FILE", field="-o")
    result = statuses.status(app, drivers)
    with ThreadPoolExecutor(max_workers=len(drivers) or 1) as pool:
        answers = list(pool.map(lambda item: _history(app, *item), drivers.items()))
    records = [record for found, _ in answers for record in found]
    errors = {name: error for (_, error), name in zip(answers, drivers, strict=True) if error}
    page = html.render_status(result, records, fleet=fleet.name, at=datetime.now(UTC),
                              errors=errors)
    write_page(path, page, option="FILE")
    return path


def demo_page(report: RunReport) -> Path:
    """The demo's run: its journal (so `wavegate report` finds it too) and its page."""
    journal.write(report)
    path = RUNS_DIR / f"{report.run_id}.html"
    write_page(path, html.render_run(report.to_json()), option="demo")
    return path.resolve()


def write_page(path: Path, page: str, *, option: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot write the page: {error.strerror or error}", file=path,
                         field=option) from None


class CheckPage:
    """`check --report-html`: the rounds of `wavegate check` kept as a run of their own, its
    page rewritten after every round (so `--every` keeps it current), and the rollback that
    `--rollback-on-fail` starts folded in. With no path it only keeps the rounds."""

    def __init__(self, path: Path | None, *, app: str, fleet: Fleet, names: list[str]) -> None:
        self.path, self.fleet = path, fleet
        self.report = RunReport(run_id=session.new_run_id(), app=app, version=None,
                                command="check", fleet=fleet.name, by=session.actor())
        for name in names:
            self.report.add_cluster(name, fleet.wave_of(name).name, to_version=None)

    def record(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            fields: dict[str, Any] = {"state": CHECK_STATES.get(row["outcome"], row["outcome"]),
                                      "detail": row.get("detail")}
            if "version" in row:
                fields.update(from_version=row["version"], to_version=row["version"])
            if row.get("checks"):
                fields["checks"] = row["checks"]
            self.report.update(row["cluster"], **fields)
        write_run(self.report, self.path)

    def finish(self, code: int) -> int:
        failed = [e.cluster for e in self.report.clusters.values() if e.state != "passed"]
        self.report.finish(outcome="passed" if code == 0 else "failed", exit_code=code,
                           message=f"checks did not pass on {', '.join(failed)}"
                           if failed else None)
        write_run(self.report, self.path)
        return code

    def rolled_back(self, rollback: RunReport, code: int) -> int:
        """The rollback the failed check started: its clusters' times go on the same axis."""
        for name, theirs in rollback.clusters.items():
            if name not in self.report.clusters:
                self.report.add_cluster(name, theirs.wave, to_version=None)
            mine = self.report.clusters[name]
            mine.timeline += theirs.timeline
            mine.rounds += theirs.rounds
            mine.revisions += theirs.revisions
            mine.state, mine.detail = theirs.state, theirs.detail
            mine.from_version = theirs.from_version or mine.from_version
            mine.to_version = theirs.to_version or mine.to_version
        self.report.finish(outcome=rollback.outcome or "rolled-back", exit_code=code,
                           message=f"a check failed; rollback run {rollback.run_id}: "
                                   f"{rollback.message or rollback.outcome}")
        write_run(self.report, self.path)
        return code


def _history(app: str, name: str, driver: Driver) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return list(statuses.history(app, {name: driver})["records"]), None
    except DriverError as error:
        return [], str(error)


def _read_report(run_id: str) -> dict[str, Any]:
    given = Path(run_id)
    if run_id.endswith(".json") and given.is_file():
        file = given  # a report written with --report
    elif _RUN_ID.match(run_id):
        file = journal.path(run_id)
    else:
        raise InputError(f"{run_id!r} is neither a run id nor a report file", field="RUN_ID")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no run {run_id} here (looked in {RUNS_DIR})", field="RUN_ID") from None
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the run report: {error}", file=file) from None
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), list) or not all(
            isinstance(c, dict) and isinstance(c.get("cluster"), str) for c in data["clusters"]):
        raise InputError("not a wavegate run report (no clusters)", file=file)
    return data
