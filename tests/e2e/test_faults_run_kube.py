"""Run-loop faults on six real control planes (the kube sandbox), through the CLI: an API server
stopped (SIGSTOP) during the canary's rollout wait and during a bake, an API server killed and
started again mid-wave, an emergency rollback preempting a deploy mid-rollout, and 5xx storms
on the canary's check endpoint.

Faults are held and let go by events, never by sleeps: a pod whose readiness waits for a file
keeps a rollout open (`LIBRARY_FAIL=ready-when:PATH`), the run's journal and log say when it
reached a phase or noticed the fault, and SIGCONT or a restart ends the fault. Every test starts
from 1.0.0 everywhere on the e2e suites' shared sandbox and asserts, with kubectl, the image of
every cluster's Deployment and, where it matters, the ledger and the leases.

What a release engineer expects when an API server stops answering mid-run: the run does not
hang; a cluster whose state it can no longer see or record is failed (an unobserved rollout is
no pass) and the failure policy rolls back what the run changed; the cluster it cannot reach is
named (exit 3, `needs-human`), and an emergency rollback of it finishes the job once its API
server answers again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import APP, NAMES, KubeFleet, printed_command
from tests.waits import eventually
from wavegate.sandbox import controlplane

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def variant(kube: KubeFleet) -> Path:
    """The app (same name) with the fault knob: `--set fault=...` becomes LIBRARY_FAIL."""
    folder = kube.dir / "variant-fault-knob" / "library-app"
    if not folder.exists():
        shutil.copytree(APP, folder)
        configmap = folder / "configmap.yaml"
        configmap.write_text(configmap.read_text() + '  LIBRARY_FAIL: "${fault}"\n')
    return folder


def never_ready(path: Path) -> tuple[str, str]:
    """Deploy arguments whose new pods stay unready until `path` exists: a held rollout."""
    return "--set", f"fault=ready-when:{path}"


def expected(**by_cluster: str) -> dict[str, str]:
    """Every cluster's Deployment image as a test expects it: `by_cluster` (`prod_0` for
    prod-0), else `library-app:1.0.0`, the last-known-good every test starts from."""
    wanted = dict.fromkeys(NAMES, "library-app:1.0.0")
    wanted.update({name.replace("_", "-"): image for name, image in by_cluster.items()})
    return wanted


def never_saw(kube: KubeFleet, version: str, clusters: list[str]) -> None:
    """`clusters` never got a ReplicaSet of `version`: the run never touched them."""
    for name in clusters:
        assert f"library-app:{version}" not in kube.replicaset_images(name), name


def finish(kube: KubeFleet, cluster: str, out: str) -> None:
    """What a human does once `cluster` answers again: the command the deploy printed for it."""
    argv = printed_command(out, cluster)
    assert argv[:3] == ["wavegate", "rollback", "library-app"], argv
    done = kube.wavegate(*argv[1:])
    assert done.returncode == 0, done.stderr[-3000:]


def ended_while_stopped(deploy: subprocess.Popen[str], pid: int, tmp_path: Path) -> str:
    """Stop the API server PID until DEPLOY has ended (it must end on its own, not hang);
    its output, once it exited 3."""
    os.kill(pid, signal.SIGSTOP)
    try:
        out, err = deploy.communicate(timeout=400)
    finally:
        os.kill(pid, signal.SIGCONT)
    (tmp_path / "deploy.out").write_text(out + err)
    assert deploy.returncode == 3, err[-3000:]
    return out


def unlocked(kube: KubeFleet) -> None:
    rows = kube.status()
    assert all(row["lock"] is None for row in rows.values()), rows


# --- an API server that stops answering --------------------------------------------------------

def test_an_api_server_stopped_during_the_canarys_rollout_is_named_and_finished_later(
        kube: KubeFleet, tmp_path: Path) -> None:
    kube.reset("1.0.0")
    pid = kube.api_server_pid("prod-0")
    deploy = kube.start_deploy("4.1.0", variant(kube), *never_ready(tmp_path / "ready"))
    kube.reaches("prod-0", "rolling-out")  # held there: its new pods never get ready
    out = ended_while_stopped(deploy, pid, tmp_path)
    assert "needs-human: prod-0: " in out and "API server unreachable" in out, out
    # prod-0 keeps what was applied before it stopped answering; no other cluster was touched.
    assert kube.images() == expected(prod_0="library-app:4.1.0")
    never_saw(kube, "4.1.0", NAMES[1:])

    finish(kube, "prod-0", out)
    assert kube.images() == expected()
    unlocked(kube)


def test_an_api_server_stopped_during_a_bake_fails_safe_and_is_named(kube: KubeFleet,
                                                                    tmp_path: Path) -> None:
    kube.reset("1.0.0")
    pid = kube.api_server_pid("prod-3")
    with kube.edited(bake={"regions": "5s"}):
        deploy = kube.start_deploy("4.2.0")
        kube.reaches("prod-3", "baking")  # the canary verified; the regions wave bakes
        out = ended_while_stopped(deploy, pid, tmp_path)
    assert "needs-human: " in out and "prod-3: " in out, out
    assert "prod-0: rolled back with its wave; back on 1.0.0" in out, out
    # Every cluster the run changed and can reach is back on 1.0.0; the last wave never began.
    assert kube.images() == expected(prod_3="library-app:4.2.0")
    never_saw(kube, "4.2.0", ["prod-1", "prod-5"])

    finish(kube, "prod-3", out)
    assert kube.images() == expected()
    unlocked(kube)


def test_an_api_server_killed_and_started_again_mid_wave_lets_the_release_finish(
        kube: KubeFleet, tmp_path: Path) -> None:
    kube.reset("1.0.0")
    ready, log = tmp_path / "ready", tmp_path / "deploy.log"
    with kube.edited(policy={"rollout_timeout": "300s"}), log.open("w") as stderr:
        deploy = kube.start_deploy("4.3.0", variant(kube), *never_ready(ready), stderr=stderr)
        kube.reaches("prod-0", "rolling-out")  # the canary's rollout held open
        os.kill(kube.api_server_pid("prod-3"), signal.SIGKILL)
        eventually(lambda: renewal_failed(log, "prod-3"), timeout=120)  # the run saw it gone
        controlplane.restart_apiserver(kube.dir, "prod-3")
        ready.touch()  # the canary rolls out; the regions wave finds prod-3 answering again
        deploy.communicate(timeout=300)
    assert deploy.returncode == 0, log.read_text()[-3000:]
    assert kube.images() == dict.fromkeys(NAMES, "library-app:4.3.0")
    newest = {r["cluster"]: r for r in reversed(kube.history())}  # newest last, so it wins
    assert {name: (r["version"], r["status"]) for name, r in newest.items()} == dict.fromkeys(
        NAMES, ("4.3.0", "verified"))
    unlocked(kube)


def renewal_failed(log: Path, cluster: str) -> bool | None:
    """Whether the run's JSON log says it could not renew `cluster`'s lease."""
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "lock.renew_failed" and event.get("cluster") == cluster:
            return True
    return None


# --- preemption ---------------------------------------------------------------------------------

def writes(kube: KubeFleet, cluster: str) -> tuple[str, str, str]:
    """What a write to `cluster` changes: the Deployment's generation (its spec), the ledger
    Secrets' resourceVersions, and the lease's holder."""
    generation = kube.kubectl(cluster, "get", "deployment", "library-app", "-o",
                              "jsonpath={.metadata.generation}")
    ledger = kube.kubectl(cluster, "get", "secrets", "-o",
                          'jsonpath={range .items[?(@.type=="wavegate.dev/release")]}'
                          "{.metadata.name}={.metadata.resourceVersion} {end}")
    holder = kube.kubectl(cluster, "get", "lease", "wavegate-library-app", "-o",
                          "jsonpath={.spec.holderIdentity}")
    return generation, ledger, holder


def test_an_emergency_rollback_preempts_a_deploy_mid_rollout(kube: KubeFleet,
                                                             tmp_path: Path) -> None:
    kube.reset("1.0.0")
    deploy = kube.start_deploy("4.4.0", variant(kube), *never_ready(tmp_path / "ready"))
    kube.reaches("prod-0", "rolling-out")
    rollback = kube.wavegate("rollback", "library-app", "-c", "prod-0", "--to", "1.0.0",
                             "--reason", "preemption drill", "-f", str(kube.fleet_file))
    assert rollback.returncode == 0, rollback.stderr[-3000:]
    after_rollback = writes(kube, "prod-0")
    _, err = deploy.communicate(timeout=120)
    assert deploy.returncode == 4, err[-3000:]
    assert "lost the lock" in err
    assert writes(kube, "prod-0") == after_rollback  # the deploy wrote nothing after it
    assert after_rollback[2] == ""  # the rollback released the lease; nobody took it again
    assert kube.images() == expected()
    never_saw(kube, "4.4.0", NAMES[1:])
    records = kube.history("prod-0")
    assert records[0]["version"] == "1.0.0" and records[0]["status"] == "verified"
    assert [r["status"] for r in records if r["version"] == "4.4.0"] == ["rolled-back"]


# --- 5xx storms --------------------------------------------------------------------------------

def test_a_5xx_storm_on_the_canary_fails_safe_and_no_other_cluster_sees_the_release(
        kube: KubeFleet) -> None:
    kube.reset("1.0.0")
    with kube.edited(policy={"check_timeout": "2s"}):
        done = kube.deploy("4.5.0", "--set", "fault=error-5xx", app=variant(kube))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "consecutive check errors" in done.stdout  # errors, retried, then failed safe
    assert kube.images() == expected()
    assert "library-app:4.5.0" in kube.replicaset_images("prod-0")  # it was there, and undone
    never_saw(kube, "4.5.0", NAMES[1:])
    assert [r["status"] for r in kube.history("prod-0") if r["version"] == "4.5.0"] == [
        "rolled-back"]


def test_a_5xx_storm_that_stops_before_max_check_errors_lets_the_release_pass(
        kube: KubeFleet) -> None:
    kube.reset("1.0.0")
    done = kube.wavegate("--log-format", "json", "deploy", str(variant(kube)), "--version",
                         "4.6.0", "-f", str(kube.fleet_file), "--set", "fault=error-5xx-first-2")
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    retried = [e for e in events if e.get("event") == "check.retry"]
    assert retried and all("500" in str(e["detail"]) for e in retried)  # the storm was met
    assert kube.images() == dict.fromkeys(NAMES, "library-app:4.6.0")
    assert {r["status"] for r in kube.history() if r["version"] == "4.6.0"} == {"verified"}
