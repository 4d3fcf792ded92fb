"""Which resources wavegate manages, where they live in the API, and the order to touch them.

Apply order follows lightkube's `sort_objects`: what others refer to goes first (Namespaces,
then ServiceAccounts, Secrets and ConfigMaps, then RBAC, then Services), workloads last, so a
Deployment never starts pods that wait for a ConfigMap applied after it. Deleting goes the
other way round. Kinds not in the table are placed between Services and workloads and found
through discovery (`from_discovery`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One API resource: `kind` as manifests name it, `plural` as URLs and RBAC rules do."""

    kind: str
    api_version: str  # "v1" or "group/version"
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def rbac_name(self) -> str:
        """`deployments.apps`, `configmaps`: how `kubectl auth can-i` and errors name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced: a namespace is needed")
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return f"{base}/{quote(name, safe='')}" if name else base


_TABLE = (
    Resource("CustomResourceDefinition", "apiextensions.k8s.io/v1", "customresourcedefinitions",
             namespaced=False),
    Resource("Namespace", "v1", "namespaces", namespaced=False),
    Resource("ServiceAccount", "v1", "serviceaccounts"),
    Resource("Secret", "v1", "secrets"),
    Resource("ConfigMap", "v1", "configmaps"),
    Resource("Service", "v1", "services"),
    Resource("PersistentVolumeClaim", "v1", "persistentvolumeclaims"),
    Resource("Pod", "v1", "pods"),
    Resource("Role", "rbac.authorization.k8s.io/v1", "roles"),
    Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings"),
    Resource("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    Resource("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings",
             namespaced=False),
    Resource("Deployment", "apps/v1", "deployments"),
    Resource("StatefulSet", "apps/v1", "statefulsets"),
    Resource("DaemonSet", "apps/v1", "daemonsets"),
    Resource("ReplicaSet", "apps/v1", "replicasets"),
    Resource("Job", "batch/v1", "jobs"),
    Resource("HorizontalPodAutoscaler", "autoscaling/v1", "horizontalpodautoscalers"),
    Resource("Lease", "coordination.k8s.io/v1", "leases"),
)
KNOWN: Mapping[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _TABLE}


def known(api_version: str, kind: str) -> Resource:
    return KNOWN[(api_version, kind)]


SECRET = known("v1", "Secret")
POD = known("v1", "Pod")
REPLICA_SET = known("apps/v1", "ReplicaSet")
LEASE = known("coordination.k8s.io/v1", "Lease")
CRD = known("apiextensions.k8s.io/v1", "CustomResourceDefinition")
HPA = known("autoscaling/v1", "HorizontalPodAutoscaler")
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})

# What prune and delete look for by the app's label when a record predates inventories.
PRUNED: tuple[Resource, ...] = tuple(known(v, k) for v, k in (
    ("v1", "ServiceAccount"), ("v1", "Secret"), ("v1", "ConfigMap"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "Service"),
    ("apps/v1", "DaemonSet"), ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
))

_FIRST = ("CustomResourceDefinition", "Namespace", "ServiceAccount", "Secret", "ConfigMap",
          "PersistentVolume", "PersistentVolumeClaim", "ClusterRole", "ClusterRoleBinding",
          "Role", "RoleBinding", "Service")
_LAST = ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Pod", "Job", "CronJob")


def rank(kind: str) -> int:
    if kind in _FIRST:
        return _FIRST.index(kind)
    if kind in _LAST:
        return len(_FIRST) + 1 + _LAST.index(kind)
    return len(_FIRST)


def apply_order(manifests: Iterable[Manifest]) -> list[Manifest]:
    """Stable: objects of one kind keep the order the templates gave them."""
    return sorted(manifests, key=lambda manifest: rank(str(manifest.get("kind"))))


def delete_order(resources: Sequence[Resource]) -> list[Resource]:
    return sorted(resources, key=lambda resource: rank(resource.kind), reverse=True)


def identity(manifest: Manifest, default_namespace: str) -> tuple[str, str, str]:
    """(kind, namespace, name): what prune compares; the driver's namespace where none is set."""
    metadata = manifest.get("metadata") or {}
    return (str(manifest.get("kind")), str(metadata.get("namespace") or default_namespace),
            str(metadata.get("name")))


def from_discovery(document: Mapping[str, Any], api_version: str, kind: str) -> Resource | None:
    """The resource of `kind` in an APIResourceList (GET /apis/<group>/<version>)."""
    for entry in document.get("resources") or ():
        if entry.get("kind") == kind and "/" not in str(entry.get("name")):
            return Resource(kind, api_version, str(entry["name"]), bool(entry.get("namespaced")))
    return None


def discovery_path(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
