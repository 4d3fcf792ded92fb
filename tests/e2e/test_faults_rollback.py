"""Faults during rollbacks and under held locks, on six real control planes (the kube sandbox),
through the CLI: an API server stopped (SIGSTOP) during `rollback --all`, a Lease deleted by
hand during a bake, a token variable the stored checks name gone. One sandbox serves the module;
every test asserts where every cluster ends, with kubectl.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import run_reaches, sandbox_binaries
from wavegate.sandbox import kubefleet

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"LIBRARY_TOKEN_ALICE": "e2e-alice-Rf7", "LIBRARY_TOKEN_BOB": "e2e-bob-Tp2",
          "LIBRARY_TOKEN_CAROL": "e2e-carol-Wz5"}
NAMES = [f"prod-{n}" for n in range(6)]
APP = str(REPO / "manifests" / "library-app")


@dataclass
class Sandbox:
    dir: Path
    env: dict[str, str]

    @property
    def fleet_file(self) -> Path:
        return self.dir / "fleet.yaml"

    def wavegate(self, *args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=self.dir,
                              env=env or self.env, capture_output=True, text=True, timeout=300)

    def kubectl(self, cluster: str, *args: str) -> str:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.dir / "kubeconfig"),
                               "--context", cluster, "-n", "library", *args],
                              capture_output=True, text=True, timeout=60, check=True).stdout

    def images(self) -> dict[str, str]:
        return {name: self.kubectl(name, "get", "deployment", "library-app", "-o",
                                   "jsonpath={.spec.template.spec.containers[0].image}")
                for name in NAMES}

    def api_server_pid(self, cluster: str) -> int:
        state = json.loads((self.dir / "sandbox.json").read_text())
        return next(p["pid"] for p in state["processes"]
                    if "kube-apiserver" in p["argv"][0]
                    and f"--etcd-prefix=/registry-{cluster}" in p["argv"])

    def set_bake(self, wave: str, bake: str) -> None:
        document = yaml.safe_load(self.fleet_file.read_text())
        next(w for w in document["waves"] if w["name"] == wave)["bake"] = bake
        self.fleet_file.write_text(yaml.safe_dump(document))


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sandbox_binaries("kubectl")
    root = tmp_path_factory.mktemp("kube-faults")
    source = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    source["local"].pop("state_dir")
    for wave, bake in zip(source["waves"], ("1s", "500ms", "500ms"), strict=True):
        wave["bake"] = bake
    source["policy"].update(check_interval="500ms", watch="0s", rollout_timeout="90s")
    (root / "source.yaml").write_text(yaml.safe_dump(source))
    env = {**os.environ, **TOKENS, "PYTHONPATH": str(REPO / "src")}
    started = subprocess.run(
        [sys.executable, "-m", "wavegate", "fleet", "up", "--kube", "-f", "source.yaml",
         "--dir", "sandbox"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    sandbox = Sandbox(root / "sandbox", env)
    for version in ("1.0.0", "1.1.0"):
        done = sandbox.wavegate("deploy", APP, "--version", version, "-f",
                                str(sandbox.fleet_file))
        assert done.returncode == 0, done.stderr[-3000:]
    yield sandbox
    kubefleet.down(root / "sandbox")


def test_a_stopped_api_server_is_named_and_its_command_finishes_the_job(kube: Sandbox) -> None:
    assert set(kube.images().values()) == {"library-app:1.1.0"}
    pid = kube.api_server_pid("prod-3")
    report = kube.dir / "rollback.json"
    os.kill(pid, signal.SIGSTOP)
    try:
        done = kube.wavegate("rollback", "library-app", "--all", "--reason", "leak", "-f",
                             str(kube.fleet_file), "--report", str(report))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 3, done.stderr[-3000:]
    images = kube.images()
    assert {name: images[name] for name in NAMES if name != "prod-3"} == dict.fromkeys(
        [name for name in NAMES if name != "prod-3"], "library-app:1.0.0")
    assert images["prod-3"] == "library-app:1.1.0"  # untouched while it did not answer

    line = next(line for line in done.stderr.splitlines()
                if line.startswith("wavegate: prod-3: not reached"))
    command = line.split("finish with `", 1)[1].split("`", 1)[0]
    argv = shlex.split(command)
    assert argv[:5] == ["wavegate", "rollback", "library-app", "-c", "prod-3"]
    entry = next(c for c in json.loads(report.read_text())["clusters"]
                 if c["cluster"] == "prod-3")
    assert entry["state"] == "rollback-failed" and command in entry["detail"]

    finished = kube.wavegate(*argv[1:])  # the printed command, once prod-3 answers again
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert set(kube.images().values()) == {"library-app:1.0.0"}


def test_a_lease_deleted_by_hand_during_the_bake_is_taken_again(kube: Sandbox) -> None:
    kube.set_bake("canary", "6s")
    try:
        deploy = subprocess.Popen(
            [sys.executable, "-m", "wavegate", "deploy", APP, "--version", "1.2.0", "-f",
             str(kube.fleet_file)], cwd=kube.dir, env=kube.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        run_reaches(kube.dir / ".wavegate" / "runs", "prod-0", "baking")
        for name in NAMES:
            kube.kubectl(name, "delete", "lease", "wavegate-library-app")
        _, err = deploy.communicate(timeout=300)
    finally:
        kube.set_bake("canary", "1s")
    assert deploy.returncode == 0, err[-3000:]
    assert "kube.lock_retaken" in err
    assert set(kube.images().values()) == {"library-app:1.2.0"}
    for name in NAMES:  # released at the end: kept, with no holder
        holder = kube.kubectl(name, "get", "lease", "wavegate-library-app", "-o",
                              "jsonpath={.spec.holderIdentity}")
        assert holder == "", name


def test_a_token_variable_gone_does_not_block_the_rollback(kube: Sandbox) -> None:
    assert set(kube.images().values()) == {"library-app:1.2.0"}
    env = {key: value for key, value in kube.env.items() if key != "LIBRARY_TOKEN_ALICE"}
    report = kube.dir / "rollback-no-token.json"
    done = kube.wavegate("rollback", "library-app", "--all", "--reason", "leak", "-f",
                         str(kube.fleet_file), "--report", str(report), env=env)
    assert done.returncode == 3, done.stderr[-3000:]
    assert set(kube.images().values()) == {"library-app:1.0.0"}
    data = json.loads(report.read_text())
    for entry in data["clusters"]:
        assert entry["state"] == "rolled-back", entry
        assert "LIBRARY_TOKEN_ALICE" in entry["detail"]
        assert "judged by its rollout only" in entry["detail"]
    assert TOKENS["LIBRARY_TOKEN_BOB"] not in report.read_text()
