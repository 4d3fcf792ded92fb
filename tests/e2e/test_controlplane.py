"""The kube sandbox's control planes: real API servers that reconcile, authorize and stop cleanly.

No scheduler or kubelet runs here, so pods stay Pending and unbound: that is what is asserted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import TIMEOUT, admin_client, sandbox_binaries
from tests.waits import eventually
from wavegate.sandbox import controlplane

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.Sandbox]:
    directory = tmp_path_factory.mktemp("sandbox")
    started = controlplane.up(clusters=["a", "b"], dir=directory, bin_dir=sandbox_binaries())
    yield started
    controlplane.down(directory)


def _api(sandbox: controlplane.Sandbox, context: str) -> client.ApiClient:
    return admin_client(sandbox.kubeconfig, context)


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    # protocol is explicit, as wavegate always makes it: v1.20 server-side apply rejects ports
    # without one.
    container = {
        "name": "app",
        "image": "library-app:1.0.0",
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def _create_namespace(api: client.ApiClient, name: str) -> None:
    body = {"metadata": {"name": name}}
    client.CoreV1Api(api).create_namespace(body=body, _request_timeout=TIMEOUT)


def test_a_deployment_gets_a_replicaset_and_pending_pods(sandbox: controlplane.Sandbox) -> None:
    with _api(sandbox, "a") as api:
        _create_namespace(api, "shop")
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment("shop", _deployment("web", 2), _request_timeout=TIMEOUT)

        def replicaset() -> client.V1ReplicaSet | None:
            items = apps.list_namespaced_replica_set("shop", _request_timeout=TIMEOUT).items
            owned = [rs for rs in items if rs.metadata.owner_references[0].name == "web"]
            return owned[0] if owned else None

        def two_pods() -> list[client.V1Pod] | None:
            pods = core.list_namespaced_pod(
                "shop", label_selector="app=web", _request_timeout=TIMEOUT
            )
            return pods.items if len(pods.items) == 2 else None

        owner = eventually(replicaset).metadata.name
        pods = eventually(two_pods)
    assert {pod.metadata.owner_references[0].name for pod in pods} == {owner}
    assert {pod.status.phase for pod in pods} == {"Pending"}
    assert [pod.spec.node_name for pod in pods] == [None, None]


def test_clusters_do_not_see_each_other(sandbox: controlplane.Sandbox) -> None:
    with _api(sandbox, "a") as a, _api(sandbox, "b") as b:
        _create_namespace(a, "only-in-a")
        names = client.CoreV1Api(b).list_namespace(_request_timeout=TIMEOUT).items
    assert "only-in-a" not in {ns.metadata.name for ns in names}


def test_the_deployer_token_is_authenticated_but_refused(sandbox: controlplane.Sandbox) -> None:
    with _api(sandbox, "a-deployer") as api, pytest.raises(ApiException) as refused:
        client.AppsV1Api(api).create_namespaced_deployment(
            "default", _deployment("sneaky", 1), _request_timeout=TIMEOUT
        )
    assert refused.value.status == 403  # 401 would mean the token itself is broken


def test_down_leaves_no_process_running(tmp_path: Path) -> None:
    controlplane.up(clusters=["solo"], dir=tmp_path, bin_dir=sandbox_binaries())
    processes = json.loads((tmp_path / "sandbox.json").read_text())["processes"]

    controlplane.down(tmp_path)
    controlplane.down(tmp_path)  # safe to repeat

    assert len(processes) == 3  # etcd, kube-apiserver, kube-controller-manager
    assert [p["name"] for p in processes if _runs(p)] == []


def _runs(process: dict[str, Any]) -> bool:
    """Whether the PID still runs the process started (same start time, not a zombie)."""
    try:
        stat = Path(f"/proc/{process['pid']}/stat").read_text()
    except OSError:
        return False
    state, *fields = stat.rsplit(")", 1)[1].split()
    return state != "Z" and int(fields[18]) == process["started"]
