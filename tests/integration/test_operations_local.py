"""Operating wavegate: gates, windows, aborts, kills and resumes, each from a new process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import LocalFleet

pytestmark = pytest.mark.integration


def edit_fleet(fleet: LocalFleet, **policy: object) -> None:
    document = yaml.safe_load(fleet.fleet_file.read_text())
    document["policy"].update(policy)
    fleet.fleet_file.write_text(yaml.safe_dump(document))


def set_bake(fleet: LocalFleet, wave: str, bake: str) -> None:
    document = yaml.safe_load(fleet.fleet_file.read_text())
    next(w for w in document["waves"] if w["name"] == wave)["bake"] = bake
    fleet.fleet_file.write_text(yaml.safe_dump(document))


def run_id_of(result_stdout: str) -> str:
    return result_stdout.split("wavegate promote ", 1)[1].split("`", 1)[0]


def versions(fleet: LocalFleet) -> dict[str, str | None]:
    return {name: row["live_version"] for name, row in fleet.status().items()}


def test_approval_gate_pauses_with_exit_10_and_promote_continues(local_fleet: LocalFleet) -> None:
    edit_fleet(local_fleet, approval=["regions"])
    paused = local_fleet.deploy("library-app", "1.0.0")
    assert paused.code == 10, paused.stderr
    assert versions(local_fleet) == {"prod-0": "1.0.0", "prod-1": None, "prod-2": None,
                                     "prod-3": None, "prod-4": None, "prod-5": None}
    held = local_fleet.deploy("library-app", "1.0.1")
    assert held.code == 4  # the paused run keeps its locks against a plain deploy
    promoted = local_fleet.wavegate("promote", run_id_of(paused.stdout))
    assert promoted.code == 0, promoted.stderr
    assert set(versions(local_fleet).values()) == {"1.0.0"}


def test_auto_approve_skips_the_gates(local_fleet: LocalFleet) -> None:
    edit_fleet(local_fleet, approval=["regions", "rest"])
    assert local_fleet.deploy("library-app", "1.0.0", "--auto-approve").code == 0
    assert set(versions(local_fleet).values()) == {"1.0.0"}


def test_abort_of_a_paused_run_rolls_back_what_it_changed(local_fleet: LocalFleet) -> None:
    edit_fleet(local_fleet, approval=["regions"])
    assert local_fleet.deploy("library-app", "1.0.0", "--auto-approve").code == 0
    paused = local_fleet.deploy("library-app", "1.1.0")
    assert paused.code == 10
    assert versions(local_fleet)["prod-0"] == "1.1.0"
    aborted = local_fleet.wavegate("abort", run_id_of(paused.stdout))
    assert aborted.code == 1, aborted.stderr
    assert set(versions(local_fleet).values()) == {"1.0.0"}
    assert {r["cluster"] for r in local_fleet.history() if r["version"] == "1.1.0"} == {"prod-0"}


def test_deploy_inside_a_freeze_is_refused_and_a_rollback_is_not(local_fleet: LocalFleet) -> None:
    today = datetime.now(UTC).date()
    edit_fleet(local_fleet, windows={"freeze": [f"{today - timedelta(days=1)}/"
                                                f"{today + timedelta(days=1)}"]})
    refused = local_fleet.deploy("library-app", "1.0.0")
    assert refused.code == 2
    assert "outside the deploy windows" in refused.stderr
    assert str(today + timedelta(days=2)) in refused.stderr  # the next allowed time
    for version in ("1.0.0", "1.1.0"):
        forced = local_fleet.deploy("library-app", version, "--ignore-windows", "--reason",
                                    "hotfix for INC-42")
        assert forced.code == 0, forced.stderr
    assert all("windows ignored: hotfix for INC-42" in (r["reason"] or "")
               for r in local_fleet.history())
    rollback = local_fleet.wavegate("rollback", "library-app", "--all", "-f",
                                    str(local_fleet.fleet_file))
    assert rollback.code == 0, rollback.stderr
    assert set(versions(local_fleet).values()) == {"1.0.0"}


def _start_deploy(fleet: LocalFleet, version: str, app: str = "library-app",
                  *extra: str) -> subprocess.Popen[str]:
    """A deploy in the background, as a CI job runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "wavegate", "deploy", app, "--version", version,
         "-f", str(fleet.fleet_file), *extra], cwd=fleet.root, env=fleet.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_during_the_bake_then_resume_finishes_the_job(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    set_bake(local_fleet, "canary", "30s")
    process = _start_deploy(local_fleet, "1.1.0")
    local_fleet.wait_for_state("prod-0", "baking")
    process.kill()
    process.communicate()
    set_bake(local_fleet, "canary", "1s")  # the fleet file is read again on resume
    resumed = local_fleet.wavegate("resume")
    assert resumed.code == 0, resumed.stderr
    assert set(versions(local_fleet).values()) == {"1.1.0"}
    canary = [r for r in local_fleet.history("-c", "prod-0") if r["version"] == "1.1.0"]
    assert [r["status"] for r in canary] == ["verified"]  # one revision, reused
    assert all(row["lock"] is None for row in local_fleet.status().values())


def test_ci_cancel_sigint_then_sigterm_stops_safely_and_resume_finishes(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    set_bake(local_fleet, "canary", "60s")
    process = _start_deploy(local_fleet, "1.1.0")
    local_fleet.wait_for_state("prod-0", "baking")
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=7.5)  # a CI runner's grace before SIGTERM
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert time.monotonic() - started < 7.5
    assert process.returncode == 3
    statuses = {r["status"] for r in local_fleet.history("-c", "prod-0")
                if r["version"] == "1.1.0"}
    assert statuses == {"interrupted"}
    assert all(row["lock"] is None for row in local_fleet.status().values())
    set_bake(local_fleet, "canary", "1s")
    assert local_fleet.wavegate("resume").code == 0
    assert set(versions(local_fleet).values()) == {"1.1.0"}


def test_abort_of_a_running_deploy_from_another_process(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    set_bake(local_fleet, "canary", "60s")
    process = _start_deploy(local_fleet, "1.1.0")
    run_id = local_fleet.wait_for_state("prod-0", "baking")
    asked = local_fleet.wavegate("abort", run_id)
    assert asked.code == 0, asked.stderr
    process.communicate(timeout=30)
    assert process.returncode == 1
    assert set(versions(local_fleet).values()) == {"1.0.0"}


def test_journal_is_in_the_working_directory(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    journals = list((Path(local_fleet.root) / ".wavegate" / "runs").glob("*.json"))
    assert len(journals) == 1
    data = json.loads(journals[0].read_text())
    assert data["outcome"] == "succeeded" and data["inputs"]["version"] == "1.0.0"


def test_resume_on_a_new_runner_works_from_the_ledgers_alone(local_fleet: LocalFleet) -> None:
    import shutil

    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    set_bake(local_fleet, "regions", "30s")
    process = _start_deploy(local_fleet, "1.1.0")
    local_fleet.wait_for_state("prod-3", "baking")
    process.kill()
    process.communicate()
    shutil.rmtree(local_fleet.root / ".wavegate" / "runs")  # a new CI runner has no journal
    set_bake(local_fleet, "regions", "500ms")
    resumed = local_fleet.wavegate("resume", "--app", "library-app", "-f",
                                   str(local_fleet.fleet_file))
    assert resumed.code == 0, resumed.stderr
    assert set(versions(local_fleet).values()) == {"1.1.0"}
    assert all(row["lock"] is None for row in local_fleet.status().values())


def test_sigkill_during_the_watch_then_resume_watches_again(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    edit_fleet(local_fleet, watch="60s")
    process = _start_deploy(local_fleet, "1.1.0")
    local_fleet.wait_for_state("prod-5", "verified")  # every wave done: watching
    process.kill()
    process.communicate()
    edit_fleet(local_fleet, watch="1s")
    resumed = local_fleet.wavegate("resume")
    assert resumed.code == 0, resumed.stderr
    assert set(versions(local_fleet).values()) == {"1.1.0"}
    assert {r["status"] for r in local_fleet.history() if r["version"] == "1.1.0"} == {
        "verified"}


FAULTY = {"LIBRARY_LEAK": "${leak}", "LIBRARY_FAIL": "${fault}"}


@pytest.mark.parametrize(("fault", "phase"), [
    ("never-ready", "rolling-out"),   # killed while waiting for pods that never get ready
    ("error-5xx", "verifying"),       # killed while the checks keep erroring
])
def test_sigkill_mid_phase_then_resume_applies_the_failure_policy(
        local_fleet: LocalFleet, fault: str, phase: str) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    edit_fleet(local_fleet, check_interval="2s", check_timeout="2s", rollout_timeout="20s")
    variant = local_fleet.app_variant("bad", configmap_extra=FAULTY)
    process = _start_deploy(local_fleet, "1.1.0", str(variant), "--set", "leak=", "--set",
                            f"fault={fault}")
    local_fleet.wait_for_state("prod-0", phase)
    process.kill()
    process.communicate()
    resumed = local_fleet.wavegate("resume")
    assert resumed.code == 1, resumed.stderr  # the release is still bad: rolled back
    assert set(versions(local_fleet).values()) == {"1.0.0"}
    assert {r["cluster"] for r in local_fleet.history() if r["version"] == "1.1.0"} == {"prod-0"}
    assert all(row["lock"] is None for row in local_fleet.status().values())


def test_sigkill_mid_rollback_then_resume_finishes_the_rollback(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    process = _start_deploy(local_fleet, "2.0.0")  # the regression: prod-0 rolls back
    local_fleet.wait_for_state("prod-0", "rolling-back")
    process.kill()
    process.communicate()
    resumed = local_fleet.wavegate("resume")
    assert resumed.code == 1, resumed.stderr
    assert set(versions(local_fleet).values()) == {"1.0.0"}
    canary = local_fleet.history("-c", "prod-0")
    assert [r["status"] for r in canary if r["version"] == "2.0.0"] == ["rolled-back"]
    assert canary[0]["version"] == "1.0.0" and canary[0]["status"] == "verified"
    assert {r["cluster"] for r in local_fleet.history() if r["version"] == "2.0.0"} == {"prod-0"}
