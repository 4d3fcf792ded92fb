"""Run-loop faults on the local fleet: signals in every phase, a resume racing a live run, and
an emergency rollback preempting a deploy. Real agents, pods and HTTP on loopback.

Phases are held open by events, never by sleeps: the ledger's flock (held by the test) keeps a
step from writing, a pod whose readiness waits for a file keeps a rollout open, a check
endpoint that never answers keeps a verification open. Each test then asserts where every
cluster ended: the version its pods serve, its ledger, and its lock.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import LocalFleet
from wavegate import filestore
from wavegate.localfleet import supervisor

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CLUSTERS = ("prod-0", "prod-2", "prod-3")
FAULTY = {"LIBRARY_FAIL": "${fault}"}


@pytest.fixture
def fleet(local_fleet: LocalFleet) -> LocalFleet:
    """Three clusters in two waves, one replica each, with the fault knob in the app."""
    document = yaml.safe_load(local_fleet.fleet_file.read_text())
    document["clusters"] = [c for c in document["clusters"] if c["name"] in CLUSTERS]
    document["waves"] = [{"name": "canary", "clusters": ["prod-0"], "bake": "500ms"},
                         {"name": "regions", "clusters": ["prod-2", "prod-3"],
                          "max_parallel": 2, "bake": "500ms"}]
    document["defaults"]["values"]["replicas"] = 1
    local_fleet.fleet_file.write_text(yaml.safe_dump(document))
    local_fleet.app_variant("faulty", configmap_extra=FAULTY)
    return local_fleet


def app(fleet: LocalFleet) -> str:
    return str(fleet.root / "faulty" / "library-app")


def deploy(fleet: LocalFleet, version: str) -> Any:
    return fleet.deploy(app(fleet), version)


def start(fleet: LocalFleet, version: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "wavegate", "deploy", app(fleet), "--version", version,
         "-f", str(fleet.fleet_file)], cwd=fleet.root, env=fleet.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(fleet: LocalFleet, cluster: str, state: str) -> str:
    """The run id once `cluster` is in `state` (a fault run's first rollout may be slow)."""
    return fleet.wait_for_state(cluster, state, timeout=90)


def serving(fleet: LocalFleet) -> dict[str, str]:
    """The version each cluster's pods answer with, asked through its ingress."""
    found = {}
    for name in CLUSTERS:
        info = supervisor.is_running(fleet.root / "state" / name)
        assert info is not None, f"{name}: agent not running"
        found[name] = httpx.get(f"{info.ingress}/version", timeout=10).json()["version"]
    return found


def ledger(fleet: LocalFleet, *, released: bool = True) -> dict[str, str | None]:
    rows = fleet.status()
    if released:  # a SIGKILLed run cannot release its locks: they lapse, or resume takes them
        assert all(rows[name]["lock"] is None for name in CLUSTERS), rows
    return {name: rows[name]["live_version"] for name in CLUSTERS}


def statuses(fleet: LocalFleet, cluster: str, version: str) -> list[str]:
    return [r["status"] for r in fleet.history("-c", cluster) if r["version"] == version]


def on(fleet: LocalFleet, version: str | dict[str, str], *, released: bool = True) -> None:
    """Every cluster serves and records `version` (or the version given per cluster)."""
    wanted = version if isinstance(version, dict) else dict.fromkeys(CLUSTERS, version)
    assert serving(fleet) == wanted
    assert ledger(fleet, released=released) == wanted


@contextlib.contextmanager
def ledger_held(fleet: LocalFleet, cluster: str) -> Iterator[None]:
    """Hold `cluster`'s ledger flock: whoever writes its ledger next waits until the block ends."""
    with filestore.exclusive(fleet.root / "state" / cluster / "ledger" / "library-app" / ".lock"):
        yield


def ended(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


# --- SIGTERM and SIGKILL in every phase ------------------------------------------------------

def test_sigterm_while_applying_puts_the_canary_back_and_resume_finishes(fleet: LocalFleet) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    with ledger_held(fleet, "prod-0"):
        process = start(fleet, "1.1.0")
        wait_for(fleet, "prod-0", "applying")
        process.send_signal(signal.SIGTERM)
    code, stderr = ended(process)
    assert code == 3, stderr
    on(fleet, "1.0.0")
    assert statuses(fleet, "prod-0", "1.1.0") == ["interrupted"]
    assert fleet.wavegate("resume").code == 0
    on(fleet, "1.1.0")


def test_sigkill_while_applying_then_resume_finishes(fleet: LocalFleet) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    with ledger_held(fleet, "prod-0"):
        process = start(fleet, "1.1.0")
        wait_for(fleet, "prod-0", "applying")
        process.kill()
        ended(process)
    on(fleet, "1.0.0", released=False)  # it never got to write: nothing of 1.1.0 anywhere
    assert all(statuses(fleet, name, "1.1.0") == [] for name in CLUSTERS)
    assert fleet.wavegate("resume").code == 0
    on(fleet, "1.1.0")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_signal_during_the_rollout_wait(fleet: LocalFleet, kill: bool) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    ready = fleet.root / "prod-0-ready"
    fleet.set_values("prod-0", fault=f"ready-when:{ready}")
    process = start(fleet, "1.1.0")
    wait_for(fleet, "prod-0", "rolling-out")
    if kill:
        process.kill()
        ended(process)
        assert statuses(fleet, "prod-0", "1.1.0") == ["applying"]  # resume's to finish
    else:
        process.send_signal(signal.SIGTERM)
        code, stderr = ended(process)
        assert code == 3, stderr
        on(fleet, "1.0.0")  # the unready 1.1.0 is gone, not left half rolled out
        assert statuses(fleet, "prod-0", "1.1.0") == ["interrupted"]
    ready.touch()
    assert fleet.wavegate("resume").code == 0
    on(fleet, "1.1.0")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_signal_during_the_first_verification(fleet: LocalFleet, kill: bool) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    fleet.set_values("prod-0", fault="hang")  # its checks never get an answer
    process = start(fleet, "1.1.0")
    wait_for(fleet, "prod-0", "verifying")
    if kill:
        process.kill()
        ended(process)
        # Killed: the unverified pods are still there; resume verifies them (they still hang,
        # a ConfigMap change does not restart a pod), fails safe and rolls back.
        assert serving(fleet)["prod-0"] == "1.1.0"
        resumed = fleet.wavegate("resume")
        assert resumed.code == 1, resumed.stderr
        on(fleet, "1.0.0")
        return
    process.send_signal(signal.SIGTERM)
    code, stderr = ended(process)
    assert code == 3, stderr
    assert "cluster.verified" not in stderr  # an interrupted verification is no pass
    assert "run.interrupted" in stderr
    on(fleet, "1.0.0")  # the unverified release is not left live
    assert statuses(fleet, "prod-0", "1.1.0") == ["interrupted"]
    fleet.set_values("prod-0", fault="")
    assert fleet.wavegate("resume").code == 0  # deploys it again, now healthy
    on(fleet, "1.1.0")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_signal_during_the_bake_keeps_the_verified_canary(fleet: LocalFleet,
                                                            kill: bool) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    fleet.edit(bake={"canary": "60s"})
    process = start(fleet, "1.1.0")
    wait_for(fleet, "prod-0", "baking")
    (process.kill if kill else process.terminate)()
    code, stderr = ended(process)
    assert kill or code == 3, stderr
    # It passed its first verification: it stays, and resume bakes it again.
    on(fleet, {"prod-0": "1.1.0", "prod-2": "1.0.0", "prod-3": "1.0.0"}, released=not kill)
    assert statuses(fleet, "prod-0", "1.1.0") == ["applying" if kill else "interrupted"]
    fleet.edit(bake={"canary": "500ms"})
    assert fleet.wavegate("resume").code == 0
    on(fleet, "1.1.0")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_signal_during_the_watch_keeps_every_verified_cluster(fleet: LocalFleet,
                                                                kill: bool) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    fleet.edit(policy={"watch": "60s"})
    process = start(fleet, "1.1.0")
    wait_for(fleet, "prod-3", "verified")
    wait_for(fleet, "prod-2", "verified")
    (process.kill if kill else process.terminate)()
    code, stderr = ended(process)
    assert kill or code == 3, stderr
    on(fleet, "1.1.0", released=not kill)
    assert all(statuses(fleet, name, "1.1.0") == ["verified"] for name in CLUSTERS)
    fleet.edit(policy={"watch": "0s"})
    assert fleet.wavegate("resume").code == 0
    on(fleet, "1.1.0")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_a_signal_during_the_rollback_still_ends_on_the_last_known_good(
        fleet: LocalFleet, kill: bool) -> None:
    ready = fleet.root / "prod-0-ready"
    ready.touch()
    fleet.set_values("prod-0", fault=f"ready-when:{ready}")  # 1.0.0 is ready while it exists
    assert deploy(fleet, "1.0.0").code == 0
    fleet.set_values("prod-0", fault="")
    process = start(fleet, "2.0.0")  # the leak: its checks fail, the canary is rolled back
    wait_for(fleet, "prod-0", "rolling-out")
    ready.unlink()  # the rollback to 1.0.0 now waits for it
    wait_for(fleet, "prod-0", "rolling-back")
    (process.kill if kill else process.terminate)()
    if kill:
        ended(process)
        ready.touch()
        resumed = fleet.wavegate("resume")
        assert resumed.code == 1, resumed.stderr  # the failure policy, finished
    else:
        ready.touch()  # the run goes on rolling back; the signal does not leave 2.0.0 live
        code, stderr = ended(process)
        assert code == 1, stderr
    on(fleet, "1.0.0")
    assert statuses(fleet, "prod-0", "2.0.0") == ["rolled-back"]


# --- one process per run -----------------------------------------------------------------------

def test_resume_refuses_a_run_whose_process_is_alive(fleet: LocalFleet) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    fleet.edit(bake={"canary": "60s"})
    process = start(fleet, "1.1.0")
    run_id = wait_for(fleet, "prod-0", "baking")
    holder = fleet.status()["prod-0"]["lock"]["holder"]
    assert holder.startswith(f"{run_id}/")  # the run id and this process's token
    refused = fleet.wavegate("resume", run_id)
    assert refused.code == 4
    assert f"pid {process.pid}" in refused.stderr
    assert fleet.status()["prod-0"]["lock"]["holder"] == holder  # its lease untouched
    process.terminate()
    code, stderr = ended(process)
    assert code == 3, stderr
    on(fleet, {"prod-0": "1.1.0", "prod-2": "1.0.0", "prod-3": "1.0.0"})


# --- preemption wins ---------------------------------------------------------------------------

def test_an_emergency_rollback_preempts_a_deploy_mid_rollout(fleet: LocalFleet) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    ready = fleet.root / "prod-0-ready"
    fleet.set_values("prod-0", fault=f"ready-when:{ready}")
    process = start(fleet, "1.1.0")
    wait_for(fleet, "prod-0", "rolling-out")
    rollback = fleet.wavegate("rollback", "library-app", "-c", "prod-0", "--to", "1.0.0",
                              "-f", str(fleet.fleet_file))
    assert rollback.code == 0, rollback.stderr
    code, stderr = ended(process)
    assert code == 4, stderr
    assert "lost the lock" in stderr
    assert "cluster.failed" not in stderr, stderr  # its wait saw the lock go: judged nothing
    on(fleet, "1.0.0")  # the rollback's result stands
    assert statuses(fleet, "prod-0", "1.1.0") == ["rolled-back"]  # its word, not the deploy's
    assert [r["status"] for r in fleet.history("-c", "prod-0")][:1] == ["verified"]


def test_an_emergency_rollback_preempts_a_deploy_mid_apply(fleet: LocalFleet) -> None:
    assert deploy(fleet, "1.0.0").code == 0
    with ledger_held(fleet, "prod-0"):
        process = start(fleet, "1.1.0")
        wait_for(fleet, "prod-0", "applying")
        rollback = subprocess.Popen(
            [sys.executable, "-m", "wavegate", "rollback", "library-app", "-c", "prod-0",
             "--to", "1.0.0", "-f", str(fleet.fleet_file)], cwd=fleet.root, env=fleet.env,
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rolled_back, _ = ended(rollback), None
    assert rolled_back[0] == 0, rolled_back[1]
    code, stderr = ended(process)
    assert code == 4, stderr
    on(fleet, "1.0.0")
    assert all(statuses(fleet, name, "1.1.0") == [] for name in CLUSTERS)  # never written
