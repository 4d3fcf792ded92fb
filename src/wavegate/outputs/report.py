"""The run report: per cluster what happened and what the checks said, kept as the run goes.

The live table reads it, the journal (`.wavegate/runs/<run_id>.json`) and `--report` write it,
and it is the JSON shape in docs/commands.md. Secrets are scrubbed on the way out.

It is also where the run's timeline is kept: every state change and every check round is
stamped with the wall time as it is recorded (`timeline`, `rounds`), so the HTML page can draw
the run on its own time axis without the runner knowing about pages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from wavegate import filestore, redact
from wavegate.decide import ledger

RUNS_DIR = Path(".wavegate/runs")


@dataclass
class ClusterEntry:
    cluster: str
    wave: str
    state: str = "pending"
    from_version: str | None = None
    to_version: str | None = None
    revision: int | None = None
    detail: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    rollback_revision: int | None = None  # the revision a rollback of this cluster wrote
    revisions: list[int] = field(default_factory=list)  # every ledger revision this run wrote
    timeline: list[dict[str, Any]] = field(default_factory=list)  # {at, state[, detail]}
    rounds: list[dict[str, Any]] = field(default_factory=list)  # {at, phase, outcome, counts}


@dataclass
class RunReport:
    run_id: str
    app: str
    version: str | None
    command: str
    started_at: str = field(default_factory=ledger.now)
    finished_at: str | None = None
    outcome: str | None = None
    exit_code: int | None = None
    message: str | None = None
    clusters: dict[str, ClusterEntry] = field(default_factory=dict)
    inputs: dict[str, Any] | None = None  # what resume needs (journal.Inputs), never secrets
    fleet: str | None = None
    by: str | None = None  # who ran it, as the ledger records it
    # Per cluster, the access baseline taken before it changed (ids only as fingerprints), so
    # a resumed run compares against the same one.
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[RunReport], None]] = []

    def add_cluster(self, cluster: str, wave: str, to_version: str | None) -> None:
        self.clusters[cluster] = ClusterEntry(cluster, wave, to_version=to_version)

    def listen(self, listener: Callable[[RunReport], None]) -> None:
        self._listeners.append(listener)

    def update(self, cluster: str, **fields: Any) -> None:
        with self._lock:
            entry = self.clusters[cluster]
            _stamp(entry, fields, ledger.now())
            for key, value in fields.items():
                setattr(entry, key, value)
        self._notify()

    def keep_baseline(self, cluster: str, baseline: dict[str, Any]) -> None:
        with self._lock:
            self.baselines[cluster] = baseline
        self._notify()

    def copy_baselines(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self.baselines)

    def finish(self, *, outcome: str, exit_code: int, message: str | None = None) -> None:
        with self._lock:
            self.outcome, self.exit_code, self.message = outcome, exit_code, message
            self.finished_at = ledger.now()
        self._notify()

    def to_json(self) -> dict[str, Any]:
        scrubbed: dict[str, Any] = redact.scrub_data(self._data())
        return scrubbed

    def write(self, path: Path, *, compact: bool = False) -> None:
        """Several threads of one run report at once. A journal is written `compact`: json's
        C encoder writes it about five times faster than the indenting one."""
        text = redact.json_text(self._data(), indent=None if compact else 2)
        filestore.write_text(path, text + "\n")

    def _data(self) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = {
                "run_id": self.run_id, "app": self.app, "version": self.version,
                "command": self.command, "outcome": self.outcome, "exit_code": self.exit_code,
                "message": self.message, "started_at": self.started_at,
                "finished_at": self.finished_at, "fleet": self.fleet, "by": self.by,
                "clusters": [_entry_json(entry) for entry in self.clusters.values()],
            }
            if self.inputs is not None:
                data["inputs"] = dict(self.inputs)
            if self.baselines:
                data["baselines"] = dict(self.baselines)
        return data

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self)


MAX_PROBLEMS = 20  # failing probes kept per round: the evidence, not a second copy of the run


def _entry_json(entry: ClusterEntry) -> dict[str, Any]:
    """An entry's fields, its lists copied (taken under the report's lock; `scrub_data` then
    copies what is inside them). `asdict` deep-copied every check of every cluster on every
    journal write: 80% of the write at 1,000 clusters. The dicts inside are never changed once
    stored (an update replaces a list, a stamp appends a new dict), so a shallow copy is enough."""
    return {item.name: list(value) if isinstance(value := getattr(entry, item.name), list)
            else value for item in fields(entry)}


def _stamp(entry: ClusterEntry, fields: dict[str, Any], at: str) -> None:
    """Record what `fields` change on `entry` as timestamped facts, before they are applied."""
    for key in ("revision", "rollback_revision"):
        if fields.get(key) is not None and fields[key] not in entry.revisions:
            entry.revisions.append(fields[key])
    if fields.get("checks"):
        entry.rounds.append(_round(fields["checks"], phase=entry.state, at=at))
    state = fields.get("state")
    if state is not None and state != entry.state:
        event = {"at": at, "state": state}
        if fields.get("detail"):
            event["detail"] = fields["detail"]
        entry.timeline.append(event)


def _round(checks: list[dict[str, Any]], *, phase: str, at: str) -> dict[str, Any]:
    """One check round, summed up: its outcome, its counts, and the probes that did not pass."""
    counts = {outcome: sum(1 for c in checks if c.get("outcome") == outcome)
              for outcome in ("pass", "fail", "error")}
    worst = "fail" if counts["fail"] else "error" if counts["error"] else "pass"
    problems = sorted((c for c in checks if c.get("outcome") != "pass"),
                      key=lambda c: c.get("outcome") != "fail")  # failures first
    return {"at": at, "phase": phase, "outcome": worst, "passed": counts["pass"],
            "failed": counts["fail"], "errors": counts["error"],
            "problems": [dict(c) for c in problems[:MAX_PROBLEMS]]}
