"""Server-side apply on v1.20 refuses a port without `protocol`; wavegate makes it explicit
(TCP, what the API server stores anyway) on every port of every kind that has ports, and
leaves the release it stores untouched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from wavegate.kube import normalize


def pod_spec() -> dict[str, Any]:
    return {"initContainers": [{"name": "init", "ports": [{"containerPort": 1}]}],
            "containers": [{"name": "app", "ports": [{"containerPort": 8080},
                                                     {"containerPort": 53, "protocol": "UDP"}]},
                           {"name": "sidecar"}]}


@pytest.mark.parametrize("manifest", [
    pytest.param({"kind": "Deployment", "spec": {"template": {"spec": pod_spec()}}},
                 id="Deployment"),
    pytest.param({"kind": "StatefulSet", "spec": {"template": {"spec": pod_spec()}}},
                 id="StatefulSet"),
    pytest.param({"kind": "DaemonSet", "spec": {"template": {"spec": pod_spec()}}},
                 id="DaemonSet"),
    pytest.param({"kind": "Pod", "spec": pod_spec()}, id="Pod"),
    pytest.param({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {
        "spec": pod_spec()}}}}}, id="CronJob"),
])
def test_container_ports_get_tcp_unless_they_say_otherwise(manifest: dict[str, Any]) -> None:
    applied = normalize.for_apply(manifest)
    assert [port.get("protocol") for port in normalize.ports(applied)] == ["TCP", "TCP", "UDP"]


def test_service_ports_get_tcp() -> None:
    service = {"kind": "Service", "spec": {"ports": [{"port": 80}, {"port": 53,
                                                                    "protocol": "UDP"}]}}
    applied = normalize.for_apply(service)
    assert [port["protocol"] for port in applied["spec"]["ports"]] == ["TCP", "UDP"]


def test_the_release_itself_is_not_changed() -> None:
    manifest = {"kind": "Deployment", "spec": {"template": {"spec": pod_spec()}}}
    before = copy.deepcopy(manifest)
    normalize.for_apply(manifest)
    assert manifest == before


@pytest.mark.parametrize("manifest", [
    pytest.param({"kind": "ConfigMap", "data": {"ports": "80"}}, id="no-ports-kind"),
    pytest.param({"kind": "Deployment"}, id="no-spec"),
    pytest.param({"kind": "Deployment", "spec": {"template": {"spec": {"containers": "bad"}}}},
                 id="malformed-containers"),
    pytest.param({"kind": "Service", "spec": {"ports": None}}, id="null-ports"),
])
def test_objects_without_ports_pass_unchanged(manifest: dict[str, Any]) -> None:
    assert normalize.for_apply(manifest) == manifest
