"""A ledger record and its release, as a Secret of type `wavegate.dev/release`.

One Secret per app and revision, named `wavegate.<app>.v<revision>`, in the cluster's namespace.
Labels make the ledger a query (`wavegate.dev/app`, `wavegate.dev/revision`,
`wavegate.dev/status`, `app.kubernetes.io/managed-by`); the annotation `wavegate.dev/record`
holds the Record as JSON (its inventory included), so listing the ledger reads metadata only;
data holds `release` (gzip of the rendered manifests, version and checks, what a rollback
re-applies) and `record` again (what records written before the annotation are read from).
A Secret, not a ConfigMap, because rendered manifests may carry credentials. The API server
refuses Secrets whose data exceed 1 MiB, and annotations over 256 KiB, so `encode` refuses
them first.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from wavegate.config.app import APP_LABEL, MANAGED_BY, Release
from wavegate.decide.ledger import Record, Status

TYPE = "wavegate.dev/release"
REVISION_LABEL = "wavegate.dev/revision"
STATUS_LABEL = "wavegate.dev/status"
RECORD_ANNOTATION = "wavegate.dev/record"
MAX_DATA_BYTES = 1024 * 1024  # the API server's limit on a Secret's data (keys included)
MAX_ANNOTATION_BYTES = 256 * 1024  # and on all annotations of an object together


class TooLarge(Exception):
    def __init__(self, size: int, *, what: str = "the release", limit: int = MAX_DATA_BYTES,
                 unit: str = "1 MiB") -> None:
        self.size = size
        super().__init__(f"{what} is {size} bytes encoded; a ledger Secret holds at most "
                         f"{limit} ({unit})")


def name(app: str, revision: int) -> str:
    return f"wavegate.{app}.v{revision}"


def selector(app: str) -> str:
    """Every object wavegate labelled for `app` (its ledger Secrets among them)."""
    return f"{APP_LABEL}={app},{MANAGED_BY}=wavegate"


def labels(record: Record) -> dict[str, str]:
    return {APP_LABEL: record.app, REVISION_LABEL: str(record.revision),
            STATUS_LABEL: record.status.value, MANAGED_BY: "wavegate"}


def encode(record: Record, release: Release, *, namespace: str) -> dict[str, Any]:
    """The Secret to create; TooLarge when the API server would refuse it."""
    payload = {"version": release.version, "manifests": list(release.manifests),
               "checks": release.checks}
    data = {"record": _record_bytes(record),
            "release": gzip.compress(json.dumps(payload).encode(), mtime=0)}
    size = sum(len(key) + len(value) for key, value in data.items())
    if size > MAX_DATA_BYTES:
        raise TooLarge(size)
    return {"apiVersion": "v1", "kind": "Secret", "type": TYPE,
            "metadata": {"name": name(record.app, record.revision), "namespace": namespace,
                         "labels": labels(record), "annotations": record_annotations(record)},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}


def record_annotations(record: Record) -> dict[str, str]:
    text = _record_bytes(record).decode()
    if len(text) > MAX_ANNOTATION_BYTES:
        raise TooLarge(len(text), what="the record with its inventory",
                       limit=MAX_ANNOTATION_BYTES, unit="256 KiB of annotations")
    return {RECORD_ANNOTATION: text}


def update_patch(record: Record) -> dict[str, Any]:
    """A JSON merge patch of the record and its status label; its resourceVersion makes the
    API server refuse it (409) when the Secret changed since `record` was read."""
    if record.resource_version is None:
        raise ValueError("a record to update must carry the resourceVersion it was read at")
    return {"metadata": {"resourceVersion": record.resource_version,
                         "labels": {STATUS_LABEL: record.status.value},
                         "annotations": record_annotations(record)},
            "data": {"record": base64.b64encode(_record_bytes(record)).decode()}}


def has_record(metadata: dict[str, Any]) -> bool:
    """Whether a listed Secret's metadata carries its record (written since annotations)."""
    return RECORD_ANNOTATION in ((metadata.get("metadata") or {}).get("annotations") or {})


def record_of(secret: dict[str, Any]) -> Record:
    """The record of a Secret, or of its metadata alone when the annotation holds it."""
    metadata = secret["metadata"]
    text = (metadata.get("annotations") or {}).get(RECORD_ANNOTATION)
    data = json.loads(text) if text is not None else json.loads(_data(secret, "record"))
    return Record.from_json(data, str(metadata["resourceVersion"]))


def unreadable(item: dict[str, Any], app: str, cluster: str, why: str) -> Record:
    """A stand-in for a record that cannot be decoded, so it is shown and skipped, not fatal."""
    metadata = item.get("metadata") or {}
    label = (metadata.get("labels") or {}).get(REVISION_LABEL)
    number = label if label and label.isdigit() else \
        str(metadata.get("name", "")).rpartition(".v")[2]
    return Record(app=app, cluster=cluster, revision=int(number) if number.isdigit() else -1,
                  version="?", status=Status.UNREADABLE, run_id="?", by="?",
                  started_at=str(metadata.get("creationTimestamp") or ""), reason=why,
                  resource_version=metadata.get("resourceVersion"))


def release_of(secret: dict[str, Any], app: str) -> Release:
    payload = json.loads(gzip.decompress(_data(secret, "release")))
    return Release(app=app, version=payload["version"], manifests=tuple(payload["manifests"]),
                   checks=payload["checks"])


def _record_bytes(record: Record) -> bytes:
    return json.dumps(record.to_json(), sort_keys=True).encode()


def _data(secret: dict[str, Any], key: str) -> bytes:
    value = (secret.get("data") or {}).get(key)
    if not isinstance(value, str):
        raise ValueError(f"Secret {secret.get('metadata', {}).get('name')} has no {key!r}")
    return base64.b64decode(value)
