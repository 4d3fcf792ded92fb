"""wavegate as a pod runs it: `context: in-cluster`, no kubeconfig anywhere, the service account's
token and CA (here the sandbox's, in a folder WAVEGATE_SERVICEACCOUNT_DIR names) and
KUBERNETES_SERVICE_HOST/PORT pointing at a real API server. The token is the one Kubernetes
issued to the least-privilege `wavegate-deployer` ServiceAccount that manifests/rbac ships.

Also here, since it needs the same real cluster: apps from a kustomization and from a render
command, deployed through that service account.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.e2e.conftest import sandbox_binaries
from tests.waits import eventually
from wavegate.config import fleet
from wavegate.drivers.kubernetes import KubernetesDriver
from wavegate.sandbox import kubefleet

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "apps"
TOKENS = {"LIBRARY_TOKEN_ALICE": "pod-alice-Rt5", "LIBRARY_TOKEN_BOB": "pod-bob-Wq2",
          "LIBRARY_TOKEN_CAROL": "pod-carol-Mn8"}
SOURCE = """\
fleet: pod
defaults: {namespace: library, values: {replicas: 2, fault: ""}}
local:
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
  secrets: {library-tokens: {alice: {env: LIBRARY_TOKEN_ALICE}, bob: {env: LIBRARY_TOKEN_BOB},
                             carol: {env: LIBRARY_TOKEN_CAROL}}}
clusters: [{name: pod}]
waves: [{name: all, clusters: [pod], bake: 0s}]
policy: {check_interval: 500ms, watch: 0s, rollout_timeout: 60s}
"""
SERVICE_ACCOUNT = "wavegate-deployer"


@dataclass
class Pod:
    """A sandbox cluster and the environment wavegate would see inside one of its pods."""

    dir: Path
    env: dict[str, str]
    account: Path  # the mounted service-account folder

    @property
    def fleet_file(self) -> Path:
        return self.dir / "in-cluster.yaml"

    def wavegate(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=self.dir,
                              env=self.env, capture_output=True, text=True, timeout=240)

    def deploy(self, app: Path, version: str) -> subprocess.CompletedProcess[str]:
        return self.wavegate("deploy", str(app), "--version", version, "-f",
                             str(self.fleet_file), "--report", str(self.dir / "report.json"))

    def kubectl(self, *args: str) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.dir / "kube" / "kubeconfig"),
                               "--context", "pod", "-n", "library", *args],
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    def token_secrets(self) -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "secrets", "-o", "json"))["items"]
        return [item for item in items if item["type"] == "kubernetes.io/service-account-token"
                and item["metadata"]["annotations"].get("kubernetes.io/service-account.name")
                == SERVICE_ACCOUNT and item.get("data", {}).get("token")]

    def mount(self, secret: dict[str, Any]) -> str:
        """Put a token where the kubelet would; the token, for the leak checks."""
        token = base64.b64decode(secret["data"]["token"]).decode()
        (self.account / "token").write_text(token)
        return token

    def live_image(self) -> str:
        return self.kubectl("get", "deployment", "library-app", "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}")


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    sandbox_binaries("kubectl")
    root = tmp_path_factory.mktemp("in-cluster")
    (root / "source.yaml").write_text(SOURCE)
    with pytest.MonkeyPatch.context() as env:
        for name, value in TOKENS.items():
            env.setenv(name, value)
        endpoints = kubefleet.up(fleet.load(root / "source.yaml"), root / "kube")
    try:
        account = root / "serviceaccount"
        account.mkdir()
        shutil.copy(root / "kube" / "pki" / "ca.crt", account / "ca.crt")
        kubeconfig = yaml.safe_load((root / "kube" / "kubeconfig").read_text())
        server = urlparse(next(c["cluster"]["server"] for c in kubeconfig["clusters"]))
        (root / "in-cluster.yaml").write_text(yaml.safe_dump({
            "fleet": "pod", "clusters": [{
                "name": "pod", "driver": "kubernetes", "namespace": "library",
                "context": "in-cluster", "endpoint": endpoints["pod"],
                "values": {"replicas": 2, "fault": ""}}],
            "waves": [{"name": "all", "clusters": ["pod"], "bake": "0s"}],
            "policy": {"check_interval": "500ms", "watch": "0s", "rollout_timeout": "60s"}}))
        home = root / "home"  # no ~/.kube/config, no KUBECONFIG: nothing but the pod's own
        home.mkdir()
        environ = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        env_vars = {**environ, **TOKENS, "HOME": str(home), "PYTHONPATH": str(REPO / "src"),
                    "KUBERNETES_SERVICE_HOST": server.hostname or "",
                    "KUBERNETES_SERVICE_PORT": str(server.port),
                    "WAVEGATE_SERVICEACCOUNT_DIR": str(account)}
        pod = Pod(root, env_vars, account)
        pod.mount(eventually(lambda: pod.token_secrets()[0] if pod.token_secrets() else None))
        yield pod
    finally:
        kubefleet.down(root / "kube")


def test_a_deploy_inside_a_pod_uses_its_service_account(pod: Pod) -> None:
    token = (pod.account / "token").read_text()
    done = pod.deploy(REPO / "manifests" / "library-app", "1.0.0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert pod.live_image() == "library-app:1.0.0"
    everything = done.stdout + done.stderr + (pod.dir / "report.json").read_text()
    assert token not in everything


def test_kustomize_and_render_command_apps_land_through_the_service_account(
        pod: Pod, tmp_path: Path) -> None:
    kustomized = tmp_path / "kustomize" / "library-app"
    shutil.copytree(DATA / "kustomize" / "library-app", kustomized)
    overlay = kustomized / "overlays" / "pod"
    shutil.copytree(kustomized / "overlays" / "prod-3", overlay)  # one replica, here too
    done = pod.deploy(kustomized, "1.1.0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert pod.live_image() == "library-app:1.1.0"  # ${version} filled in kustomize's output
    assert pod.kubectl("get", "deployment", "library-app", "-o",
                       "jsonpath={.spec.replicas}") == "1"

    done = pod.deploy(DATA / "render" / "library-app", "1.2.0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert pod.live_image() == "library-app:1.2.0"
    note = pod.kubectl("get", "configmap", "library-app", "-o",
                       "jsonpath={.metadata.annotations.note}")
    assert note == "${left.as.written}"  # a render command's output is applied as it is


def test_the_service_account_is_the_least_privileged_deployer(pod: Pod) -> None:
    """Its token may deploy the app, and nothing more: it cannot read another namespace."""
    secret = pod.token_secrets()[0]
    user = f"system:serviceaccount:library:{SERVICE_ACCOUNT}"
    allowed = subprocess.run(
        ["kubectl", "--kubeconfig", str(pod.dir / "kube" / "kubeconfig"), "--context", "pod",
         "auth", "can-i", "list", "secrets", "-n", "kube-system", "--as", user],
        capture_output=True, text=True, timeout=60, check=False)
    assert allowed.stdout.strip() == "no"
    assert secret["metadata"]["namespace"] == "library"


def test_outside_a_pod_an_in_cluster_context_is_one_clear_line(pod: Pod) -> None:
    env = {key: value for key, value in pod.env.items() if key != "KUBERNETES_SERVICE_HOST"}
    done = subprocess.run([sys.executable, "-m", "wavegate", "deploy",
                           str(REPO / "manifests" / "library-app"), "--version", "1.0.1", "-f",
                           str(pod.fleet_file)], cwd=pod.dir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert "in-cluster: not inside a pod (KUBERNETES_SERVICE_HOST" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rotated_token_is_read_again(pod: Pod, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                "WAVEGATE_SERVICEACCOUNT_DIR"):
        monkeypatch.setenv(key, pod.env[key])
    driver = KubernetesDriver(fleet.load(pod.fleet_file).cluster("pod"))
    driver.connect()
    try:
        assert driver.records("library-app")
        old = pod.token_secrets()[0]
        # A second token for the same account, then the first one revoked: as a rotation.
        subprocess.run(
            ["kubectl", "--kubeconfig", str(pod.dir / "kube" / "kubeconfig"), "--context", "pod",
             "-n", "library", "apply", "-f", "-"], check=True, text=True, timeout=60,
            capture_output=True, input=json.dumps({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": "rotated-token", "annotations": {
                    "kubernetes.io/service-account.name": SERVICE_ACCOUNT}}}))
        fresh = eventually(lambda: next((s for s in pod.token_secrets()
                                         if s["metadata"]["name"] == "rotated-token"), None))
        pod.mount(fresh)
        pod.kubectl("delete", "secret", old["metadata"]["name"])
        assert driver.records("library-app")  # a 401 with the old token, then the new one
    finally:
        driver.close()
