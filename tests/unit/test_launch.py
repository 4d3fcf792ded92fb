"""`deploy.launch`, the one way a deploy run starts: connected once, journal kept, report back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes import FakeClock, FakeCluster, FakeDriver
from tests.unit.test_runner import APP, NAMES, TOKENS, make_fleet
from wavegate.config import checks
from wavegate.config.app import App
from wavegate.config.fleet import Fleet
from wavegate.engine import credentials, deploy
from wavegate.engine.runner import Target
from wavegate.engine.session import Outputs
from wavegate.errors import EXIT_OK
from wavegate.outputs import journal


class CountingDriver(FakeDriver):
    connects = 0

    def connect(self, *, confirm: bool = True) -> None:
        CountingDriver.connects += 1
        super().connect(confirm=confirm)


@pytest.fixture(autouse=True)
def setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable, value in TOKENS.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # the journal goes to .wavegate/runs here
    CountingDriver.connects = 0


def start(fleet: Fleet, states: dict[str, FakeCluster], version: str, **how: object
          ) -> deploy.Start:
    app = App.from_folder(APP)
    targets = {}
    for cluster in fleet.clusters:
        release = app.render(cluster, version)
        suite = checks.load(release.checks, APP / "checks.yaml")
        targets[cluster.name] = Target(CountingDriver(cluster, states[cluster.name]), release,
                                       suite, credentials.resolve(suite))
    return deploy.Start(fleet=fleet, app=app, version=version,
                        prepared=deploy.Prepared(targets), run_id="run-1", **how)  # type: ignore[arg-type]


def test_a_new_run_connects_each_cluster_once_and_hands_back_its_saved_report(
        clusters: dict[str, FakeCluster], tmp_path: Path) -> None:
    report = deploy.launch(start(make_fleet(), clusters, "1.0.0"), by="tester",
                           clock=FakeClock(), outputs=Outputs(report=tmp_path / "out.json"))
    assert (report.outcome, report.exit_code) == ("succeeded", EXIT_OK)
    assert CountingDriver.connects == len(NAMES)
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["outcome"] == "succeeded" and {c["state"] for c in saved["clusters"]} == {
        "verified"}
    _, inputs = journal.read("run-1")  # the journal built its own inputs, resumable elsewhere
    assert (inputs.version, Path(inputs.app), inputs.auto_approve) == (
        "1.0.0", APP.resolve(), False)


def test_a_resumed_run_connects_once_and_stands_where_its_ledgers_say(
        clusters: dict[str, FakeCluster]) -> None:
    fleet = make_fleet()
    deploy.launch(start(fleet, clusters, "1.0.0"), by="tester", clock=FakeClock())
    CountingDriver.connects = 0
    resumed = start(fleet, clusters, "1.0.0", resuming=True)
    report = deploy.launch(replace(resumed, run_id="run-1"), by="tester", clock=FakeClock())
    assert CountingDriver.connects == len(NAMES)
    assert report.exit_code == EXIT_OK
    assert all(state.applied == ["1.0.0"] for state in clusters.values())  # nothing redone
