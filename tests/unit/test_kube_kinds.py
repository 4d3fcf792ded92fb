"""Which API path an object lives at, and the order objects are applied and deleted in:
what others refer to first (a Deployment never starts before the ConfigMap its pods read),
workloads last, and the reverse to delete."""

from __future__ import annotations

import pytest

from wavegate.kube import kinds


def manifest(kind: str, name: str = "x", api_version: str = "v1") -> kinds.Manifest:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}


def test_apply_order_puts_dependencies_first_and_workloads_last() -> None:
    given = [manifest("Deployment", api_version="apps/v1"), manifest("Service"),
             manifest("RoleBinding"), manifest("ConfigMap"), manifest("Widget"),
             manifest("Secret"), manifest("Namespace"), manifest("ServiceAccount"),
             manifest("Role")]
    ordered = [m["kind"] for m in kinds.apply_order(given)]
    assert ordered == ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "Role",
                       "RoleBinding", "Service", "Widget", "Deployment"]


def test_apply_order_keeps_the_template_order_within_a_kind() -> None:
    given = [manifest("ConfigMap", "b"), manifest("Service"), manifest("ConfigMap", "a")]
    names = [m["metadata"]["name"] for m in kinds.apply_order(given)]
    assert names == ["b", "a", "x"]


def test_delete_order_is_the_reverse_workloads_first() -> None:
    ordered = [r.kind for r in kinds.delete_order(kinds.PRUNED)]
    assert ordered[:3] == ["StatefulSet", "Deployment", "DaemonSet"]
    assert ordered.index("Service") < ordered.index("RoleBinding") < ordered.index("Role")
    assert ordered[-1] == "ServiceAccount"


def test_prune_covers_the_kinds_an_app_release_holds() -> None:
    assert {r.kind for r in kinds.PRUNED} == {
        "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "DaemonSet",
        "ServiceAccount", "Role", "RoleBinding"}


@pytest.mark.parametrize(("api_version", "kind", "namespace", "name", "expected"), [
    ("v1", "ConfigMap", "library", "app", "/api/v1/namespaces/library/configmaps/app"),
    ("apps/v1", "Deployment", "library", None, "/apis/apps/v1/namespaces/library/deployments"),
    ("v1", "Namespace", None, "library", "/api/v1/namespaces/library"),
    ("coordination.k8s.io/v1", "Lease", "ns", "wavegate-a",
     "/apis/coordination.k8s.io/v1/namespaces/ns/leases/wavegate-a"),
    ("v1", "Secret", "ns", "a/b", "/api/v1/namespaces/ns/secrets/a%2Fb"),
])
def test_paths(api_version: str, kind: str, namespace: str | None, name: str | None,
               expected: str) -> None:
    assert kinds.known(api_version, kind).path(namespace, name) == expected


def test_a_namespaced_path_without_a_namespace_is_a_bug() -> None:
    with pytest.raises(ValueError, match="namespace"):
        kinds.known("v1", "Service").path(None)


@pytest.mark.parametrize(("api_version", "kind", "expected"), [
    ("apps/v1", "Deployment", "deployments.apps"),
    ("v1", "Secret", "secrets"),
    ("coordination.k8s.io/v1", "Lease", "leases.coordination.k8s.io"),
])
def test_rbac_names(api_version: str, kind: str, expected: str) -> None:
    assert kinds.known(api_version, kind).rbac_name == expected


def test_from_discovery_finds_the_resource_not_its_subresources() -> None:
    document = {"resources": [
        {"name": "widgets/status", "kind": "Widget", "namespaced": True},
        {"name": "widgets", "kind": "Widget", "namespaced": True},
        {"name": "gadgets", "kind": "Gadget", "namespaced": False},
    ]}
    widget = kinds.from_discovery(document, "example.com/v1", "Widget")
    gadget = kinds.from_discovery(document, "example.com/v1", "Gadget")
    assert widget == kinds.Resource("Widget", "example.com/v1", "widgets", namespaced=True)
    assert gadget is not None and gadget.path(None, "g") == "/apis/example.com/v1/gadgets/g"
    assert kinds.from_discovery(document, "example.com/v1", "Nope") is None
    assert kinds.from_discovery({}, "example.com/v1", "Widget") is None


def test_identity_fills_in_the_default_namespace() -> None:
    given = manifest("ConfigMap", "app")
    assert kinds.identity(given, "library") == ("ConfigMap", "library", "app")
    given["metadata"]["namespace"] = "other"
    assert kinds.identity(given, "library") == ("ConfigMap", "other", "app")
