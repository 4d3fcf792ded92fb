"""The local journal of a run: what `resume`, `promote` and `abort` need to pick it up.

It sits beside the report in `.wavegate/runs/<run_id>.json` and is rewritten as the run
goes, so even a SIGKILL leaves it. A write costs time that grows with the fleet (about
0.2 s of CPU for 1,000 clusters), so changes are coalesced (`_Keeper`): the journal spends at
most `WRITE_SHARE` of the run's time writing, which for a small fleet is every change. An
access baseline must be on disk before its cluster changes (`resume` judges drift against
it), so each is appended to `<run_id>.baselines.jsonl` before the call that keeps it returns:
one line, not the whole journal again for each of a thousand clusters. It holds
inputs (fleet, app, version, overrides) and where the run paused, never secrets: a `--set-env`
value is kept as the name of the variable it came from (`resume` reads it again); the
clusters' ledgers hold the state.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from wavegate import redact
from wavegate.config.app import App
from wavegate.config.fleet import Fleet
from wavegate.errors import InputError
from wavegate.outputs.report import RUNS_DIR, RunReport

UNFINISHED = (None, "paused", "interrupted")
SAME_START = 0.05  # seconds: psutil derives start times from boot time and clock ticks
WRITE_SHARE = 0.05  # of a run's time its journal may spend writing, however large the fleet


@dataclass(frozen=True)
class Inputs:
    fleet: str
    app: str
    version: str
    overrides: dict[str, str] = field(default_factory=dict)
    auto_approve: bool = False
    ignore_windows: str | None = None  # the reason given, when windows are ignored
    approved: tuple[str, ...] = ()
    pid: int = 0
    started: float = 0.0  # the process's start time: with the pid, one process, never a reuse
    paused_at: str | None = None
    set_env: dict[str, str] = field(default_factory=dict)  # template key -> variable name
    force_conflicts: bool = False

    @classmethod
    def of(cls, fleet: Fleet, app: App, version: str, *, overrides: Mapping[str, str],
           auto_approve: bool, ignore_windows: str | None,
           approved: Iterable[str] = (), set_env: Mapping[str, str] | None = None,
           force_conflicts: bool = False) -> Inputs:
        """What this process's run was asked, with absolute paths (resume may run elsewhere)."""
        return cls(fleet=str(fleet.path.resolve()), app=str(app.path.resolve()), version=version,
                   overrides=dict(overrides), auto_approve=auto_approve,
                   ignore_windows=ignore_windows, approved=tuple(sorted(approved)),
                   pid=os.getpid(), started=psutil.Process().create_time(),
                   set_env=dict(set_env or {}), force_conflicts=force_conflicts)


def keep(report: RunReport, inputs: Inputs, *,
         clock: Callable[[], float] = time.monotonic) -> None:
    """Keep the journal current as the run goes, so even a SIGKILL leaves it behind."""
    report.inputs = as_dict(inputs)
    report.listen(_Keeper(report, clock).changed)
    write(report)


def write(report: RunReport) -> None:
    """The run's journal as it is now, compact: json's C encoder writes it about five times
    faster than the indenting one, and only wavegate reads it."""
    report.write(path(report.run_id), compact=True)


class _Keeper:
    """Writes a run's journal as it changes, coalescing changes when writes grow costly.

    One writer thread at a time (started when something changed, gone when all is written)
    writes the report as it is then, so an older state never lands after a newer one, and
    the run's workers never wait for a write. After a write it pauses `cost * (1 /
    WRITE_SHARE - 1)`, taking in whatever changed meanwhile. The end of the run must not
    wait: it cuts the pause short, and its caller returns once a write holds it. A new
    access baseline is appended to its own file by the caller, at once."""

    def __init__(self, report: RunReport, clock: Callable[[], float]) -> None:
        self._report, self._clock = report, clock
        self._state = threading.Condition()
        self._changes = self._written = self._urgent = 0  # counts of changes
        self._appending = threading.Lock()
        self._appended = set(report.baselines)
        self._next_at = 0.0
        self._writer: threading.Thread | None = None
        self._failure: OSError | None = None

    def changed(self, report: RunReport) -> None:
        if len(report.baselines) > len(self._appended):
            self._append_baselines(report)
        with self._state:
            self._changes += 1
            urgent = report.finished_at is not None
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_while_changed,
                                                name="journal", daemon=True)
                self._writer.start()
            if not urgent:
                return
            self._urgent = wanted = self._changes
            self._state.notify_all()
            while self._written < wanted:
                self._state.wait()
            if self._failure is not None:
                raise self._failure

    def _write_while_changed(self) -> None:
        while True:
            with self._state:
                if self._written == self._changes:
                    self._writer = None
                    return
                pause = self._next_at - self._clock()
                if pause > 0 and self._urgent <= self._written:
                    self._state.wait(pause)  # an urgent change cuts it short
                covers = self._changes
            started = self._clock()
            failure = None
            try:
                write(self._report)
            except OSError as error:  # the next write tries again; an urgent caller is told
                failure = error
            ended = self._clock()
            with self._state:
                self._written, self._failure = covers, failure
                self._next_at = ended + (ended - started) * (1 / WRITE_SHARE - 1)
                self._state.notify_all()

    def _append_baselines(self, report: RunReport) -> None:
        with self._appending:
            fresh = {cluster: baseline for cluster, baseline in report.copy_baselines().items()
                     if cluster not in self._appended}
            if not fresh:
                return
            lines = "".join(json.dumps(redact.scrub_data({"cluster": cluster, "baseline":
                                                          baseline}), sort_keys=True) + "\n"
                            for cluster, baseline in fresh.items())
            baselines_path(report.run_id).parent.mkdir(parents=True, exist_ok=True)
            with baselines_path(report.run_id).open("a", encoding="utf-8") as output:
                output.write(lines)
            self._appended.update(fresh)


def path(run_id: str) -> Path:
    return RUNS_DIR / f"{run_id}.json"


def baselines_path(run_id: str) -> Path:
    return RUNS_DIR / f"{run_id}.baselines.jsonl"


def _appended_baselines(run_id: str) -> dict[str, Any]:
    """The baselines appended as the run went; a line cut short by a crash was never
    confirmed to its caller (its cluster did not change), so it is skipped."""
    try:
        lines = baselines_path(run_id).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    found = {}
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            found[entry["cluster"]] = entry["baseline"]
    return found


def read(run_id: str) -> tuple[dict[str, Any], Inputs]:
    try:
        data = json.loads(path(run_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no journal for run {run_id} here (looked in {RUNS_DIR})") from None
    if "inputs" not in data:
        raise InputError(f"run {run_id} cannot be resumed: its journal has no inputs "
                         "(it was not a deploy)", file=path(run_id))
    data["baselines"] = {**_appended_baselines(run_id), **data.get("baselines", {})}
    inputs = data["inputs"]
    inputs["approved"] = tuple(inputs.get("approved", ()))
    return data, Inputs(**inputs)


def as_dict(inputs: Inputs) -> dict[str, Any]:
    data = asdict(inputs)
    data["approved"] = list(inputs.approved)
    return data


def newest_unfinished(app: str | None = None) -> str:
    """The run id of the newest deploy that did not finish, of `app` if given."""
    candidates = []
    for file in RUNS_DIR.glob("*.json") if RUNS_DIR.is_dir() else []:
        data = json.loads(file.read_text(encoding="utf-8"))
        if "inputs" in data and data.get("outcome") in UNFINISHED and (
                app is None or data.get("app") == app):
            candidates.append((data["started_at"], data["run_id"]))
    if not candidates:
        raise InputError(f"no unfinished run{' of ' + app if app else ''} in {RUNS_DIR}")
    return str(max(candidates)[1])


def alive(pid: int, started: float = 0.0) -> bool:
    """Whether `pid` is still the wavegate process that wrote the journal: running (not a
    zombie), and started when the journal says (a pid reused by another process is not it).
    A journal from before start times were kept is judged by the command line alone."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if started:
            return abs(process.create_time() - started) < SAME_START
        return any("wavegate" in part for part in process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
