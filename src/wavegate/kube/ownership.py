"""Who owns which fields and objects: field-manager conflicts, HPAs, adopted objects. Pure.

    conflict        what a 409 of server-side apply says: the other field manager and fields
    scaled          workloads an HorizontalPodAutoscaler sets the replicas of
    without_replicas  a workload's manifest leaving `spec.replicas` to its HPA
    adopted         a live object (applied by kubectl or Helm) as a manifest wavegate can
                    re-apply: server bookkeeping, status and controller annotations left out

wavegate applies without forcing: a field another manager owns is a conflict the user decides
on (`deploy --force-conflicts`), found by the dry run before anything is written.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wavegate.config.app import APP_LABEL, MANAGED_BY
from wavegate.kube import preview

Manifest = dict[str, Any]
HPA_KIND = "HorizontalPodAutoscaler"
_MANAGER = re.compile(r'conflicts? with "(?P<manager>[^"]+)"')
_FIELD = re.compile(r"(?:^|[\s:])(?P<field>\.[^\s,]+)")
# Fields a controller or the API server fills in: re-applying them would fight their owner.
_SERVER_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",
                       "deployment.kubernetes.io/revision",
                       "deprecated.daemonset.template.generation")
_SERVER_SPEC = {"Service": ("clusterIP", "clusterIPs")}


@dataclass(frozen=True)
class Conflict:
    manager: str
    fields: tuple[str, ...]

    def describe(self, what: str) -> str:
        owned = ", ".join(self.fields) or "some fields"
        return (f"{what}: {owned} owned by field manager {self.manager!r}; nothing was "
                "written (deploy --force-conflicts takes them over)")


def conflict(message: str) -> Conflict | None:
    """The other manager and fields of a 409: `Apply failed with 1 conflict: conflict with
    "kubectl-edit" using apps/v1: .spec.replicas`; None for a 409 of another kind."""
    found = _MANAGER.search(message)
    if found is None:
        return None
    rest = message[found.end():]
    fields = tuple(dict.fromkeys(m["field"] for m in _FIELD.finditer(rest)))
    return Conflict(found["manager"], fields)


def scaled(hpas: Iterable[Manifest], default_namespace: str) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of each workload an HPA targets."""
    targets = set()
    for hpa in hpas:
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        namespace = (hpa.get("metadata") or {}).get("namespace") or default_namespace
        targets.add((str(namespace), str(target.get("kind")), str(target.get("name"))))
    return targets


def without_replicas(manifest: Manifest, targets: set[tuple[str, str, str]],
                     default_namespace: str) -> Manifest:
    """The manifest without `spec.replicas` when an HPA scales it; else as it is."""
    metadata = manifest.get("metadata") or {}
    key = (str(metadata.get("namespace") or default_namespace), str(manifest.get("kind")),
           str(metadata.get("name")))
    if key not in targets or "replicas" not in (manifest.get("spec") or {}):
        return manifest
    result = copy.deepcopy(manifest)
    del result["spec"]["replicas"]
    return result


def adopted(live: Mapping[str, Any], *, api_version: str, app: str) -> Manifest:
    """A live object as wavegate will re-apply it to go back to it."""
    manifest = preview.essence(dict(live))
    manifest = copy.deepcopy(dict(manifest, apiVersion=api_version))
    metadata = manifest["metadata"]
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items()
                   if k not in _SERVER_ANNOTATIONS}
    metadata.pop("annotations", None)
    if annotations:
        metadata["annotations"] = annotations
    metadata["labels"] = {**(metadata.get("labels") or {}), APP_LABEL: app,
                          MANAGED_BY: "wavegate"}
    for field in _SERVER_SPEC.get(str(manifest.get("kind")), ()):
        (manifest.get("spec") or {}).pop(field, None)
    return manifest
