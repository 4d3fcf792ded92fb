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
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import run_reaches, sandbox_binaries
from wavegate.sandbox import kubefleet

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"LIBRARY_TOKEN_ALICE": "e2e-alice-Yh3", "LIBRARY_TOKEN_BOB": "e2e-bob-Lk9",
          "LIBRARY_TOKEN_CAROL": "e2e-carol-Qs4"}
NAMES = [f"prod-{n}" for n in range(6)]


@dataclass
class KubeFleet:
    dir: Path
    env: dict[str, str]

    @property
    def fleet_file(self) -> Path:
        return self.dir / "fleet.yaml"

    def wavegate(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=self.dir,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def deploy(self, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.wavegate("deploy", str(REPO / "manifests" / "library-app"), "--version",
                             version, "-f", str(self.fleet_file), *extra)

    def start_deploy(self, version: str, app: Path | None = None) -> subprocess.Popen[str]:
        """A deploy in the background, as a CI job runs it."""
        return subprocess.Popen(
            [sys.executable, "-m", "wavegate", "deploy",
             str(app or REPO / "manifests" / "library-app"), "--version", version,
             "-f", str(self.fleet_file)], cwd=self.dir, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def kubectl(self, cluster: str, *args: str) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.dir / "kubeconfig"),
                               "--context", cluster, "-n", "library", *args],
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    def image(self, cluster: str) -> str:
        return self.kubectl(cluster, "get", "deployment", "library-app", "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}")

    def replicaset_images(self, cluster: str) -> set[str]:
        out = self.kubectl(cluster, "get", "replicasets", "-o",
                           "jsonpath={.items[*].spec.template.spec.containers[0].image}")
        return set(out.split())

    def status(self) -> dict[str, Any]:
        done = self.wavegate("status", "library-app", "-f", str(self.fleet_file), "-o", "json")
        return {row["cluster"]: row for row in json.loads(done.stdout)["clusters"]}

    def api_server_pid(self, cluster: str) -> int:
        state = json.loads((self.dir / "sandbox.json").read_text())
        return next(p["pid"] for p in state["processes"]
                    if "kube-apiserver" in p["argv"][0]
                    and f"--etcd-prefix=/registry-{cluster}" in p["argv"])

    def reaches(self, cluster: str, state: str) -> None:
        """Wait until the run in progress shows `cluster` in `state` (its journal says so)."""
        run_reaches(self.dir / ".wavegate" / "runs", cluster, state)

    def set_bake(self, wave: str, bake: str) -> None:
        document = yaml.safe_load(self.fleet_file.read_text())
        next(w for w in document["waves"] if w["name"] == wave)["bake"] = bake
        self.fleet_file.write_text(yaml.safe_dump(document))


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeFleet]:
    sandbox_binaries()
    root = tmp_path_factory.mktemp("kube")
    source = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    source["local"].pop("state_dir")
    for wave, bake in zip(source["waves"], ("1s", "500ms", "500ms"), strict=True):
        wave["bake"] = bake
    source["policy"].update(check_interval="500ms", watch="0s", rollout_timeout="90s")
    (root / "source.yaml").write_text(yaml.safe_dump(source))
    os.environ.update(TOKENS)  # the sandbox stores them in each cluster's Secret
    env = {**os.environ, **TOKENS, "PYTHONPATH": str(REPO / "src")}
    # Started as a user would, from a folder of their own with no manifests/ in it: the
    # deployer's role must come with wavegate, or every deploy below exits 3 "forbidden".
    started = subprocess.run(
        [sys.executable, "-m", "wavegate", "fleet", "up", "--kube", "-f", "source.yaml",
         "--dir", "sandbox"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    fleet = KubeFleet(root / "sandbox", env)
    yield fleet
    kubefleet.down(root / "sandbox")


def test_a_good_release_lands_everywhere_and_kubectl_agrees(kube: KubeFleet) -> None:
    done = kube.deploy("1.0.0")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.0.0", name
    assert {row["live_version"] for row in kube.status().values()} == {"1.0.0"}


def test_the_regression_stops_at_the_canary_and_no_other_cluster_gets_it(
        kube: KubeFleet) -> None:
    done = kube.deploy("2.0.0")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "security" in done.stdout
    assert kube.image("prod-0") == "library-app:1.0.0"
    assert "library-app:2.0.0" in kube.replicaset_images("prod-0")  # it was there, and undone
    for name in NAMES[1:]:
        assert "library-app:2.0.0" not in kube.replicaset_images(name), name


def test_emergency_rollback_of_all_six(kube: KubeFleet) -> None:
    assert kube.deploy("1.1.0").returncode == 0
    done = kube.wavegate("rollback", "library-app", "--all", "--reason", "e2e drill", "-f",
                         str(kube.fleet_file))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.0.0", name


def test_a_second_deploy_while_one_runs_exits_4(kube: KubeFleet) -> None:
    kube.set_bake("canary", "20s")
    try:
        first = kube.start_deploy("1.2.0")
        kube.reaches("prod-0", "baking")  # it holds every cluster's lock by now
        second = kube.deploy("1.3.0")
        assert second.returncode == 4, second.stderr[-2000:]
        assert "locked by run" in second.stderr
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    finally:
        kube.set_bake("canary", "1s")
    assert kube.wavegate("resume").returncode == 0


def test_an_api_server_lost_mid_wave_is_named_and_a_later_rollback_finishes(
        kube: KubeFleet) -> None:
    pid = kube.api_server_pid("prod-3")
    before = kube.status()["prod-3"]["live_version"]
    kube.set_bake("canary", "8s")
    try:
        deploy = kube.start_deploy("1.4.0")
        kube.reaches("prod-0", "baking")  # then prod-3's API server stops answering
        os.kill(pid, signal.SIGSTOP)
        out, err = deploy.communicate(timeout=400)
    finally:
        os.kill(pid, signal.SIGCONT)
        kube.set_bake("canary", "1s")
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


def _set_policy(kube: KubeFleet, **policy: object) -> None:
    document = yaml.safe_load(kube.fleet_file.read_text())
    document["policy"].update(policy)
    kube.fleet_file.write_text(yaml.safe_dump(document))


def test_an_approval_gate_pauses_and_promote_continues_from_a_new_process(
        kube: KubeFleet) -> None:
    _set_policy(kube, approval=["regions"])
    try:
        paused = kube.deploy("1.5.0")
        assert paused.returncode == 10, paused.stderr[-3000:]
        run_id = paused.stdout.split("wavegate promote ", 1)[1].split("`", 1)[0]
        assert kube.image("prod-0") == "library-app:1.5.0"
        assert kube.image("prod-2") != "library-app:1.5.0"
        promoted = kube.wavegate("promote", run_id)
        assert promoted.returncode == 0, promoted.stderr[-3000:]
    finally:
        _set_policy(kube, approval=[])
    for name in NAMES:
        assert kube.image(name) == "library-app:1.5.0", name


def test_sigkill_mid_bake_then_resume_finishes_on_kubernetes(kube: KubeFleet) -> None:
    kube.set_bake("regions", "30s")
    try:
        deploy = kube.start_deploy("1.6.0")
        kube.reaches("prod-4", "baking")  # the regions wave is baking
        deploy.kill()
        deploy.communicate()
    finally:
        kube.set_bake("regions", "500ms")
    assert kube.image("prod-1") != "library-app:1.6.0"  # the last wave was never reached
    resumed = kube.wavegate("resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in NAMES:
        assert kube.image(name) == "library-app:1.6.0", name
    assert all(row["lock"] is None for row in kube.status().values())


def test_plan_shows_the_server_side_dry_run_and_writes_nothing(kube: KubeFleet) -> None:
    before = kube.image("prod-0")
    done = kube.wavegate("plan", str(REPO / "manifests" / "library-app"), "--version", "9.9.9",
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
    runs = [kube.wavegate("-v", "--log-format", "json", "deploy",
                          str(REPO / "manifests" / "library-app"), "--version", "2.0.0",
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
    before = kube.image("prod-0")
    original = kube.fleet_file.read_text()
    _set_policy(kube, rollout_timeout="15s", check_timeout="2s")
    version = "2.0.0" if not fault else "3.0.0"
    try:
        deploy = kube.start_deploy(version, _variant(kube, fault) if fault else None)
        kube.reaches("prod-0", phase)
        deploy.kill()
        deploy.communicate()
        resumed = kube.wavegate("resume")
    finally:
        kube.fleet_file.write_text(original)
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    assert kube.image("prod-0") == before
    for name in NAMES[1:]:
        assert f"library-app:{version}" not in kube.replicaset_images(name), name
    assert all(row["lock"] is None for row in kube.status().values())
