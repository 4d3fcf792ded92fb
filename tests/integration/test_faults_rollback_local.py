"""Faults during a rollback, on the local fleet (real agents, pods and HTTP on loopback): a
cluster whose agent is frozen (SIGSTOP), a lock file deleted by hand under a live run, stored
checks that no longer load. Each test asserts where every cluster ends, from its ledger.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import printed_command, run_reaches
from tests.integration.conftest import LocalFleet
from wavegate.localfleet import supervisor

pytestmark = [pytest.mark.integration, pytest.mark.faults]
NAMES = [f"prod-{n}" for n in range(6)]


def versions(fleet: LocalFleet) -> dict[str, str | None]:
    return {name: row["live_version"] for name, row in fleet.status().items()}


def state_dir(fleet: LocalFleet) -> Path:
    return Path(yaml.safe_load(fleet.fleet_file.read_text())["local"]["state_dir"])


def agent_pid(fleet: LocalFleet, cluster: str) -> int:
    info = supervisor.is_running(state_dir(fleet) / cluster)
    assert info is not None, f"{cluster}'s agent is not running"
    return info.pid


def newest(fleet: LocalFleet, cluster: str) -> tuple[str, str]:
    record = fleet.history("-c", cluster)[0]  # newest first
    return record["version"], record["status"]


def test_a_frozen_cluster_is_named_with_its_command_and_the_five_others_roll_back(
        local_fleet: LocalFleet) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert local_fleet.deploy("library-app", version).code == 0
    local_fleet.edit(policy={"rollout_timeout": "20s"})  # how long prod-3 is waited for
    pid = agent_pid(local_fleet, "prod-3")
    os.kill(pid, signal.SIGSTOP)
    try:
        report = local_fleet.root / "rollback.json"
        done = local_fleet.wavegate("rollback", "library-app", "--all", "-f",
                                    str(local_fleet.fleet_file), "--report", str(report))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.code == 3, done.stderr
    others = [name for name in NAMES if name != "prod-3"]
    assert {name: newest(local_fleet, name) for name in others} == dict.fromkeys(
        others, ("1.0.0", "verified")), report.read_text()
    assert newest(local_fleet, "prod-3")[1] != "verified"  # not rolled back, and says so
    argv = printed_command(done.stderr, "prod-3", on_line="wavegate: prod-3:")
    assert argv[:5] == ["wavegate", "rollback", "library-app", "-c", "prod-3"]
    entry = next(c for c in json.loads(report.read_text())["clusters"]
                 if c["cluster"] == "prod-3")
    assert entry["state"] == "rollback-failed" and shlex.join(argv) in entry["detail"]

    finished = local_fleet.wavegate(*argv[1:])  # the printed command, as a human runs it
    assert finished.code == 0, finished.stderr
    assert set(versions(local_fleet).values()) == {"1.0.0"}
    assert {newest(local_fleet, name) for name in NAMES} == {("1.0.0", "verified")}
    assert all(row["lock"] is None for row in local_fleet.status().values())


def test_a_lock_file_deleted_by_hand_during_the_bake_is_taken_again_and_the_run_finishes(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    local_fleet.edit(bake={"canary": "4s"})
    deploy = subprocess.Popen(
        [sys.executable, "-m", "wavegate", "deploy", "library-app", "--version", "1.1.0",
         "-f", str(local_fleet.fleet_file)], cwd=local_fleet.root, env=local_fleet.env,
        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_reaches(local_fleet.root / ".wavegate" / "runs", "prod-0", "baking")
    for name in NAMES:
        (state_dir(local_fleet) / name / "locks" / "library-app.json").unlink()
    _, err = deploy.communicate(timeout=180)
    assert deploy.returncode == 0, err[-3000:]
    assert "lock_retaken" in err
    assert set(versions(local_fleet).values()) == {"1.1.0"}
    assert all(row["lock"] is None for row in local_fleet.status().values())


def test_stored_checks_that_no_longer_load_do_not_block_the_rollback(
        local_fleet: LocalFleet) -> None:
    for version in ("1.0.0", "1.1.0"):
        assert local_fleet.deploy("library-app", version).code == 0
    for name in NAMES:  # revision 1 (1.0.0) now carries checks this wavegate cannot load
        stored = state_dir(local_fleet) / name / "ledger" / "library-app" / "000001.release.json.gz"
        body = json.loads(gzip.decompress(stored.read_bytes()))
        stored.write_bytes(gzip.compress(json.dumps({**body, "checks": "checks: []\n"}).encode()))
    report = local_fleet.root / "rollback.json"
    done = local_fleet.wavegate("rollback", "library-app", "--all", "-f",
                                str(local_fleet.fleet_file), "--report", str(report))
    assert done.code == 3, done.stderr
    assert set(versions(local_fleet).values()) == {"1.0.0"}
    data = json.loads(report.read_text())
    assert data["exit_code"] == 3
    for entry in data["clusters"]:
        assert entry["state"] == "rolled-back", entry
        assert "its stored checks are unusable" in entry["detail"]
        assert "checks.yaml instead" in entry["detail"]
        assert {c["outcome"] for c in entry["checks"]} == {"pass"}
    assert "stored checks are unusable" in (data["message"] or "")


def test_a_deploys_own_rollback_uses_the_app_folders_checks_when_the_stored_ones_do_not_load(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    stored = state_dir(local_fleet) / "prod-0" / "ledger" / "library-app" / "000001.release.json.gz"
    body = json.loads(gzip.decompress(stored.read_bytes()))
    stored.write_bytes(gzip.compress(json.dumps({**body, "checks": "checks: []\n"}).encode()))
    report = local_fleet.root / "deploy.json"
    done = local_fleet.deploy("library-app", "2.0.0", "--report", str(report))  # the leak
    assert done.code == 3, done.stderr  # back on 1.0.0, but not proved by its own checks
    assert set(versions(local_fleet).values()) == {"1.0.0"}
    data = json.loads(report.read_text())
    canary = next(c for c in data["clusters"] if c["cluster"] == "prod-0")
    assert canary["state"] == "rolled-back", canary
    assert "its stored checks are unusable" in canary["detail"]
    assert "checks.yaml instead" in canary["detail"]
    assert [c["version"] for c in local_fleet.history("-c", "prod-1")] == ["1.0.0"]
