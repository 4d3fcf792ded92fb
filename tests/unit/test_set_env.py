"""`deploy --set-env KEY=VAR`: a secret template value that only the rendered release holds.

The journal and the report keep `KEY=VAR`, never the value; `resume` reads the variable again
(a variable gone is exit 2 naming it) and also remembers `--force-conflicts`.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from tests.fakes import FakeClock, FakeCluster, FakeDriver
from tests.unit.test_runner import APP, NAMES, TOKENS
from wavegate import redact
from wavegate.config.app import Release, env_values, merged_values, parse_env_overrides
from wavegate.engine import deploy, resume
from wavegate.engine.runner import Target
from wavegate.engine.session import Outputs
from wavegate.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_ROLLED_BACK, InputError, RolloutFailed
from wavegate.outputs import journal
from wavegate.outputs.report import RunReport

REPO = Path(__file__).parents[2]
VARIABLE = "WG_UNIT_DB_PASSWORD"


@pytest.fixture
def secret(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"db-{request.node.name[:20]}-Vq93k"  # distinct per test: redact is process-wide
    monkeypatch.setenv(VARIABLE, value)
    return value


@pytest.fixture(autouse=True)
def setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable, value in TOKENS.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # the journal goes to .wavegate/runs here
    ForceRecordingDriver.forced = []


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """The Library App with a ConfigMap entry filled from `${db_password}`."""
    folder = tmp_path / "apps" / "library-app"
    shutil.copytree(APP, folder)
    configmap = folder / "configmap.yaml"
    configmap.write_text(configmap.read_text() + '  DB_PASSWORD: "${db_password}"\n')
    return folder


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    document = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    document["local"]["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


class ForceRecordingDriver(FakeDriver):
    """A fake cluster that remembers whether each apply was told to take others' fields."""

    forced: list[bool] = []

    def apply(self, release: Release, *, holder: str, force_conflicts: bool = False,
              cancel: threading.Event | None = None) -> None:
        super().apply(release, holder=holder, force_conflicts=force_conflicts, cancel=cancel)
        ForceRecordingDriver.forced.append(force_conflicts)


def new_deploy(app: Path, fleet_file: Path, *, set_env: tuple[str, ...] = (
        f"db_password={VARIABLE}",), force_conflicts: bool = False,
               overrides: tuple[str, ...] = ()) -> deploy.Start:
    return deploy.start(str(app), "1.0.0", fleet_file=fleet_file, overrides=overrides,
                        auto_approve=True, ignore_windows=False, reason=None,
                        outputs=Outputs(), force_conflicts=force_conflicts, set_env=set_env)


def on_fakes(begin: deploy.Start, states: dict[str, FakeCluster]) -> deploy.Start:
    """`begin` with its clusters swapped for in-memory ones (same releases, checks, tokens)."""
    targets = {name: Target(ForceRecordingDriver(target.driver.cluster, states[name]),
                            target.release, target.suite, target.tokens)
               for name, target in begin.prepared.targets.items()}
    return replace(begin, prepared=deploy.Prepared(targets))


def configmap_value(release: Release) -> str:
    configmap = next(m for m in release.manifests if m["kind"] == "ConfigMap")
    return str(configmap["data"]["DB_PASSWORD"])


# --- reading the pairs and the environment ---------------------------------------------------

@pytest.mark.parametrize(("pairs", "expected"), [
    ([], {}),
    (["db_password=DB_PASSWORD"], {"db_password": "DB_PASSWORD"}),
    (["a=A", "b.c=_B1"], {"a": "A", "b.c": "_B1"}),
])
def test_set_env_pairs_name_a_variable_per_key(pairs: list[str],
                                               expected: dict[str, str]) -> None:
    assert parse_env_overrides(pairs) == expected


@pytest.mark.parametrize("pair", ["db_password", "=DB", "db_password=", "k=s3cr3t value!",
                                  "k=1DIGIT_FIRST"])
def test_a_malformed_set_env_pair_is_bad_input_that_does_not_echo_it(pair: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_env_overrides([pair])
    assert refused.value.exit_code == EXIT_BAD_INPUT
    value = pair.partition("=")[2]
    assert "KEY=VAR" in str(refused.value)
    assert not value or value not in str(refused.value)  # a value typed by mistake stays unseen


def test_values_are_registered_with_redact_the_moment_they_are_read() -> None:
    value = "hunter2-but-longer-Xk4"
    assert env_values({"db_password": "DB"}, environ={"DB": value}) == {"db_password": value}
    assert redact.scrub(f"password={value}") == f"password={redact.MASK}"


@pytest.mark.parametrize(("environ", "says"), [
    ({}, "the environment variable DB is not set"),
    ({"DB": "abc"}, "shorter than 4 characters"),
    ({"DB": ""}, "shorter than 4 characters"),
])
def test_a_missing_or_unmaskable_value_is_bad_input_naming_the_variable(
        environ: dict[str, str], says: str) -> None:
    with pytest.raises(InputError, match=says) as refused:
        env_values({"db_password": "DB"}, environ=environ)
    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert "--set-env db_password=DB" in str(refused.value)


def test_one_key_given_with_both_set_and_set_env_is_bad_input() -> None:
    assert merged_values({"a": "1"}, {"b": "secret"}) == {"a": "1", "b": "secret"}
    with pytest.raises(InputError, match="b given with both --set and --set-env"):
        merged_values({"a": "1", "b": "2"}, {"b": "secret"})


# --- a deploy: only the rendered release holds the value --------------------------------------

def test_the_value_reaches_every_rendered_release_and_the_start_keeps_only_its_name(
        app: Path, fleet_file: Path, secret: str) -> None:
    begin = new_deploy(app, fleet_file)
    assert {configmap_value(t.release) for t in begin.prepared.targets.values()} == {secret}
    assert begin.set_env == {"db_password": VARIABLE}
    assert secret not in json.dumps(begin.overrides)


def test_a_deploy_keeps_key_and_variable_in_journal_and_report_never_the_value(
        app: Path, fleet_file: Path, secret: str, clusters: dict[str, FakeCluster],
        tmp_path: Path) -> None:
    begin = on_fakes(new_deploy(app, fleet_file, overrides=("replicas=2",)), clusters)
    report = deploy.launch(begin, by="tester", clock=FakeClock(),
                           outputs=Outputs(report=tmp_path / "report.json"))
    assert report.exit_code == EXIT_OK
    written = journal.path(begin.run_id).read_text() + (tmp_path / "report.json").read_text()
    assert secret not in written
    _, inputs = journal.read(begin.run_id)
    assert inputs.set_env == {"db_password": VARIABLE}
    assert inputs.overrides == {"replicas": "2"}  # plain --set values stay as they were
    stored = {configmap_value(release) for state in clusters.values()
              for _, release in state.records.values()}
    assert stored == {secret}  # the ledger's release is where the value lands


def test_a_failure_quoting_the_value_reaches_no_ledger_reason_and_no_report(
        app: Path, fleet_file: Path, secret: str, clusters: dict[str, FakeCluster],
        tmp_path: Path) -> None:
    clusters["prod-0"].faults["wait_rollout"] = RolloutFailed(
        f"library-app: pod exited: connecting with password {secret} refused")
    begin = on_fakes(new_deploy(app, fleet_file), clusters)
    report = deploy.launch(begin, by="tester", clock=FakeClock(),
                           outputs=Outputs(report=tmp_path / "report.json"))
    assert report.exit_code == EXIT_ROLLED_BACK
    reasons = [record.reason or "" for record, _ in clusters["prod-0"].records.values()]
    assert any("connecting with password [redacted] refused" in r for r in reasons), reasons
    assert not any(secret in r for r in reasons)
    assert secret not in (tmp_path / "report.json").read_text()
    assert secret not in journal.path(begin.run_id).read_text()


# --- resume: the variable read again, --force-conflicts remembered -----------------------------

def test_journal_round_trips_set_env_and_force_conflicts() -> None:
    asked = journal.Inputs(fleet="f.yaml", app="apps/library-app", version="1.0.0",
                           set_env={"db_password": VARIABLE}, force_conflicts=True)
    report = RunReport(run_id="run-9", app="library-app", version="1.0.0",
                              command="deploy")
    report.inputs = journal.as_dict(asked)
    report.write(journal.path("run-9"))
    assert journal.read("run-9")[1] == asked


def test_resume_reads_the_variable_again_and_forces_again_as_the_deploy_did(
        app: Path, fleet_file: Path, secret: str, clusters: dict[str, FakeCluster],
        monkeypatch: pytest.MonkeyPatch) -> None:
    begin = on_fakes(new_deploy(app, fleet_file, force_conflicts=True), clusters)
    deploy.launch(begin, by="tester", clock=FakeClock())
    assert ForceRecordingDriver.forced == [True] * len(NAMES)

    monkeypatch.setenv(VARIABLE, secret + "-rotated")
    resumed = resume.begin(resume.journaled(begin.run_id))
    assert resumed.force_conflicts and resumed.set_env == {"db_password": VARIABLE}
    assert {configmap_value(t.release) for t in resumed.prepared.targets.values()} == {
        secret + "-rotated"}


def test_resume_without_the_variable_is_bad_input_naming_it_and_leaves_the_journal(
        app: Path, fleet_file: Path, secret: str, clusters: dict[str, FakeCluster],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    begin = on_fakes(new_deploy(app, fleet_file), clusters)
    deploy.launch(begin, by="tester", clock=FakeClock())
    before = journal.path(begin.run_id).read_text()
    monkeypatch.delenv(VARIABLE)
    with pytest.raises(InputError) as refused:
        resume.start(begin.run_id, app_name=None, fleet_file=None,
                     outputs=Outputs(report=tmp_path / "resume.json"))
    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert f"environment variable {VARIABLE} is not set" in str(refused.value)
    assert begin.run_id in str(refused.value)
    assert journal.path(begin.run_id).read_text() == before
    saved = json.loads((tmp_path / "resume.json").read_text())
    assert saved["exit_code"] == EXIT_BAD_INPUT and VARIABLE in saved["message"]
