"""wavegate against six real Kubernetes control planes (the kube sandbox), through its CLI.

What a release engineer relies on: a good release lands everywhere (kubectl, a client no one
here wrote, agrees); the regression stops at prod-0 and no other cluster ever gets a
ReplicaSet of it; emergency rollback takes all six back; an API server that stops answering
mid-wave is named (exit 3) while the rest roll back, and a later rollback finishes the job;
a second deploy while one runs exits 4.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import APP, NAMES, REPO, TOKENS, KubeFleet

pytestmark = pytest.mark.e2e


def test_a_good_release_lands_everywhere_and_kubectl_agrees(kube: KubeFleet) -> None:
    done = kube.deploy("1.0.0")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.0.0", name
    assert {row["live_version"] for row in kube.status().values()} == {"1.0.0"}


def test_the_regression_stops_at_the_canary_and_no_other_cluster_gets_it(
        kube: KubeFleet) -> None:
    kube.reset("1.0.0")
    done = kube.deploy("2.0.0")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "security" in done.stdout
    assert kube.image("prod-0") == "library-app:1.0.0"
    assert "library-app:2.0.0" in kube.replicaset_images("prod-0")  # it was there, and undone
    for name in NAMES[1:]:
        assert "library-app:2.0.0" not in kube.replicaset_images(name), name


def test_emergency_rollback_of_all_six(kube: KubeFleet) -> None:
    kube.reset("1.0.0")
    assert kube.deploy("1.1.0").returncode == 0
    done = kube.wavegate("rollback", "library-app", "--all", "--reason", "e2e drill", "-f",
                         str(kube.fleet_file))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.0.0", name


def test_a_second_deploy_while_one_runs_exits_4(kube: KubeFleet) -> None:
    with kube.edited(bake={"canary": "20s"}):
        first = kube.start_deploy("1.2.0")
        kube.reaches("prod-0", "baking")  # it holds every cluster's lock by now
        second = kube.deploy("1.3.0")
        assert second.returncode == 4, second.stderr[-2000:]
        assert "locked by run" in second.stderr
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    resumed = kube.wavegate("resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]


def test_an_api_server_lost_mid_wave_is_named_and_a_later_rollback_finishes(
        kube: KubeFleet) -> None:
    pid = kube.api_server_pid("prod-3")
    before = kube.status()["prod-3"]["live_version"]
    with kube.edited(bake={"canary": "8s"}):
        deploy = kube.start_deploy("1.4.0")
        kube.reaches("prod-0", "baking")  # then prod-3's API server stops answering
        os.kill(pid, signal.SIGSTOP)
        try:
            out, err = deploy.communicate(timeout=400)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert deploy.returncode == 3, err[-3000:]
    assert "prod-3" in out
    for name in ("prod-0", "prod-2", "prod-4"):
        assert kube.image(name) != "library-app:1.4.0", name
    for name in ("prod-1", "prod-5"):
        assert "library-app:1.4.0" not in kube.replicaset_images(name), name
    done = kube.wavegate("rollback", "library-app", "-c", "prod-3", "--to", before,
                         "--reason", "finish the job", "-f", str(kube.fleet_file))
    assert done.returncode == 0, done.stderr[-3000:]
    assert kube.image("prod-3") == f"library-app:{before}"
    assert kube.status()["prod-3"]["lock"] is None


def test_an_approval_gate_pauses_and_promote_continues_from_a_new_process(
        kube: KubeFleet) -> None:
    with kube.edited(policy={"approval": ["regions"]}):
        paused = kube.deploy("1.5.0")
        assert paused.returncode == 10, paused.stderr[-3000:]
        run_id = paused.stdout.split("wavegate promote ", 1)[1].split("`", 1)[0]
        assert kube.image("prod-0") == "library-app:1.5.0"
        assert kube.image("prod-2") != "library-app:1.5.0"
        promoted = kube.wavegate("promote", run_id)
        assert promoted.returncode == 0, promoted.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.5.0", name


def test_sigkill_mid_bake_then_resume_finishes_on_kubernetes(kube: KubeFleet) -> None:
    with kube.edited(bake={"regions": "30s"}):
        deploy = kube.start_deploy("1.6.0")
        kube.reaches("prod-4", "baking")  # the regions wave is baking
        deploy.kill()
        deploy.communicate()
    assert kube.image("prod-1") != "library-app:1.6.0"  # the last wave was never reached
    resumed = kube.wavegate("resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.6.0", name
    assert all(row["lock"] is None for row in kube.status().values())


def test_plan_shows_the_server_side_dry_run_and_writes_nothing(kube: KubeFleet) -> None:
    before = kube.image("prod-0")
    done = kube.wavegate("plan", str(APP), "--version", "9.9.9",
                         "-f", str(kube.fleet_file), "-o", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(done.stdout)
    canary = plan["waves"][0]["clusters"][0]
    assert canary["source"] == "dry-run"
    assert "+        image: library-app:9.9.9" in canary["diff"]
    assert kube.image("prod-0") == before  # a dry run writes nothing


def test_no_token_or_kube_credential_appears_in_any_output(kube: KubeFleet) -> None:
    kubeconfig = yaml.safe_load((kube.dir / "kubeconfig").read_text())
    credentials = [user["user"]["token"] for user in kubeconfig["users"]
                   if "token" in user.get("user", {})]
    assert credentials  # the sandbox's admin and deployer tokens
    report = kube.dir / "leak-report.json"
    runs = [kube.wavegate("-v", "--log-format", "json", "deploy", str(APP), "--version", "2.0.0",
                          "-f", str(kube.fleet_file), "--report", str(report)),
            kube.wavegate("-v", "history", "library-app", "-f", str(kube.fleet_file),
                          "-o", "json")]
    assert runs[0].returncode == 1
    texts = [run.stdout + run.stderr for run in runs] + [report.read_text()]
    texts += [p.read_text() for p in (kube.dir / ".wavegate" / "runs").glob("*.json")]
    for secret in [*TOKENS.values(), *credentials]:
        assert not any(secret in text for text in texts), f"leaked: {secret[:6]}..."


def _variant(kube: KubeFleet, fault: str) -> Path:
    """A copy of the app (same name) whose pods misbehave as LIBRARY_FAIL says."""
    folder = kube.dir / f"variant-{fault}" / "library-app"
    if not folder.exists():
        shutil.copytree(REPO / "manifests" / "library-app", folder)
        configmap = folder / "configmap.yaml"
        configmap.write_text(configmap.read_text() + f'  LIBRARY_FAIL: "{fault}"\n')
    return folder


@pytest.mark.parametrize(("fault", "phase"), [
    ("never-ready", "rolling-out"),
    ("error-5xx", "verifying"),
    ("", "rolling-back"),  # 2.0.0, the regression, on its way back
])
def test_sigkill_in_each_phase_then_resume_applies_the_failure_policy(
        kube: KubeFleet, fault: str, phase: str) -> None:
    kube.reset("1.0.0")
    before = kube.image("prod-0")
    version = "2.0.0" if not fault else "3.0.0"
    with kube.edited(policy={"rollout_timeout": "15s", "check_timeout": "2s"}):
        deploy = kube.start_deploy(version, _variant(kube, fault) if fault else None)
        kube.reaches("prod-0", phase)
        deploy.kill()
        deploy.communicate()
        resumed = kube.wavegate("resume")
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    assert kube.image("prod-0") == before
    for name in NAMES[1:]:
        assert f"library-app:{version}" not in kube.replicaset_images(name), name
    assert all(row["lock"] is None for row in kube.status().values())
