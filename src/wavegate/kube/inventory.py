"""What a release applied, and what a later one must remove: pruning by inventory. Pure.

Each revision records the objects its release applied (`ObjectRef`: group, version, kind,
namespace, name). Applying a release removes what the app's recorded revisions had and this
release has not: any kind, namespaced or cluster-scoped, in any namespace. Only objects some
revision applied are ever candidates, so an object wavegate never applied is never deleted.
Records written before inventories existed fall back to the label rule (`kinds.PRUNED` in the
cluster's namespace), as `needs_label_sweep` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from wavegate.decide.ledger import ObjectRef, Record, Status
from wavegate.kube import kinds

Manifest = dict[str, Any]
Scopes = Mapping[tuple[str, str], bool]  # (apiVersion, kind) -> namespaced
CRD_API = "apiextensions.k8s.io/v1"


def of_release(manifests: Iterable[Manifest], scopes: Scopes) -> tuple[ObjectRef, ...]:
    """The release's objects, sorted; a kind `scopes` says is cluster-scoped gets no
    namespace (App.render gives every object not known to be cluster-scoped one)."""
    return tuple(sorted({ref(manifest, scopes) for manifest in manifests}))


def ref(manifest: Manifest, scopes: Scopes) -> ObjectRef:
    api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
    metadata = manifest.get("metadata") or {}
    group, _, version = api_version.rpartition("/")
    namespaced = scopes.get((api_version, kind), True)
    namespace = str(metadata.get("namespace") or "") if namespaced else ""
    return ObjectRef(group, version, kind, namespace, str(metadata.get("name")))


def crd_scopes(manifests: Iterable[Manifest]) -> dict[tuple[str, str], bool]:
    """Scopes of the kinds the release's own CRDs define (not yet served before it is applied)."""
    scopes = {}
    for manifest in manifests:
        if manifest.get("kind") != "CustomResourceDefinition":
            continue
        spec = manifest.get("spec") or {}
        kind = str((spec.get("names") or {}).get("kind"))
        for version in spec.get("versions") or ():
            api_version = f"{spec.get('group')}/{version.get('name')}"
            scopes[(api_version, kind)] = spec.get("scope") != "Cluster"
    return scopes


def stale(records: Iterable[Record], keep: Iterable[ObjectRef]) -> list[ObjectRef]:
    """What the recorded revisions applied and `keep` has not, in delete order (workloads
    first, CRDs last, so custom resources go before their definitions). An object is the
    same whatever version of its group names it (a PDB moving from policy/v1beta1 to v1)."""
    kept = {_same(r) for r in keep}
    applied = {r for record in records if record.status is not Status.UNREADABLE
               for r in record.inventory or ()}
    gone = {_same(r): r for r in sorted(applied) if _same(r) not in kept}
    return sorted(gone.values(), key=lambda r: (-kinds.rank(r.kind), r))


def _same(ref: ObjectRef) -> tuple[str, str, str, str]:
    return ref.group, ref.kind, ref.namespace, ref.name


def needs_label_sweep(records: Iterable[Record]) -> bool:
    """Whether a record predates inventories: then the old rule (labels) prunes as well."""
    return any(record.inventory is None for record in records
               if record.status is not Status.UNREADABLE)


def grouped(refs: Iterable[ObjectRef]) -> dict[tuple[str, str, str], list[str]]:
    """Names by (apiVersion, kind, namespace), in the order given: one list call per group."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for each in refs:
        groups.setdefault((each.api_version, each.kind, each.namespace), []).append(each.name)
    return groups
