"""A ledger record and its release, as the Secret a cluster keeps: what is stored reads back
the same, the labels make history a query, an update is a compare-and-set, and a release too
big for a Secret is refused before anything is written."""

from __future__ import annotations

import base64
import gzip
import json
import os
from typing import Any

import pytest

from wavegate.config.app import Release
from wavegate.decide.ledger import Counts, ObjectRef, Record, Status
from wavegate.kube import ledgersecret

RECORD = Record(app="library-app", cluster="prod-0", revision=7, version="1.2.0",
                status=Status.APPLYING, run_id="run-1", by="ci",
                started_at="2025-01-01T00:00:00.000+00:00", checks=Counts(3, 0, 1))
RELEASE = Release(app="library-app", version="1.2.0", checks="checks: []\n", manifests=(
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}},))


def stored(secret: dict[str, Any], resource_version: str = "42") -> dict[str, Any]:
    """The Secret as the API server hands it back."""
    return {**secret, "metadata": {**secret["metadata"], "resourceVersion": resource_version}}


def test_a_record_and_its_release_read_back_the_same() -> None:
    secret = stored(ledgersecret.encode(RECORD, RELEASE, namespace="library"))
    assert ledgersecret.record_of(secret) == RECORD.updated(resource_version="42")
    assert ledgersecret.release_of(secret, "library-app") == RELEASE


def test_the_secret_is_named_typed_and_labelled_for_queries() -> None:
    secret = ledgersecret.encode(RECORD, RELEASE, namespace="library")
    assert secret["type"] == "wavegate.dev/release"
    assert secret["metadata"]["name"] == "wavegate.library-app.v7"
    assert secret["metadata"]["namespace"] == "library"
    assert secret["metadata"]["labels"] == {
        "wavegate.dev/app": "library-app", "wavegate.dev/revision": "7",
        "wavegate.dev/status": "applying", "app.kubernetes.io/managed-by": "wavegate"}
    assert ledgersecret.selector("library-app") == \
        "wavegate.dev/app=library-app,app.kubernetes.io/managed-by=wavegate"


def test_the_release_is_stored_compressed() -> None:
    secret = ledgersecret.encode(RECORD, RELEASE, namespace="library")
    payload = json.loads(gzip.decompress(base64.b64decode(secret["data"]["release"])))
    assert payload == {"version": "1.2.0", "manifests": list(RELEASE.manifests),
                       "checks": "checks: []\n"}


def test_an_update_carries_the_version_it_was_read_at_and_the_new_status_label() -> None:
    record = RECORD.updated(status=Status.VERIFIED, resource_version="42")
    patch = ledgersecret.update_patch(record)
    assert {k: v for k, v in patch["metadata"].items() if k != "annotations"} == {
        "resourceVersion": "42", "labels": {"wavegate.dev/status": "verified"}}
    assert json.loads(base64.b64decode(patch["data"]["record"]))["status"] == "verified"
    assert json.loads(patch["metadata"]["annotations"]["wavegate.dev/record"])["status"] == \
        "verified"
    assert "release" not in patch["data"]  # the release of a revision never changes


def test_an_update_without_a_resource_version_is_a_bug() -> None:
    with pytest.raises(ValueError, match="resourceVersion"):
        ledgersecret.update_patch(RECORD)


def test_a_release_over_one_mebibyte_is_refused() -> None:
    noise = base64.b64encode(os.urandom(1100 * 1024)).decode()  # incompressible
    big = Release(app="library-app", version="1.2.0", checks="", manifests=(
        {"kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"blob": noise}},))
    with pytest.raises(ledgersecret.TooLarge) as refused:
        ledgersecret.encode(RECORD, big, namespace="library")
    assert refused.value.size > ledgersecret.MAX_DATA_BYTES
    assert "1 MiB" in str(refused.value)


def test_a_large_but_compressible_release_fits() -> None:
    repetitive = Release(app="library-app", version="1.2.0", checks="", manifests=(
        {"kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"blob": "a" * 3_000_000}},))
    assert ledgersecret.encode(RECORD, repetitive, namespace="library")["data"]["release"]


def test_a_secret_without_a_record_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'record'"):
        ledgersecret.record_of({"metadata": {"name": "wavegate.x.v1", "resourceVersion": "1"},
                                "data": {}})


def test_listing_reads_the_record_from_metadata_alone_with_its_inventory() -> None:
    inventory = (ObjectRef("networking.k8s.io", "v1", "Ingress", "library", "web"),
                 ObjectRef("rbac.authorization.k8s.io", "v1", "ClusterRole", "", "viewer"))
    record = RECORD.updated(inventory=inventory)
    secret = ledgersecret.encode(record, RELEASE, namespace="library")
    metadata_only = {"metadata": {**secret["metadata"], "resourceVersion": "9"}}
    assert ledgersecret.has_record(metadata_only)
    assert ledgersecret.record_of(metadata_only) == record.updated(resource_version="9")


def test_a_record_written_before_annotations_is_read_from_its_data() -> None:
    secret = ledgersecret.encode(RECORD, RELEASE, namespace="library")
    del secret["metadata"]["annotations"]
    secret["metadata"]["resourceVersion"] = "3"
    assert not ledgersecret.has_record(secret)
    assert ledgersecret.record_of(secret) == RECORD.updated(resource_version="3")
    assert RECORD.inventory is None  # what makes prune fall back to the label rule


def test_an_undecodable_record_stands_in_as_unreadable_with_its_revision() -> None:
    item = {"metadata": {"name": "wavegate.library-app.v4", "resourceVersion": "8",
                         "labels": {"wavegate.dev/revision": "4"}}}
    stand_in = ledgersecret.unreadable(item, "library-app", "prod-0", "not JSON")
    assert (stand_in.revision, stand_in.status, stand_in.reason) == \
        (4, Status.UNREADABLE, "not JSON")
    del item["metadata"]["labels"]
    assert ledgersecret.unreadable(item, "library-app", "prod-0", "x").revision == 4
