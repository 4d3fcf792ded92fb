"""Shared by the e2e suites: the sandbox's binaries, an admin client, waits, and one six-cluster
kube fleet (`kube`) that the CLI suites share, started once per session.

Where the kube sandbox cannot run, the suites skip, except under CI. Every wait here polls a
condition a user could see (an object, a run's journal) up to a bound; none sleeps a fixed time.
A test on the shared fleet starts from a state it sets (`KubeFleet.reset`) and undoes its fleet
file edits (`KubeFleet.edited`), so the suites run in any order and alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.waits import eventually
from wavegate.sandbox import controlplane, kubefleet

TIMEOUT = 10  # seconds for each admin API call: the Python client would wait forever without one
REPO = Path(__file__).resolve().parents[2]
APP = REPO / "manifests" / "library-app"
NAMES = [f"prod-{n}" for n in range(6)]
# The probe tokens: the sandbox stores them in each cluster's Secret, the checks send them.
TOKENS = {"LIBRARY_TOKEN_ALICE": "e2e-alice-Yh3", "LIBRARY_TOKEN_BOB": "e2e-bob-Lk9",
          "LIBRARY_TOKEN_CAROL": "e2e-carol-Qs4"}


def sandbox_binaries(*tools: str) -> Path:
    """The built kube binaries (and `tools` on PATH); skip without them, except in CI, where
    that must not pass unnoticed."""
    found = controlplane.find_binaries()
    missing = [name for name in ("etcd", *tools) if not shutil.which(name)]
    if found is None:
        missing.insert(0, "kube binaries")
    if missing:
        reason = f"{', '.join(missing)} missing; run scripts/build-kube-sandbox.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert found is not None
    return found


def admin_client(kubeconfig: Path, context: str) -> client.ApiClient:
    """A client for `context` of a sandbox kubeconfig; use it as a context manager."""
    return config.new_client_from_config(config_file=str(kubeconfig), context=context,
                                         persist_config=False)


def printed_command(output: str, cluster: str, *, on_line: str = "") -> list[str]:
    """The `wavegate rollback APP -c CLUSTER ...` command OUTPUT printed to finish the job, as
    argv, as a human would copy it; ON_LINE is how the line it is printed on must start."""
    pattern = re.compile(rf"finish with `(wavegate rollback \S+ -c {re.escape(cluster)} [^`]*)`")
    for line in output.splitlines():
        found = pattern.search(line)
        if found is not None and line.startswith(on_line):
            return shlex.split(found.group(1))
    raise AssertionError(f"no command to finish {cluster} in: {output[-3000:]}")


def run_reaches(runs: Path, cluster: str, state: str, *, timeout: float = 120) -> None:
    """Wait until an unfinished run's journal in `runs` shows `cluster` in `state`."""
    def seen() -> bool | None:
        for path in runs.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except ValueError:  # caught mid-write by another process
                continue
            if data.get("outcome") is None and any(
                    c["cluster"] == cluster and c["state"] == state for c in data["clusters"]):
                return True
        return None

    try:
        eventually(seen, timeout=timeout, every=0.05)
    except AssertionError:
        raise AssertionError(f"{cluster} never reached {state}") from None


@dataclass
class KubeFleet:
    """The shared kube fleet (clusters/local.yaml's six clusters and three waves, short bakes),
    driven as a user drives it: the wavegate CLI, kubectl, and signals to its processes."""

    dir: Path
    env: dict[str, str]

    @property
    def fleet_file(self) -> Path:
        return self.dir / "fleet.yaml"

    @property
    def runs(self) -> Path:
        return self.dir / ".wavegate" / "runs"

    def wavegate(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=self.dir,
                              env=env or self.env, capture_output=True, text=True,
                              timeout=timeout)

    def deploy(self, version: str, *extra: str, app: Path = APP
               ) -> subprocess.CompletedProcess[str]:
        return self.wavegate("deploy", str(app), "--version", version, "-f",
                             str(self.fleet_file), *extra)

    def start_deploy(self, version: str, app: Path | None = None, *extra: str,
                     stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
        """A deploy in the background, as a CI job runs it."""
        return subprocess.Popen(
            [sys.executable, "-m", "wavegate", "deploy", str(app or APP), "--version", version,
             "-f", str(self.fleet_file), *extra], cwd=self.dir, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=stderr)

    def kubectl(self, cluster: str, *args: str) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.dir / "kubeconfig"),
                               "--context", cluster, "-n", "library", *args],
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    def image(self, cluster: str) -> str:
        return self.kubectl(cluster, "get", "deployment", "library-app", "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}")

    def images(self) -> dict[str, str]:
        return {name: self.image(name) for name in NAMES}

    def replicaset_images(self, cluster: str) -> set[str]:
        out = self.kubectl(cluster, "get", "replicasets", "-o",
                           "jsonpath={.items[*].spec.template.spec.containers[0].image}")
        return set(out.split())

    def status(self) -> dict[str, Any]:
        done = self.wavegate("status", "library-app", "-f", str(self.fleet_file), "-o", "json")
        return {row["cluster"]: row for row in json.loads(done.stdout)["clusters"]}

    def history(self, cluster: str | None = None) -> list[dict[str, Any]]:
        """The ledger records (of `cluster`, or of every cluster), newest first."""
        done = self.wavegate("history", "library-app", *(["-c", cluster] if cluster else []),
                             "-f", str(self.fleet_file), "-o", "json")
        assert done.returncode == 0, done.stderr[-2000:]
        records: list[dict[str, Any]] = json.loads(done.stdout)["records"]
        return records

    def api_server_pid(self, cluster: str) -> int:
        state = json.loads((self.dir / "sandbox.json").read_text())
        return next(p["pid"] for p in state["processes"]
                    if p["name"] == f"{cluster}-kube-apiserver")

    def reaches(self, cluster: str, state: str) -> None:
        """Wait until the run in progress shows `cluster` in `state` (its journal says so)."""
        run_reaches(self.runs, cluster, state)

    def reset(self, *versions: str) -> None:
        """Every cluster on versions[-1], `verified`, with the versions before it verified in
        that order before it, no lock held and no run left unfinished. Deploys only the
        versions missing: a fleet already so costs a look, not a deploy."""
        for run_id in self._unfinished_runs():  # a test that failed midway left it
            self.wavegate("abort", run_id)
        if any(row["lock"] is not None for row in self.status().values()):
            self.wavegate("rollback", "library-app", "--all", "--reason", "test reset", "-f",
                          str(self.fleet_file))  # takes a dead run's leases by force
        verified = self._verified()
        done = next((k for k in range(len(versions), 0, -1)
                     if all(v[:k] == list(reversed(versions[:k])) for v in verified.values())), 0)
        for version in versions[done:]:
            deployed = self.deploy(version)
            assert deployed.returncode == 0, deployed.stderr[-3000:]

    def _verified(self) -> dict[str, list[str]]:
        """Per cluster, its verified versions newest first; none where the cluster is not
        settled (a lock held, or its Deployment not on its newest verified version)."""
        locked = {name for name, row in self.status().items() if row["lock"] is not None}
        verified: dict[str, list[str]] = {name: [] for name in NAMES}
        for record in self.history():
            if record["status"] == "verified":
                verified[record["cluster"]].append(record["version"])
        with contextlib.suppress(subprocess.CalledProcessError):  # no Deployment yet
            images = self.images()
            return {name: versions if name not in locked and versions
                    and images[name] == f"library-app:{versions[0]}" else []
                    for name, versions in verified.items()}
        return {name: [] for name in NAMES}

    def _unfinished_runs(self) -> list[str]:
        found = []
        for path in self.runs.glob("*.json") if self.runs.is_dir() else []:
            with contextlib.suppress(ValueError, KeyError):
                data = json.loads(path.read_text())
                if data.get("outcome") is None:
                    found.append(str(data["run_id"]))
        return found

    @contextlib.contextmanager
    def edited(self, *, policy: dict[str, Any] | None = None,
               bake: dict[str, str] | None = None) -> Iterator[None]:
        """The fleet file with these policy fields and bakes (by wave name), put back after."""
        original = self.fleet_file.read_text()
        document = yaml.safe_load(original)
        document["policy"].update(policy or {})
        for wave in document["waves"]:
            wave["bake"] = (bake or {}).get(wave["name"], wave["bake"])
        self.fleet_file.write_text(yaml.safe_dump(document))
        try:
            yield
        finally:
            self.fleet_file.write_text(original)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeFleet]:
    """Six sandbox clusters, started once for every suite that drives the CLI against them."""
    sandbox_binaries("kubectl")
    root = tmp_path_factory.mktemp("kube")
    source = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    source["local"].pop("state_dir")
    for wave, bake in zip(source["waves"], ("1s", "500ms", "500ms"), strict=True):
        wave["bake"] = bake
    source["policy"].update(check_interval="500ms", watch="0s", rollout_timeout="90s")
    (root / "source.yaml").write_text(yaml.safe_dump(source))
    env = {**os.environ, **TOKENS, "PYTHONPATH": str(REPO / "src")}
    # Started as a user would, from a folder of their own with no manifests/ in it: the
    # deployer's role must come with wavegate, or every deploy exits 3 "forbidden".
    started = subprocess.run(
        [sys.executable, "-m", "wavegate", "fleet", "up", "--kube", "-f", "source.yaml",
         "--dir", "sandbox"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    yield KubeFleet(root / "sandbox", env)
    kubefleet.down(root / "sandbox")
