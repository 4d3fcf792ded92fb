"""Picking up a deploy run that did not end: `wavegate resume`, `promote` and `abort`.

A run is found through its local journal (`.wavegate/runs/<run_id>.json`), or, on a machine
without it (a new CI runner), through the clusters' ledgers alone. Either way the result is a
`deploy.Start` that `deploy.launch` runs like any other; where each cluster stands is rebuilt
from its ledger there. Drivers connected and ledgers read while finding the run are handed on,
never contacted or read again.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavegate.config.app import App, env_values, merged_values
from wavegate.config.app import resolve as resolve_app
from wavegate.config.fleet import load as load_fleet
from wavegate.decide.ledger import Record, Status
from wavegate.drivers.base import Driver
from wavegate.engine import deploy
from wavegate.engine.session import Outputs, connect, drivers_for
from wavegate.errors import InputError, RunAlive, WavegateError
from wavegate.outputs import journal
from wavegate.outputs.report import RunReport


@dataclass(frozen=True)
class Found:
    """A run to pick up: what it was asked, and how it stood when it last wrote its journal."""

    run_id: str
    inputs: journal.Inputs
    outcome: str | None  # None: it was still running (or was killed)
    live: Mapping[str, Driver] | None = None  # connected while finding it in the ledgers
    records: Mapping[str, Sequence[Record]] | None = None
    baselines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # access drift


def start(run_id: str | None, *, app_name: str | None, fleet_file: Path | None,
          outputs: Outputs) -> deploy.Start:
    """`wavegate resume`: the run found and ready to launch. A run that cannot be picked up
    still leaves a `--report` saying why; its journal is left as it was, to try again."""
    try:
        return begin(find(run_id, app_name=app_name, fleet_file=fleet_file))
    except WavegateError as error:
        if outputs.report is not None:
            report = RunReport(run_id=run_id or "", app="", version=None, command="resume")
            report.finish(outcome="error", exit_code=error.exit_code, message=str(error))
            report.write(outputs.report)
        raise


def find(run_id: str | None, *, app_name: str | None = None,
         fleet_file: Path | None = None) -> Found:
    """RUN_ID from its journal (default: the newest unfinished run, of APP if given); with APP
    and a fleet file but no journal here, from the ledgers."""
    if fleet_file is not None and app_name is not None and not (
            run_id and journal.path(run_id).exists()):
        return _from_ledgers(run_id, fleet_file, resolve_app(app_name))
    return journaled(run_id or journal.newest_unfinished(app_name))


def journaled(run_id: str) -> Found:
    data, inputs = journal.read(run_id)
    return Found(run_id, inputs, outcome=data.get("outcome"),
                 baselines=data.get("baselines", {}))


def _from_ledgers(run_id: str | None, fleet_file: Path, app: App) -> Found:
    """The ledgers say which run is unfinished and at which version; template overrides, if it
    had any, are not known."""
    fleet = load_fleet(fleet_file)
    live = connect(drivers_for(fleet, [cluster.name for cluster in fleet.clusters]))
    records = {name: driver.records(app.name) for name, driver in live.items()}
    every = [record for listed in records.values() for record in listed]
    unfinished = [r for r in every if r.status in (Status.APPLYING, Status.INTERRUPTED)]
    mine = [r for r in every if r.run_id == run_id] if run_id else unfinished
    if not mine:
        raise InputError(f"no unfinished run of {app.name} in the ledgers of {fleet.name}"
                         if run_id is None else f"run {run_id} is in no ledger of {fleet.name}")
    newest = max(mine, key=lambda record: record.started_at)
    inputs = journal.Inputs(fleet=str(fleet_file.resolve()), app=str(app.path.resolve()),
                            version=newest.version)
    return Found(newest.run_id, inputs, outcome="interrupted", live=live, records=records)


def begin(found: Found, *, promote: bool = False, abort: bool = False) -> deploy.Start:
    """The run `found`, ready for `deploy.launch`: through the gate it paused at if `promote`,
    straight to its failure policy if `abort`."""
    inputs = found.inputs
    if journal.alive(inputs.pid, inputs.started):
        raise RunAlive(run_id=found.run_id, pid=inputs.pid)  # one process per run
    if promote and found.outcome != "paused":
        raise InputError(f"run {found.run_id} is not paused at a gate (it is "
                         f"{found.outcome or 'running'}); use `wavegate resume`")
    secrets = _secret_values(found)
    fleet = load_fleet(Path(inputs.fleet))
    app = App.from_folder(Path(inputs.app))
    prepared = deploy.prepare(fleet, app, inputs.version,
                              merged_values(inputs.overrides, secrets), live=found.live)
    opened = {inputs.paused_at} if promote and inputs.paused_at else set()
    return deploy.Start(
        fleet=fleet, app=app, version=inputs.version, prepared=prepared, run_id=found.run_id,
        overrides=inputs.overrides, set_env=inputs.set_env, auto_approve=inputs.auto_approve,
        ignore_windows=inputs.ignore_windows, approved=frozenset(inputs.approved) | opened,
        resuming=True, abort=abort, force_conflicts=inputs.force_conflicts,
        records=found.records, baselines=found.baselines,
        predecessor_gone=found.live is None)


def _secret_values(found: Found) -> dict[str, str]:
    """The run's `--set-env` values, read again from this process's environment: the journal
    kept only the variables' names."""
    try:
        return env_values(found.inputs.set_env)
    except InputError as error:
        raise InputError(f"run {found.run_id} cannot be picked up: {error.message} (set it "
                         "again as when the run started; nothing was touched)") from None


def signal_abort(found: Found) -> int | None:
    """Ask the run's process, if it still runs, to roll back and end (SIGUSR1); its pid, or
    None when nobody runs it and the caller must unwind it. A finished run is bad input."""
    if found.outcome not in journal.UNFINISHED:
        raise InputError(f"run {found.run_id} already finished ({found.outcome})")
    if not journal.alive(found.inputs.pid, found.inputs.started):
        return None
    os.kill(found.inputs.pid, signal.SIGUSR1)
    return found.inputs.pid
