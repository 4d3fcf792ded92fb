"""Field ownership: a conflict names the other manager and the fields; a workload an HPA
scales leaves its replicas alone; adopted objects are stored without what the server owns."""

from __future__ import annotations

import pytest

from wavegate.kube import ownership


@pytest.mark.parametrize(("message", "manager", "fields"), [
    pytest.param('Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: '
                 ".spec.replicas", "kubectl-edit", (".spec.replicas",), id="one"),
    pytest.param('Apply failed with 2 conflicts: conflicts with "helm" using v1: - .data.a '
                 "- .data.b", "helm", (".data.a", ".data.b"), id="two"),
    pytest.param('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
                 'using apps/v1: .spec.template.spec.containers[name="web"].image',
                 "kubectl-client-side-apply",
                 ('.spec.template.spec.containers[name="web"].image',), id="list-key"),
])
def test_a_conflict_names_the_manager_and_fields(message: str, manager: str,
                                                 fields: tuple[str, ...]) -> None:
    found = ownership.conflict(message)
    assert found == ownership.Conflict(manager, fields)
    text = found.describe("Deployment/web")
    assert manager in text and fields[0] in text and "--force-conflicts" in text


def test_a_409_that_is_no_field_conflict_is_not_one() -> None:
    assert ownership.conflict("Operation cannot be fulfilled: the object has been modified") \
        is None


def test_a_workload_an_hpa_scales_leaves_its_replicas_to_it() -> None:
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": "web"}}}
    targets = ownership.scaled([hpa], "library")
    web = {"kind": "Deployment", "metadata": {"name": "web", "namespace": "library"},
           "spec": {"replicas": 3, "template": {}}}
    api = {"kind": "Deployment", "metadata": {"name": "api", "namespace": "library"},
           "spec": {"replicas": 3}}
    assert ownership.without_replicas(web, targets, "library")["spec"] == {"template": {}}
    assert web["spec"]["replicas"] == 3  # the release as stored is untouched
    assert ownership.without_replicas(api, targets, "library") is api


def test_an_adopted_object_keeps_what_its_owner_wrote_and_drops_what_the_server_did() -> None:
    live = {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": "web", "namespace": "library", "uid": "u", "generation": 2,
                         "resourceVersion": "9", "managedFields": [{}],
                         "labels": {"app": "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                         "team": "library"}},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {}}}
    assert ownership.adopted(live, api_version="v1", app="shop") == {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "library", "annotations": {"team": "library"},
                     "labels": {"app": "web", "wavegate.dev/app": "shop",
                                "app.kubernetes.io/managed-by": "wavegate"}},
        "spec": {"ports": [{"port": 80}]}}
