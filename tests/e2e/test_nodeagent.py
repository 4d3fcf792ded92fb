"""The kube fleet: real control planes whose pods run, so Deployments roll out, update and undo.

What a release engineer relies on when the driver deploys to the sandbox: the fleet file it
writes loads, the cluster holds the namespace and tokens, a rolling update really replaces
pods behind the ingress, `kubectl rollout undo` works, a crashing release stalls with restarts
while the old pods keep serving, and `down` leaves nothing running.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, watch

from tests.e2e.conftest import TIMEOUT, admin_client, sandbox_binaries
from tests.waits import eventually
from wavegate.config import fleet
from wavegate.config.app import App
from wavegate.localfleet import pods
from wavegate.sandbox import kubefleet, nodeagent

pytestmark = pytest.mark.e2e

ROLLOUT_TIMEOUT = 60
APP = Path(__file__).resolve().parents[2] / "manifests" / "library-app"
NAMESPACE = "library"
TOKENS = {"LIBRARY_TOKEN_ALICE": "alice-e2e", "LIBRARY_TOKEN_BOB": "bob-e2e",
          "LIBRARY_TOKEN_CAROL": "carol-e2e"}  # fmt: skip
FLEET = """\
fleet: kube-e2e
defaults: {driver: local, namespace: library, values: {replicas: 3}}
local:
  images:
    library-app: [python, -m, library_app, --version, "${tag}"]
  secrets:
    library-tokens:
      alice: {env: LIBRARY_TOKEN_ALICE}
      bob:   {env: LIBRARY_TOKEN_BOB}
      carol: {env: LIBRARY_TOKEN_CAROL}
clusters:
  - {name: k0, region: westeurope}
  - {name: k1, region: eastus}
waves:
  - {name: canary, clusters: [k0], bake: 2s}
  - {name: rest, selector: {region: eastus}, bake: 1500ms}
policy: {check_interval: 1s, rollout_timeout: 45s}
"""
# What manifests/rbac/deployer.yaml is for: a ServiceAccount's Role, which kubefleet also
# binds to the restricted token's User.
RBAC = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: wavegate-deployer}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: wavegate-deployer, namespace: "${namespace}"}
rules:
  - {apiGroups: [apps], resources: [deployments], verbs: [get, list, watch, create, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: wavegate-deployer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: wavegate-deployer}
subjects: [{kind: ServiceAccount, name: wavegate-deployer}]
"""
SOLO = """\
fleet: solo
defaults: {namespace: library, values: {replicas: 3}}
local:
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
  secrets: {library-tokens: {alice: {env: LIBRARY_TOKEN_ALICE}, bob: {env: LIBRARY_TOKEN_BOB},
                             carol: {env: LIBRARY_TOKEN_CAROL}}}
clusters: [{name: solo}]
waves: [{name: all, clusters: [solo]}]
"""


def _fleet_file(folder: Path, text: str = FLEET) -> fleet.Fleet:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "source.yaml").write_text(text)
    return fleet.load(folder / "source.yaml")


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A two-cluster kube fleet, up for the whole module; its DIR."""
    sandbox_binaries()
    directory = tmp_path_factory.mktemp("kube")
    with pytest.MonkeyPatch.context() as env:
        for name, value in TOKENS.items():
            env.setenv(name, value)
        started = time.monotonic()
        (directory / "in").mkdir()
        (directory / "in" / "deployer.yaml").write_text(RBAC)
        rbac = directory / "in" / "deployer.yaml"
        kubefleet.up(_fleet_file(directory / "in"), directory, rbac=rbac)
        print(f"\nkube fleet of 2 clusters up in {time.monotonic() - started:.1f}s")
    try:
        yield directory
    finally:
        kubefleet.down(directory)


@pytest.fixture(scope="module")
def kube_fleet(kube: Path) -> fleet.Fleet:
    return fleet.load(kube / "fleet.yaml")


# --- helpers -----------------------------------------------------------------------------


def _api(kube: Path, context: str) -> client.ApiClient:
    return admin_client(kube / "kubeconfig", context)


def _create_release(api: client.ApiClient, cluster: fleet.Cluster, version: str) -> None:
    """The app's ConfigMap, Deployment and Service, rendered as wavegate renders them."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    create = {
        "ConfigMap": core.create_namespaced_config_map,
        "Service": core.create_namespaced_service,
        "Deployment": apps.create_namespaced_deployment,
    }
    for manifest in App.from_folder(APP).render(cluster, version).manifests:
        _done(create[manifest["kind"]](
            NAMESPACE, manifest, _request_timeout=TIMEOUT, _preload_content=False))


def _patch_container(api: client.ApiClient, container: dict[str, Any], **spec: Any) -> None:
    body = {"spec": {**spec, "template": {"spec": {"containers": [container]}}}}
    _done(client.AppsV1Api(api).patch_namespaced_deployment(
        "library-app", NAMESPACE, body, _content_type="application/strategic-merge-patch+json",
        _request_timeout=TIMEOUT, _preload_content=False))


def _done(response: Any) -> None:
    """Read a raw response to its end before its connection goes back to the pool: a pooled
    connection with unread JSON in it breaks the next request (BadStatusLine)."""
    response.read()
    response.release_conn()


def _wait_rolled_out(api: client.ApiClient, replicas: int = 3) -> float:
    """Watch the Deployment until every replica is updated and available; the seconds it took.

    The test of `kubectl rollout status`: the controller saw the latest spec, and the
    replicas it counts are all new, all available, and no old one is left.
    """
    started = time.monotonic()
    stream = watch.Watch().stream(
        client.AppsV1Api(api).list_namespaced_deployment, NAMESPACE,
        field_selector="metadata.name=library-app", timeout_seconds=ROLLOUT_TIMEOUT,
        _request_timeout=ROLLOUT_TIMEOUT + TIMEOUT,
    )  # fmt: skip
    for event in stream:
        deployment = event["object"]
        status = deployment.status
        if (
            (status.observed_generation or 0) >= deployment.metadata.generation
            and status.updated_replicas == replicas
            and status.available_replicas == replicas
            and status.replicas == replicas
        ):
            stream.close()
            return time.monotonic() - started
    raise AssertionError(f"not rolled out in {ROLLOUT_TIMEOUT}s")


def _version(endpoint: str) -> str:
    response = httpx.get(f"{endpoint}/version", timeout=5, trust_env=False)
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


def _pods(api: client.ApiClient) -> list[client.V1Pod]:
    pods: list[client.V1Pod] = (
        client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, _request_timeout=TIMEOUT).items
    )
    return pods


def _kubectl(kube: Path, context: str, *args: str) -> None:
    command = ["kubectl", "--kubeconfig", str(kube / "kubeconfig"), "--context", context,
               "-n", NAMESPACE, *args]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=30)


# --- the tests ---------------------------------------------------------------------------


def test_the_fleet_file_reaches_every_cluster_as_the_deployer(
    kube: Path, kube_fleet: fleet.Fleet
) -> None:
    assert [(c.name, c.driver, c.context, c.namespace) for c in kube_fleet.clusters] == [
        ("k0", "kubernetes", "k0-deployer", NAMESPACE),
        ("k1", "kubernetes", "k1-deployer", NAMESPACE),
    ]
    assert [(w.name, w.clusters, w.bake) for w in kube_fleet.waves] == [
        ("canary", ("k0",), 2.0),
        ("rest", ("k1",), 1.5),
    ]
    assert kube_fleet.policy.rollout_timeout == 45
    assert {c.kubeconfig for c in kube_fleet.clusters} == {kube / "kubeconfig"}
    for cluster in kube_fleet.clusters:
        assert cluster.endpoint is not None
        # Up, and answering for the app: nothing is deployed yet.
        assert httpx.get(cluster.endpoint, trust_env=False).status_code == 503


def test_every_cluster_has_the_namespace_and_the_tokens(kube: Path) -> None:
    for context in ("k0", "k1"):
        with _api(kube, context) as api:
            secret = client.CoreV1Api(api).read_namespaced_secret(
                "library-tokens", NAMESPACE, _request_timeout=TIMEOUT
            )
        decoded = {k: base64.b64decode(v).decode() for k, v in secret.data.items()}
        assert decoded == {"alice": "alice-e2e", "bob": "bob-e2e", "carol": "carol-e2e"}


def test_the_deployer_gets_what_the_rbac_file_grants_and_no_more(kube: Path) -> None:
    with _api(kube, "k1-deployer") as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.list_namespaced_deployment(NAMESPACE, _request_timeout=TIMEOUT)
        refused = [
            lambda: core.list_namespaced_secret(NAMESPACE, _request_timeout=TIMEOUT),
            lambda: apps.list_namespaced_deployment("default", _request_timeout=TIMEOUT),
        ]
        for call in refused:
            with pytest.raises(client.ApiException) as error:
                call()
            assert error.value.status == 403
    with _api(kube, "k1") as api:
        binding = client.RbacAuthorizationV1Api(api).read_namespaced_role_binding(
            "wavegate-deployer", NAMESPACE, _request_timeout=TIMEOUT
        )
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", "wavegate-deployer", NAMESPACE),
        ("User", "deployer", None),
    ]


def test_a_deployment_rolls_out_updates_and_undoes(kube: Path, kube_fleet: fleet.Fleet) -> None:
    sandbox_binaries("kubectl")
    cluster = kube_fleet.cluster("k0")
    assert cluster.endpoint is not None
    with _api(kube, "k0") as api:
        _create_release(api, cluster, "1.0.0")
        created = _wait_rolled_out(api)
        assert _version(cluster.endpoint) == "1.0.0"

        _patch_container(api, {"name": "library-app", "image": "library-app:2.0.0"})
        updated = _wait_rolled_out(api)
        assert _version(cluster.endpoint) == "2.0.0"
        pods = [pod for pod in _pods(api) if pod.metadata.deletion_timestamp is None]

        _kubectl(kube, "k0", "rollout", "undo", "deployment/library-app")
        undone = _wait_rolled_out(api)
        assert {_version(cluster.endpoint) for _ in range(6)} == {"1.0.0"}
    print(f"\n3-replica rollout: create {created:.2f}s, update {updated:.2f}s, undo {undone:.2f}s")
    assert max(created, updated, undone) < 30
    # What the controllers read: every pod Ready, on the node, with its own loopback address.
    assert {pod.spec.node_name for pod in pods} == {"node-k0"}
    assert len({pod.status.pod_ip for pod in pods}) == len(pods) == 3
    assert all(pod.status.pod_ip.startswith("127.0.") for pod in pods)
    assert all(pod.status.container_statuses[0].ready for pod in pods)


def test_a_crashing_release_stalls_while_the_old_pods_keep_serving(
    kube: Path, kube_fleet: fleet.Fleet
) -> None:
    cluster = kube_fleet.cluster("k1")
    assert cluster.endpoint is not None
    with _api(kube, "k1") as api:
        _create_release(api, cluster, "1.0.0")
        _wait_rolled_out(api)
        crash = {"name": "library-app", "env": [{"name": "LIBRARY_FAIL", "value": "crash"}]}
        _patch_container(api, crash, progressDeadlineSeconds=5)

        def crashed_twice() -> client.V1ContainerStatus | None:
            statuses = [p.status.container_statuses for p in _pods(api)]
            restarted = [s[0] for s in statuses if s and s[0].restart_count >= 2]
            return restarted[0] if restarted else None

        crashed = eventually(crashed_twice)
        assert crashed.last_state.terminated.exit_code == 1
        assert not crashed.ready
        assert {_version(cluster.endpoint) for _ in range(6)} == {"1.0.0"}

        def stalled() -> client.V1Deployment | None:
            deployment = client.AppsV1Api(api).read_namespaced_deployment(
                "library-app", NAMESPACE, _request_timeout=TIMEOUT
            )
            progressing = {c.type: c for c in deployment.status.conditions or []}["Progressing"]
            return deployment if progressing.reason == "ProgressDeadlineExceeded" else None

        status = eventually(stalled).status
    # maxUnavailable 0: one new pod tried, the three old ones untouched and available.
    assert (status.updated_replicas, status.available_replicas) == (1, 3)
    assert status.unavailable_replicas == 1


def test_down_leaves_no_process_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_binaries()
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    endpoints = kubefleet.up(_fleet_file(tmp_path / "in", SOLO), tmp_path)
    solo = fleet.load(tmp_path / "fleet.yaml").cluster("solo")
    with _api(tmp_path, "solo") as api:
        _create_release(api, solo, "1.0.0")
        _wait_rolled_out(api)
        pids = [int(p.status.container_statuses[0].container_id.split("//")[1]) for p in _pods(api)]
    processes = _processes(tmp_path) + [_started(pid) for pid in pids]

    kubefleet.down(tmp_path)
    kubefleet.down(tmp_path)  # safe to repeat

    assert endpoints == {"solo": solo.endpoint}
    assert len(processes) == 4 + 3  # etcd, API server, controller manager, node agent; pods
    assert [p for p in processes if _still_runs(*p)] == []


def _processes(directory: Path) -> list[tuple[int, int]]:
    state = json.loads((directory / "sandbox.json").read_text())
    return [(p["pid"], p["started"]) for p in state["processes"]]


def _started(pid: int) -> tuple[int, int]:
    return pid, _stat(pid)[1]


def _stat(pid: int) -> tuple[str, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def _still_runs(pid: int, started: int) -> bool:
    """Whether PID still runs the process started then (not exited, not a zombie)."""
    try:
        state, start = _stat(pid)
    except OSError:
        return False
    return state != "Z" and start == started


# --- the node agent's own logic, without a sandbox ----------------------------------------


class _Answer:
    """What a client call with `_preload_content=False` returns: a list body or a watch stream."""

    def __init__(self, body: dict[str, Any] | None = None, events: Sequence[Any] = ()) -> None:
        self.data = json.dumps(body).encode()
        self._events = events

    def stream(self, decode_content: bool = True) -> Iterator[bytes]:
        for event in self._events:
            yield json.dumps(event).encode() + b"\n"

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def test_a_watch_that_expired_lists_again() -> None:
    old, new = ({"metadata": {"namespace": "ns", "name": name}} for name in ("old", "new"))
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    answers = iter(
        [
            _Answer({"metadata": {"resourceVersion": "1"}, "items": [old]}),
            _Answer(events=[expired]),
            _Answer({"metadata": {"resourceVersion": "9"}, "items": [new]}),
        ]
    )
    stop, calls = threading.Event(), []

    def list_all(**kwargs: Any) -> _Answer:
        calls.append(kwargs)
        answer = next(answers, None)
        if answer is None:  # the watch after the second list: done
            stop.set()
            return _Answer(events=[])
        return answer

    mirror = nodeagent.Mirror("Pod", list_all, on_change=lambda: None)
    mirror.run(stop)

    assert [pod["metadata"]["name"] for pod in mirror.snapshot()] == ["new"]
    assert [c.get("watch", False) for c in calls] == [False, True, False, True]
    assert [c.get("resource_version") for c in calls if c.get("watch")] == ["1", "9"]
    assert all(c["_request_timeout"] for c in calls)


def test_a_crash_looping_container_shows_its_restarts_and_last_exit_code() -> None:
    process = pods.PodStatus(
        name="library.app-1", host="127.0.9.9", port=8080, pid=None, ready=False, restarts=2,
        last_exit_code=1, last_error="Traceback ... token=s3cret", terminating=False,
    )  # fmt: skip
    since = "2026-01-01T00:00:05Z"
    view = nodeagent.ContainerView(
        "app", "app:2", "2026-01-01T00:00:00Z", process, ready_since=since
    )

    status = nodeagent.status_patch(view)["status"]

    assert status["phase"] == "Running"
    assert {
        c["type"]: (c["status"], c.get("lastTransitionTime")) for c in status["conditions"]
    } == {
        "PodScheduled": ("True", None),
        "Initialized": ("True", None),
        "ContainersReady": ("False", since),
        "Ready": ("False", since),
    }
    container = status["containerStatuses"][0]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}
    assert (container["restartCount"], container["ready"]) == (2, False)
    assert "s3cret" not in json.dumps(status)  # a pod's log never reaches the API
