"""Manifests made fit for server-side apply, without changing what they mean.

Kubernetes v1.20 refuses to server-side apply a container port or a Service port that has no
`protocol` ("associative list with keys has an element that omits key field protocol"): the
field is part of the list's merge key there, and the default (TCP) is filled in only after the
merge. So every such port gets `protocol: TCP` when it has none, which is what the API server
would have stored anyway. The release as rendered (and stored in the ledger) is left untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

Manifest = dict[str, Any]
DEFAULT_PROTOCOL = "TCP"

# Where each kind keeps its pod spec.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def for_apply(manifest: Manifest) -> Manifest:
    """A copy of `manifest` with every port's protocol made explicit."""
    result = copy.deepcopy(manifest)
    for port in ports(result):
        port.setdefault("protocol", DEFAULT_PROTOCOL)
    return result


def ports(manifest: Manifest) -> Iterator[dict[str, Any]]:
    """The port entries of a Service, or of every container of a pod template."""
    kind = manifest.get("kind")
    if kind == "Service":
        yield from _dicts(_dig(manifest, ("spec", "ports")))
        return
    path = _POD_SPEC_PATHS.get(str(kind))
    pod_spec = _dig(manifest, path) if path else None
    if not isinstance(pod_spec, dict):
        return
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in _dicts(pod_spec.get(field)):
            yield from _dicts(container.get("ports"))


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))
