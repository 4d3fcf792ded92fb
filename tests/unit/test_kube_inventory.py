"""Pruning by inventory: what a revision applied, and what a later one removes. Only objects
some revision applied are ever removed; cluster-scoped kinds have no namespace; an object is
the same whatever version of its group names it; records from before inventories fall back to
the label rule."""

from __future__ import annotations

from typing import Any

from wavegate.decide.ledger import ObjectRef, Record, Status
from wavegate.kube import inventory

SCOPES = {("rbac.authorization.k8s.io/v1", "ClusterRole"): False,
          ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): False}


def obj(api_version: str, kind: str, name: str, namespace: str = "library") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}}


def record(revision: int, *refs: ObjectRef, status: Status = Status.VERIFIED,
           legacy: bool = False) -> Record:
    return Record(app="shop", cluster="a", revision=revision, version="1", status=status,
                  run_id="r", by="t", started_at="2025-01-01T00:00:00+00:00",
                  inventory=None if legacy else tuple(refs))


INGRESS = ObjectRef("networking.k8s.io", "v1", "Ingress", "library", "admin")
ROLE = ObjectRef("rbac.authorization.k8s.io", "v1", "ClusterRole", "", "viewer")
WEB = ObjectRef("apps", "v1", "Deployment", "library", "web")
CRD = ObjectRef("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "", "widgets.x.io")
WIDGET = ObjectRef("x.io", "v1", "Widget", "library", "w")


def test_a_release_inventory_names_group_version_kind_namespace_and_name() -> None:
    manifests = [obj("apps/v1", "Deployment", "web"),
                 obj("rbac.authorization.k8s.io/v1", "ClusterRole", "viewer"),
                 obj("networking.k8s.io/v1", "Ingress", "admin", "other")]
    assert inventory.of_release(manifests, SCOPES) == (
        WEB, ObjectRef("networking.k8s.io", "v1", "Ingress", "other", "admin"), ROLE)


def test_the_scope_of_a_kind_comes_from_the_releases_own_crd() -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.x.io"},
           "spec": {"group": "x.io", "scope": "Cluster", "names": {"kind": "Widget"},
                    "versions": [{"name": "v1"}, {"name": "v2"}]}}
    assert inventory.crd_scopes([crd, obj("v1", "ConfigMap", "c")]) == {
        ("x.io/v1", "Widget"): False, ("x.io/v2", "Widget"): False}


def test_what_earlier_revisions_applied_and_this_one_has_not_goes_in_delete_order() -> None:
    records = [record(1, WEB), record(2, WEB, INGRESS, ROLE, CRD, WIDGET, status=Status.FAILED)]
    assert inventory.stale(records, keep=[WEB]) == [INGRESS, WIDGET, ROLE, CRD]
    assert inventory.stale(records, keep=[WEB, INGRESS, ROLE, CRD, WIDGET]) == []


def test_an_object_whose_api_version_moved_is_kept() -> None:
    old = ObjectRef("policy", "v1beta1", "PodDisruptionBudget", "library", "web")
    new = ObjectRef("policy", "v1", "PodDisruptionBudget", "library", "web")
    assert inventory.stale([record(1, old)], keep=[new]) == []


def test_only_what_some_revision_applied_is_a_candidate() -> None:
    assert inventory.stale([record(1, WEB)], keep=[]) == [WEB]
    assert inventory.stale([], keep=[]) == []


def test_an_unreadable_record_neither_adds_candidates_nor_forces_the_label_rule() -> None:
    broken = record(3, INGRESS, status=Status.UNREADABLE, legacy=True)
    assert inventory.stale([broken], keep=[]) == []
    assert not inventory.needs_label_sweep([broken, record(1, WEB)])


def test_records_from_before_inventories_fall_back_to_the_label_rule() -> None:
    assert inventory.needs_label_sweep([record(1, legacy=True), record(2, WEB)])
    assert not inventory.needs_label_sweep([record(2, WEB)])


def test_refs_are_grouped_by_kind_and_namespace_for_one_list_each() -> None:
    other = ObjectRef("apps", "v1", "Deployment", "library", "api")
    assert inventory.grouped([WEB, other, ROLE]) == {
        ("apps/v1", "Deployment", "library"): ["web", "api"],
        ("rbac.authorization.k8s.io/v1", "ClusterRole", ""): ["viewer"]}
