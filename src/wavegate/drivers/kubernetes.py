"""The Kubernetes driver: one cluster, reached through one kubeconfig context.

Owns the conversation with the API server: the context's credentials loaded into a client of
its own (six clusters share one process, so never the client's global default), a timeout on
every request, retries of what is transient, a credential reload on 401, and the translation of
every other failure into `DriverError` at this boundary, in one line without secrets. What to
decide (apply order, rollout verdicts, who may take a lease, the ledger's Secret format) is in
`wavegate.kube`, pure; this module only talks. It is the one module that imports `kubernetes`.

The client is used for what it does well: kubeconfig loading (token files, exec plugins, client
certificates, refresh hooks) and the TLS connection pool built from it. Requests are plain JSON
over that pool, answers plain dicts: one code path for every kind (server-side apply of
arbitrary manifests is a raw PATCH anyway), no generated models (their datetimes break Lease
MicroTime in v1.20, and they change shape with the client's generator), and no discovery cache
files written by the dynamic client.

API calls, for a release of N objects and W workloads (pinned by the e2e tests; a deploy of
the Library App costs 15 to 16 per cluster, an emergency rollback 14 to 15):
- fences: the lease as last confirmed (read, or renewed with success) stands for a tenth of
  its term (`kube.lease`: a run that takes the lease waits that out); an older one is renewed
  by the fence, one PUT that proves it ours which counts as a renewal too.
- apply: 1 LIST of HPAs per namespace with workloads + N-1 dry-run PATCHes + N PATCHes + 1
  LIST (metadata only) per kind and namespace the release dropped + a DELETE per pruned
  object; the ledger it prunes by is the one listed under this hold of the lock (with the
  writes made since), listed only if there is none; with CRDs, a GET until each is
  Established and a discovery GET per new group version. The dry-run pass (no force: a field
  another manager owns is a conflict) is what keeps a refusal from half-applying; the object
  applied first has none, since its own apply is the first write (refused, nothing is
  applied either). Records from before inventories add the old label sweep (9 LISTs).
- wait_rollout, per workload: nothing before watching from the object the apply answered with
  (1 GET when there is none, or it looks settled already); if not yet rolled out, 2 WATCHes
  (the workload; its pods, from now, the server sending those that exist first, so no LIST),
  re-opened only when the server ends them; plus a GET of a ReplicaSet for each crashing pod
  whose owner is not known yet. No polling. A Deployment that reads done is waited on while
  its old pods stop, each for up to `ENDPOINTS_SETTLE` seconds (the Service drops it meanwhile).
  Given a holder, 1 WATCH of its Lease for the whole wait (opened once a wait begins): a look
  costs nothing while it shows no change that is not ours, and a change is looked at at once;
  without `watch` on leases, a renewal per second of wait instead. When rolled out, one look
  like a write's fence (a renewal if the last is older than the trust window).
- ledger: records 1 LIST (metadata only, or whole Secrets for a rollback; a GET per record
  from before annotations), kept while the lock is held; stored_release 1 GET (none for a
  Secret listed whole); update 1 write; create 1 write + a DELETE per
  record trimmed to `history`, and before the app's first revision 1 LIST per object of the
  release (adoption).
- lock: acquire a released lease 1 PATCH (a JSON patch that tests it has no holder); one
  that is held (or where `patch` is refused) 1 GET + 1 write (POST or PUT) after it, plus a
  GET a second for up to one lease term when the lease's timestamps look expired; a missing
  one 1 POST after the PATCH; renew 1 PUT on the lease as last seen (a GET first only if it
  changed); release 1 PUT, likewise.

What an emergency rollback of the Library App sends, and why each stays: lock 2 (PATCH: the
take of a released lease, which the server refuses if anyone holds it: then a GET says who, so
a rollback that takes it from a live run waits out that run's trust window; it is also the
first request, which shows the cluster answers, since a rollback needs no `connect`
confirmation: each cluster goes its own way; PUT: the release), plus a fence's renewal when the
ledger marks come later than the trust window after the take; ledger 4 (one LIST of the whole
Secrets: which revision to go back to, and its manifests; the new revision created `applying`
before anything is applied, marked `verified` after its checks, then the replaced one
`rolled-back`: each a crash-safe step of its own); apply 6 (the HPA LIST: replicas an
autoscaler owns are left to it; 2 dry runs; 3 applies); rollout 2 (the pods' WATCH: a new pod
that crashes fails the wait at once; the Deployment's WATCH).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import structlog
import tenacity
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

from wavegate import __version__, redact
from wavegate.config.app import APP_LABEL, Manifest, Release
from wavegate.config.fleet import Cluster
from wavegate.decide import ledger, workloads
from wavegate.decide.ledger import ObjectRef, Record, Status
from wavegate.drivers import kubewatch
from wavegate.drivers.base import Lock
from wavegate.errors import (
    Conflict,
    DriverError,
    FieldConflict,
    LockHeld,
    Preempted,
    RolloutFailed,
    StaleLock,
    Stopped,
)
from wavegate.kube import (
    apierrors,
    inventory,
    kinds,
    kubeconfig,
    lease,
    ledgersecret,
    normalize,
    ownership,
    preview,
    retry,
)
from wavegate.kube.apierrors import Action, ApiError, Unreachable

log = structlog.get_logger(__name__)

JSON = "application/json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
FIELD_MANAGER = "wavegate"
# Not curl, Wget or Mozilla: for those the API server pretty-prints JSON, and the sandbox's v1.20
# build (Go 1.19, reflect2 1.0.1) crashes on that code path.
USER_AGENT = f"wavegate/{__version__}"
REQUEST_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)
WATCH_SECONDS = 60  # the server ends each watch after this; it is then re-opened where it was
WATCH_TIMEOUT = urllib3.Timeout(connect=5.0, read=WATCH_SECONDS + 15.0)
LOCK_ATTEMPTS = 3
LOCK_LOOK = 1.0  # how often a rollout wait looks whether the run goes on (and, with no
# watch on the lease, whether the lease is still ours)
CRD_TIMEOUT = 30.0  # seconds for a CRD to be Established and its kinds discoverable
CRD_PAUSE = 0.1
ADOPTED_VERSION = "adopted"  # what ran before wavegate has no version wavegate knows

T = TypeVar("T")
Event = tuple[str, str, Any]  # (watch tag, SYNC|ADDED|MODIFIED|DELETED|ERROR, object)


# The client caches embedded certificate data in temp files, publishing a file's name before
# its content is written: clusters that share a CA, loaded in parallel, could read an empty CA
# ("no certificate or crl found"). Loading is rare and fast, so it is done one at a time.
_LOADING = threading.Lock()

class KubernetesDriver:
    """The `Driver` of a cluster with `driver: kubernetes`. Construction does no I/O."""

    def __init__(self, cluster: Cluster, *, sleep: Callable[[float], None] = time.sleep,
                 history: int = ledger.DEFAULT_HISTORY) -> None:
        self.cluster = cluster
        self.history = history
        self.api = _Api(cluster, sleep=sleep)
        self._namespace = cluster.namespace
        self._resources: dict[tuple[str, str], kinds.Resource] = dict(kinds.KNOWN)
        self._sightings: dict[str, lease.Sighting] = {}  # per app: leases as we saw them
        self._terms: dict[str, float] = {}  # per app: the ttl our run holds its lease for
        self._held: dict[str, lease.Held] = {}  # per app: our own hold, as last confirmed
        self._leasing = threading.RLock()  # the run's thread and the renewals take turns
        self._may_patch_leases = True  # until a role without `patch` on leases says otherwise
        # Per app: the ledger as listed while we held its lease (with our own writes since),
        # and for which holder. Every ledger write is fenced, so no one else changes it while
        # that hold lasts: an operation lists its records once.
        self._ledgers: dict[str, tuple[str, list[Record]]] = {}
        self._applied: dict[str, dict[str, Any]] = {}  # workload path -> as the apply left it
        # Ledger Secrets listed whole, by (name, resourceVersion): the version is what makes
        # one still the record it was listed as.
        self._listed_secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._log = log.bind(cluster=cluster.name)

    # --- reaching the cluster ----------------------------------------------------------------

    def connect(self, *, confirm: bool = True) -> None:
        self.api.load()
        if confirm:
            self.api.request("GET", "/version", action=Action("get", "/version"))

    def endpoint(self) -> str:
        if not self.cluster.endpoint:
            raise DriverError("no endpoint for the checks: set `endpoint:` in the fleet file",
                              cluster=self.cluster.name)
        return self.cluster.endpoint

    def close(self) -> None:
        self.api.close()

    # --- objects -----------------------------------------------------------------------------

    def apply(self, release: Release, *, holder: str, force_conflicts: bool = False,
              cancel: threading.Event | None = None) -> None:
        """Fence, dry-run everything (so a refusal or a field conflict leaves nothing
        half-applied), apply CRDs and wait until they are Established, apply the rest, then
        prune what the app's recorded revisions applied and this release has not."""
        fence = self._fencer(release.app, holder, cancel)
        fence()
        records = self._ledger(release.app, holder)
        self._applied.clear()
        ordered = self._for_apply(release)
        served = self._dry_run(release, ordered, force=force_conflicts)
        definitions = [m for m in ordered if m.get("kind") == kinds.CRD.kind]
        for manifest in definitions:
            fence()
            self._apply_one(kinds.CRD, manifest, force=force_conflicts)
        for manifest in definitions:
            self._established(manifest["metadata"]["name"])
        for index, manifest in enumerate(ordered):
            if manifest.get("kind") != kinds.CRD.kind:
                resource = served[index] or self._discovered(manifest)
                fence()  # each write: an emergency rollback mid-apply is never overwritten
                self._apply_one(resource, manifest, force=force_conflicts)
        pruned = self._prune(release.app, records, keep=self._inventory(release), fence=fence)
        self._log.info("kube.applied", app=release.app, version=release.version,
                       objects=len(ordered), pruned=pruned)

    def delete(self, app: str, *, holder: str) -> None:
        """Remove what the app's recorded revisions applied (a first release rolled back
        with nothing adopted before it has nothing to go to)."""
        fence = self._fencer(app, holder, None)
        fence()
        self._prune(app, self._ledger(app, holder), keep=(), fence=fence)

    def wait_rollout(self, release: Release, *, timeout: float, holder: str | None = None,
                     cancel: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout
        sight = self._lease_sight(release.app, holder)
        look = self._watchful(release.app, holder, cancel, sight)
        try:
            for manifest in release.manifests:
                if manifest.get("kind") in kinds.WORKLOADS:
                    resource = self._resource(manifest)
                    namespace = self._where(resource, manifest)
                    name = manifest["metadata"]["name"]
                    events: queue.Queue[Event] = queue.Queue()
                    if sight is not None:
                        sight.wakes(events)  # a lease event ends the wait for the next event
                    _Rollout(self.api, resource, namespace, name).wait(
                        deadline=deadline, timeout=timeout, look=look, events=events,
                        applied=self._applied.pop(resource.path(namespace or None, name), None))
        finally:
            if sight is not None:
                sight.stop()
        look(True)  # rolled out, and still ours: not an emergency rollback's rollout

    def _fencer(self, app: str, holder: str,
                cancel: threading.Event | None) -> Callable[[], None]:
        """Before one write: the run's own knowledge first (free), then the Lease."""
        def fence() -> None:
            if cancel is not None and cancel.is_set():
                raise Stopped(cluster=self.cluster.name)
            self._fence(app, holder)
        return fence

    def _watchful(self, app: str, holder: str | None, cancel: threading.Event | None,
                  sight: _LeaseSight | None = None) -> Callable[[bool], None]:
        """What a rollout wait looks at between events: the run stopping, and the Lease. With
        a SIGHT (one WATCH on the lease), a look costs nothing while the watch shows no change
        that is not ours, and a change is looked at at once (a deleted lease is taken again, a
        taken one raises `Preempted`); without one (no `watch` on leases), the lease when the
        run's last look at it is older than `LOCK_LOOK` (a renewal per second of wait). Once
        more, `final`, when the rollout is judged done: fenced like a write (the trust window
        holds: a taker writes nothing before it ends), so a rollout an emergency rollback
        started is never taken for ours. The watch never stands in for that fence: a
        connection that died without a word shows no change either."""
        def look(final: bool = False) -> None:
            if cancel is not None and cancel.is_set():
                raise Stopped(cluster=self.cluster.name)
            if holder is None:
                return
            if final:
                self._fence(app, holder)
            elif sight is not None and sight.following():  # opened by the first look
                if sight.changed():
                    self._fence(app, holder, within=0.0)  # ask the API server, now
            else:
                self._fence(app, holder, within=LOCK_LOOK)
        return look

    def _lease_sight(self, app: str, holder: str | None) -> _LeaseSight | None:
        """A watch on the app's Lease from the version this run last saw as its own; none
        without a holder, or a hold of its own to start from (then `_watchful` asks)."""
        with self._leasing:
            known = self._held.get(app)
        version = ((known.lease.get("metadata") or {}).get("resourceVersion")
                   if known is not None and known.holder == holder else None)
        if holder is None or not version:
            return None
        return _LeaseSight(self.api, kinds.LEASE.path(self._namespace), name=lease.name(app),
                           namespace=self._namespace, holder=holder, version=str(version))

    def _for_apply(self, release: Release) -> list[Manifest]:
        """Apply order, v1.20's port quirk, and `spec.replicas` left to any HPA."""
        ordered = kinds.apply_order(normalize.for_apply(m) for m in release.manifests)
        hpas = [m for m in ordered if m.get("kind") == ownership.HPA_KIND]
        workload_namespaces = {self._where(self._resource(m), m) for m in ordered
                               if m.get("kind") in kinds.WORKLOADS}
        for namespace in sorted(workload_namespaces):
            # The app's own HPAs count as the release has them: one it dropped is pruned next.
            hpas += [hpa for hpa in self._listed(kinds.HPA, namespace)
                     if ((hpa.get("metadata") or {}).get("labels") or {}).get(APP_LABEL)
                     != release.app]
        targets = ownership.scaled(hpas, self._namespace)
        return [ownership.without_replicas(m, targets, self._namespace) for m in ordered]

    def _dry_run(self, release: Release, ordered: list[Manifest], *,
                 force: bool) -> list[kinds.Resource | None]:
        """Each object's resource, once its dry run passed; None for a custom resource whose
        CRD arrives with this release (not served yet, so not to be dry-run before it)."""
        arriving = inventory.crd_scopes(release.manifests)
        created = {kinds.identity(m, "")[2] for m in ordered if m.get("kind") == "Namespace"}
        bound = _roles(ordered)
        served: list[kinds.Resource | None] = []
        for index, manifest in enumerate(ordered):
            resource = self._served(manifest) if _key(manifest) in arriving \
                else self._resource(manifest)
            served.append(resource)
            # The first object (a CRD when there are any) is the first write: its own apply,
            # refused, leaves nothing applied either, so its dry run would only say it twice.
            if index == 0:
                continue
            if resource is not None and self._where(resource, manifest) not in created:
                self._apply_one(resource, manifest, dry_run=True, force=force,
                                role_arrives=_role_of(manifest) in bound)
        return served

    def _apply_one(self, resource: kinds.Resource, manifest: Manifest, *, force: bool,
                   dry_run: bool = False, role_arrives: bool = False) -> dict[str, Any] | None:
        """The object as applied; None for the dry run of a binding whose role comes with
        the release (RBAC checks a binding against its role, which a dry run never wrote)."""
        namespace, name = self._where(resource, manifest), manifest["metadata"]["name"]
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        if dry_run:
            query["dryRun"] = "All"
        try:
            applied = self.api.request(
                "PATCH", resource.path(namespace or None, name), query=query, body=manifest,
                content_type=APPLY_PATCH, expect=(409, 404) if role_arrives else (409,),
                action=Action("apply", resource.rbac_name, name, namespace or None))
            if not dry_run and resource.kind in kinds.WORKLOADS:
                self._applied[resource.path(namespace or None, name)] = applied
            return applied
        except ApiError as error:
            if error.status == 404:
                return None
            found = ownership.conflict(error.message)
            what = f"{resource.kind}/{name}"
            if found is None:
                raise DriverError(f"apply {what}: {error.reason} (409): {error.message}",
                                  cluster=self.cluster.name) from error
            raise FieldConflict(found.describe(what), cluster=self.cluster.name) from error

    def _established(self, name: str) -> None:
        """Wait until a CRD is Established, then until discovery serves its kinds: custom
        resources applied before that would be refused as an unknown kind. Both take
        milliseconds, and neither has a watch worth opening for, so this asks again."""
        deadline = time.monotonic() + CRD_TIMEOUT
        while True:
            crd = self.api.request("GET", kinds.CRD.path(None, name),
                                   action=Action("get", kinds.CRD.rbac_name, name))
            if _is_established(crd):
                break
            if time.monotonic() > deadline:
                raise DriverError(f"CustomResourceDefinition {name} not Established after "
                                  f"{CRD_TIMEOUT:g}s", cluster=self.cluster.name)
            self.api.sleep(CRD_PAUSE)
        spec = crd.get("spec") or {}
        kind = str((spec.get("names") or {}).get("kind"))
        for version in spec.get("versions") or ():
            if version.get("served"):
                self._resources.pop((f"{spec.get('group')}/{version.get('name')}", kind), None)

    def _discovered(self, manifest: Manifest) -> kinds.Resource:
        """A kind whose CRD was just established: discovery catches up within moments."""
        deadline = time.monotonic() + CRD_TIMEOUT
        while (found := self._served(manifest)) is None:
            if time.monotonic() > deadline:
                return self._resource(manifest)  # raises: not served
            self.api.sleep(CRD_PAUSE)
        return found

    preview_source = "dry-run"

    def preview(self, release: Release) -> list[str]:
        """What applying `release` would change, from a server-side dry run; nothing is
        written. A custom resource whose CRD comes with the release is shown as created with
        it; a field another manager owns as a conflict; what the release drops as pruned."""
        lines: list[str] = []
        arriving = inventory.crd_scopes(release.manifests)
        ordered = self._for_apply(release)
        bound = _roles(ordered)
        for manifest in ordered:
            name = manifest["metadata"]["name"]
            resource = self._served(manifest) if _key(manifest) in arriving \
                else self._resource(manifest)
            if resource is None:
                lines.append(f"+ {manifest.get('kind')}/{name}: created with its CRD")
                continue
            try:
                after = self._apply_one(resource, manifest, dry_run=True, force=False,
                                        role_arrives=_role_of(manifest) in bound)
            except FieldConflict as conflict:
                lines.append(f"! {conflict}")
                continue
            if after is None:
                lines.append(f"+ {manifest.get('kind')}/{name}: created with its role")
                continue
            namespace = self._where(resource, manifest)
            lines += preview.diff(f"{resource.kind}/{name}",
                                  self._live(resource, namespace, name), after)
        doomed = self._present(release.app, inventory.stale(self.records(release.app),
                                                            self._inventory(release)))
        lines += [f"- {resource.kind}/{name}: pruned (the release no longer has it)"
                  for resource, _, name in doomed]
        return lines

    def _live(self, resource: kinds.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as it is, by a list (the deployer may list what it may not get)."""
        found = self.api.request(
            "GET", resource.path(namespace or None),
            query={"fieldSelector": f"metadata.name={name}"},
            action=Action("list", resource.rbac_name, None, namespace or None))
        items = found.get("items") or []
        return dict(items[0], kind=resource.kind) if items else None

    def _prune(self, app: str, records: list[Record], *, keep: Iterable[ObjectRef],
               fence: Callable[[], None] = lambda: None) -> int:
        """Delete what the recorded revisions applied and `keep` has not; how many went.
        `fence` runs before each delete."""
        keep = tuple(keep)
        doomed = self._present(app, inventory.stale(records, keep))
        if inventory.needs_label_sweep(records) or not records:
            doomed += self._swept(app, keep)
        for resource, namespace, name in doomed:
            fence()
            self._delete(resource, namespace, name)
        return len(doomed)

    def _present(self, app: str, refs: list[ObjectRef]) -> list[tuple[kinds.Resource, str, str]]:
        """Which of `refs` exist and still carry the app's label: one metadata list per kind
        and namespace, so what someone else took over since is left alone."""
        found = []
        for (api_version, kind, namespace), names in inventory.grouped(refs).items():
            resource = self._served({"apiVersion": api_version, "kind": kind})
            if resource is None:
                continue  # the kind is gone (its CRD was removed): so are its objects
            where = namespace if resource.namespaced else ""
            labelled = set(self._labelled(resource, app, where))
            found += [(resource, where, name) for name in names if name in labelled]
        return found

    def _swept(self, app: str, keep: tuple[ObjectRef, ...]) -> list[tuple[kinds.Resource, str,
                                                                          str]]:
        """The rule before inventories: the app's labelled objects of the usual kinds in the
        cluster's namespace, for records that do not say what they applied."""
        kept = {(r.kind, r.namespace or self._namespace, r.name) for r in keep}
        return [(resource, self._namespace, name)
                for resource in kinds.delete_order(kinds.PRUNED)
                for name in self._labelled(resource, app, self._namespace)
                if (resource.kind, self._namespace, name) not in kept]

    def _labelled(self, resource: kinds.Resource, app: str, namespace: str) -> list[str]:
        """Names of the app's objects of one kind (metadata only: no Secret value is read)."""
        query = {"labelSelector": ledgersecret.selector(app)}
        if resource == kinds.SECRET:
            query["fieldSelector"] = f"type!={ledgersecret.TYPE}"  # the ledger is not pruned
        listed = self.api.request("GET", resource.path(namespace or None), query=query,
                                  accept=METADATA_LIST,
                                  action=Action("list", resource.rbac_name,
                                                namespace=namespace or None))
        return sorted(item["metadata"]["name"] for item in listed.get("items") or ())

    def _listed(self, resource: kinds.Resource, namespace: str) -> list[dict[str, Any]]:
        listed = self.api.request("GET", resource.path(namespace or None),
                                  action=Action("list", resource.rbac_name,
                                                namespace=namespace or None))
        return [dict(item) for item in listed.get("items") or ()]

    def _delete(self, resource: kinds.Resource, namespace: str, name: str) -> None:
        self._log.info("kube.delete", kind=resource.kind, namespace=namespace, name=name)
        with contextlib.suppress(ApiError):  # 404: gone already
            self.api.request("DELETE", resource.path(namespace or None, name),
                             body={"propagationPolicy": "Background"}, expect=(404,),
                             action=Action("delete", resource.rbac_name, name, namespace or None))

    def _inventory(self, release: Release) -> tuple[ObjectRef, ...]:
        return inventory.of_release(release.manifests, self._scopes(release))

    def _scopes(self, release: Release) -> dict[tuple[str, str], bool]:
        """Whether each kind of the release is namespaced: from the table, discovery, or the
        release's own CRDs (whose kinds are not served until they are applied)."""
        scopes = inventory.crd_scopes(release.manifests)
        for manifest in release.manifests:
            if _key(manifest) not in scopes:
                scopes[_key(manifest)] = self._resource(manifest).namespaced
        return scopes

    def _resource(self, manifest: Manifest) -> kinds.Resource:
        """The kind's API resource: from the table, else from discovery (cached)."""
        found = self._served(manifest)
        if found is None:
            api_version, kind = _key(manifest)
            raise DriverError(f"{kind} ({api_version}) is not served by this cluster",
                              cluster=self.cluster.name)
        return found

    def _served(self, manifest: Mapping[str, Any]) -> kinds.Resource | None:
        """The kind's API resource, or None while the cluster does not serve it."""
        key = _key(manifest)
        found = self._resources.get(key)
        if found is None:
            try:
                document = self.api.request("GET", kinds.discovery_path(key[0]),
                                            action=Action("discover", key[0]),
                                            expect=(404,))
            except ApiError:
                document = {}  # the group/version is not served at all
            found = kinds.from_discovery(document, *key)
            if found is not None:
                self._resources[key] = found
        return found

    def _where(self, resource: kinds.Resource, manifest: Manifest) -> str:
        if not resource.namespaced:
            return ""
        return str((manifest.get("metadata") or {}).get("namespace") or self._namespace)

    # --- ledger ------------------------------------------------------------------------------

    def records(self, app: str, *, with_releases: bool = False) -> list[Record]:
        """The app's records, from the Secrets' metadata alone (their manifests are read only
        by `stored_release`), or whole `with_releases`, kept for `stored_release` to answer
        from; one that cannot be read stands in as `unreadable`."""
        listed = self.api.request(
            "GET", kinds.SECRET.path(self._namespace),
            accept="application/json" if with_releases else METADATA_LIST,
            query={"labelSelector": ledgersecret.selector(app),
                   "fieldSelector": f"type={ledgersecret.TYPE}"},
            action=Action("list", "secrets", namespace=self._namespace))
        items = listed.get("items") or ()
        if with_releases:
            self._listed_secrets = {(item["metadata"]["name"],
                                     str(item["metadata"]["resourceVersion"])): item
                                    for item in items}
        records = sorted((self._record(app, item) for item in items),
                         key=lambda record: record.revision)
        held = self._held.get(app)
        if held is not None:
            self._ledgers[app] = (held.holder, list(records))
        return records

    def _ledger(self, app: str, holder: str) -> list[Record]:
        """The app's records: as listed under HOLDER's current hold (with its writes since),
        else listed now."""
        known, held = self._ledgers.get(app), self._held.get(app)
        if known is not None and held is not None and known[0] == held.holder == holder:
            return list(known[1])
        return self.records(app)

    def _noted(self, app: str, holder: str, *, written: Record | None = None,
               dropped: int | None = None) -> None:
        """Keep the known ledger in step with HOLDER's own write (or delete) of a record."""
        known = self._ledgers.get(app)
        if known is None or known[0] != holder:
            return
        gone = written.revision if written is not None else dropped
        records = [r for r in known[1] if r.revision != gone]
        if written is not None:
            records.append(written)
        self._ledgers[app] = (holder, sorted(records, key=lambda record: record.revision))

    def _record(self, app: str, item: dict[str, Any]) -> Record:
        try:
            if not ledgersecret.has_record(item):  # written before records were annotations
                item = self._ledger_secret(app, item["metadata"]["name"])
            return ledgersecret.record_of(item)
        except (ValueError, KeyError, TypeError, OSError, DriverError) as error:
            why = apierrors.one_line(str(error))
            self._log.warning("kube.ledger_unreadable", secret=item["metadata"].get("name"),
                              detail=why)
            return ledgersecret.unreadable(item, app, self.cluster.name, why)

    def stored_release(self, record: Record) -> Release:
        name = ledgersecret.name(record.app, record.revision)
        secret = self._listed_secrets.get((name, str(record.resource_version))) or \
            self._ledger_secret(record.app, name)
        return self._decoded(lambda item: ledgersecret.release_of(item, record.app), secret)

    def create_record(self, record: Record, release: Release, *, holder: str) -> Record:
        """Store a new revision with its inventory; before the app's first, what of the
        release already runs is kept as revision 0 (`adopted`); then the ledger is trimmed."""
        record = record.updated(inventory=self._inventory(release))
        self._fence(record.app, holder)
        if record.revision == 1 and not self._ledger(record.app, holder):
            self._adopt(record, release, holder=holder)
        created = self._create(record, release)
        self._noted(record.app, holder, written=created)
        self._trim(record.app, holder)
        return created

    def _create(self, record: Record, release: Release) -> Record:
        try:
            body = ledgersecret.encode(record, release, namespace=self._namespace)
        except ledgersecret.TooLarge as error:
            raise DriverError(f"{record.app} v{release.version}: {error}; nothing was written",
                              cluster=self.cluster.name) from error
        name = body["metadata"]["name"]
        try:
            created = self.api.request("POST", kinds.SECRET.path(self._namespace), body=body,
                                       expect=(409,),
                                       action=Action("create", "secrets", name, self._namespace))
        except ApiError as error:
            raise Conflict(f"{self.cluster.name}: revision {record.revision} of {record.app} "
                           "exists already") from error
        return record.updated(resource_version=created["metadata"]["resourceVersion"])

    def _adopt(self, first: Record, release: Release, *, holder: str) -> None:
        """Objects of the release that run already (applied by kubectl or Helm) become
        revision 0, so a failing first release goes back to them instead of deleting them."""
        captured = []
        for manifest in release.manifests:
            resource = self._served(manifest)
            if resource is None:
                continue  # its CRD comes with the release: nothing of it can run yet
            namespace = self._where(resource, manifest)
            live = self._live(resource, namespace, manifest["metadata"]["name"])
            if live is not None:
                captured.append(ownership.adopted(live, api_version=resource.api_version,
                                                  app=release.app))
        if not captured:
            return
        adopted = Release(app=release.app, version=ADOPTED_VERSION, manifests=tuple(captured),
                          checks="")
        now = ledger.now()
        record = first.updated(revision=0, version=ADOPTED_VERSION, status=Status.ADOPTED,
                               started_at=now, finished_at=now, inventory=self._inventory(adopted),
                               reason="objects that ran before the first wavegate release")
        try:
            self._noted(release.app, holder, written=self._create(record, adopted))
        except Conflict:  # adopted already by an earlier attempt: read it with the ledger
            self._ledgers.pop(release.app, None)
        self._log.info("kube.adopted", app=release.app, objects=len(captured))

    def _trim(self, app: str, holder: str) -> None:
        """Keep `history` revisions (and whatever the ledger may still need)."""
        for old in ledger.trimmed(self._ledger(app, holder), keep=self.history):
            name = ledgersecret.name(app, old.revision)
            self._log.info("kube.ledger_trimmed", app=app, revision=old.revision)
            with contextlib.suppress(ApiError):  # gone already
                self.api.request("DELETE", kinds.SECRET.path(self._namespace, name),
                                 expect=(404,),
                                 action=Action("delete", "secrets", name, self._namespace))
            self._noted(app, holder, dropped=old.revision)

    def update_record(self, record: Record, *, holder: str) -> Record:
        patch = ledgersecret.update_patch(record)
        self._fence(record.app, holder)
        name = ledgersecret.name(record.app, record.revision)
        try:
            stored = self.api.request("PATCH", kinds.SECRET.path(self._namespace, name),
                                      body=patch, content_type=MERGE_PATCH, expect=(409,),
                                      action=Action("patch", "secrets", name, self._namespace))
        except ApiError as error:
            self._ledgers.pop(record.app, None)  # changed underneath: list it again
            raise Conflict(f"{self.cluster.name}: revision {record.revision} of {record.app} "
                           "changed since it was read") from error
        updated = record.updated(resource_version=stored["metadata"]["resourceVersion"])
        self._noted(record.app, holder, written=updated)
        return updated

    def _ledger_secret(self, app: str, name: str) -> dict[str, Any]:
        return self.api.request("GET", kinds.SECRET.path(self._namespace, name),
                                action=Action("get", "secrets", name, self._namespace))

    def _decoded(self, decode: Callable[[dict[str, Any]], T], secret: dict[str, Any]) -> T:
        try:
            return decode(secret)
        except (ValueError, KeyError, TypeError, OSError) as error:
            name = secret.get("metadata", {}).get("name")
            detail = apierrors.one_line(str(error))
            raise DriverError(f"ledger Secret {name} is unreadable: {detail}",
                              cluster=self.cluster.name) from error

    # --- lock --------------------------------------------------------------------------------

    def acquire_lock(self, app: str, *, holder: str, ttl: float, force: bool = False) -> None:
        with self._leasing:
            self._terms[app] = ttl
            self._forget(app)
            taken = self._acquire(app, holder=holder, ttl=ttl, force=force)
        if taken is not None:
            wait = lease.takeover_wait(taken, taker=holder)
            self._log.warning("kube.lock_taken", app=app, holder=holder,
                              previous=lease.holder(taken), force=force, waited=wait)
            # The old holder may still write on its last look at the lease for this long
            # (see `kube.lease`): our first write comes after all of its.
            self.api.sleep(wait)

    def _acquire(self, app: str, *, holder: str, ttl: float,
                 force: bool) -> dict[str, Any] | None:
        """Take or renew the lease; the lease as it was if it was taken from another holder."""
        if self._take_released(app, holder=holder, ttl=ttl):
            return None
        current: dict[str, Any] | None = None
        for _ in range(LOCK_ATTEMPTS):
            now = datetime.now(UTC)
            current = self._read_lease(app)
            if current is None:
                if self._create_lease(app, holder=holder, ttl=ttl, now=now):
                    return None
                continue  # created by someone else in between: judge theirs
            decision = self._judge(app, current, holder=holder, force=force)
            if decision is lease.Decision.HELD and lease.looks_expired(current, now=now):
                current = self._watch_for_renewal(app, current)
                if current is None:
                    continue  # deleted meanwhile: take it
                decision = self._judge(app, current, holder=holder, force=force)
            if decision is lease.Decision.HELD:
                raise self._held_by(app, current)
            if decision is lease.Decision.STALE:
                raise StaleLock(cluster=self.cluster.name, app=app,
                                      holder=str(lease.holder(current)),
                                      expires=lease.expires_text(current))
            replacement = (lease.renewed(current, ttl=ttl, now=now)
                           if decision is lease.Decision.RENEW
                           else lease.taken(current, holder_id=holder, ttl=ttl, now=now))
            if self._replace_lease(app, replacement, holder=holder):
                taken = decision is lease.Decision.TAKE and lease.holder(current)
                return current if taken else None
        raise self._held_by(app, current or {})

    def _take_released(self, app: str, *, holder: str, ttl: float) -> bool:
        """The usual case in one request: a lease nobody holds, taken by a patch that tests
        that it has no holder (see `kube.lease`); a missing one created. False: it has a
        holder (or patches are refused), and the lease is read and judged instead."""
        if not self._may_patch_leases:
            return False
        name = lease.name(app)
        sent = time.monotonic()
        try:
            taken = self.api.request(
                "PATCH", kinds.LEASE.path(self._namespace, name),
                body=lease.take_if_released(holder_id=holder, ttl=ttl, now=datetime.now(UTC)),
                content_type=JSON_PATCH, expect=(422, 409, 404, 403),
                action=Action("patch", "leases.coordination.k8s.io", name, self._namespace))
        except ApiError as error:
            if error.status == 403:
                self._may_patch_leases = False  # an older role: read, then write, as before
            if error.status == 404:
                return self._create_lease(app, holder=holder, ttl=ttl, now=datetime.now(UTC))
            return False
        self._remember(app, taken, holder=holder, sent=sent)
        return True

    def _judge(self, app: str, current: dict[str, Any], *, holder: str,
               force: bool) -> lease.Decision:
        """Who may take the lease, its expiry judged on our own clock (see `kube.lease`)."""
        at = time.monotonic()
        self._sightings[app] = lease.sighted(self._sightings.get(app), current, at=at)
        return lease.decide(current, holder_id=holder, force=force, now=datetime.now(UTC),
                            seen=self._sightings[app], at=at)

    def _watch_for_renewal(self, app: str, current: dict[str, Any]) -> dict[str, Any] | None:
        """A lease whose timestamps say it ran out: read it until it is renewed or a whole
        term passes without a renewal on our clock (then its holder looks dead)."""
        seen = self._sightings[app]
        until = seen.since + lease.term(current)
        latest: dict[str, Any] | None = current
        while latest is not None and time.monotonic() < until:
            self.api.sleep(min(1.0, max(lease.term(current) / 4, 0.05)))
            latest = self._read_lease(app)
            if latest is not None and lease.sighted(seen, latest, at=0.0) is not seen:
                return latest  # renewed or changed hands: judged afresh
        return latest

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        """Extend our lease: one compare-and-set on the lease as we last saw it, read again
        only when it changed (taken: Preempted)."""
        with self._leasing:
            self._terms[app] = ttl
            self._renew(app, holder=holder, ttl=ttl)

    def _renew(self, app: str, *, holder: str, ttl: float) -> None:
        known = self._held.get(app)
        if known is not None and known.holder == holder and self._replace_lease(
                app, lease.renewed(known.lease, ttl=ttl, now=datetime.now(UTC)), holder=holder):
            return
        for _ in range(LOCK_ATTEMPTS):
            current = self._read_lease(app)
            if current is None:
                if self._retake(app, holder=holder):
                    return
                continue  # someone else created it first: judge theirs
            owner = lease.holder(current)
            if owner != holder:
                self._forget(app)
                raise Preempted(cluster=self.cluster.name, app=app, holder=owner)
            if self._replace_lease(app, lease.renewed(current, ttl=ttl, now=datetime.now(UTC)),
                                   holder=holder):
                return
        raise DriverError(f"could not renew the lock on {app}: it kept changing",
                          cluster=self.cluster.name)

    def _retake(self, app: str, *, holder: str) -> bool:
        """A lease deleted by hand under our live run is ours again (False: someone else
        created it first). A lease taken from us is never taken back: that one still exists."""
        ttl = self._terms.get(app, lease.DEFAULT_TERM)
        if not self._create_lease(app, holder=holder, ttl=ttl, now=datetime.now(UTC)):
            return False
        self._log.warning("kube.lock_retaken", app=app, holder=holder,
                          detail="the lease was deleted while the run held it")
        return True

    def release_lock(self, app: str, *, holder: str) -> None:
        with self._leasing:
            known = self._held.get(app)
            self._forget(app)
            # Cleared, not deleted: a run this one took the lease from reads "released" and
            # stops, where a missing lease would be taken again. The lease as we last wrote it
            # first (a compare-and-set: a 409 says it changed since), then as read now.
            if known is not None and known.holder == holder and self._replace_lease(
                    app, lease.released(known.lease)):
                return
            current = self._read_lease(app)
            if current is None or lease.holder(current) != holder:
                return  # not ours (any more): leave it to whoever holds it
            self._replace_lease(app, lease.released(current))  # 409: changed since; not ours

    def read_lock(self, app: str) -> Lock | None:
        return Lock.of_lease(self._read_lease(app))

    def _fence(self, app: str, holder: str, *, within: float | None = None) -> None:
        """Every write first confirms this run still holds the lease (a lease alone does not
        stop a holder that lost it without noticing): by a look younger than the lease's trust
        window (a run that takes the lease waits that window out: see `kube.lease`), else by
        renewing it, a compare-and-set that proves it ours as a read would and extends it."""
        with self._leasing:
            known = self._held.get(app)
            if known is not None and known.trusted(holder, at=time.monotonic(), within=within):
                return
            if known is not None and known.holder == holder and app in self._terms:
                self._renew(app, holder=holder, ttl=self._terms[app])
                return
            current = self._read_lease(app)
            if current is None:
                if self._retake(app, holder=holder):
                    return
                current = self._read_lease(app)  # someone else created it first
            owner = lease.holder(current) if current else None
            if owner != holder:
                self._forget(app)
                raise Preempted(cluster=self.cluster.name, app=app, holder=owner)
            self._remember(app, current, holder=holder)

    def _remember(self, app: str, current: dict[str, Any] | None, *, holder: str,
                  sent: float | None = None) -> None:
        """Note the lease as ours, as of SENT (when the request that showed it was sent)."""
        if current is None:
            return
        previous = self._held.get(app)
        if previous is None or previous.holder != holder:
            self._ledgers.pop(app, None)  # a new hold: what was known of the ledger is not
        self._held[app] = lease.Held(current, holder, time.monotonic() if sent is None else sent)

    def _forget(self, app: str) -> None:
        self._held.pop(app, None)
        self._ledgers.pop(app, None)

    def _read_lease(self, app: str) -> dict[str, Any] | None:
        name = lease.name(app)
        try:
            return self.api.request("GET", kinds.LEASE.path(self._namespace, name), expect=(404,),
                                    action=Action("get", "leases.coordination.k8s.io", name,
                                                  self._namespace))
        except ApiError:
            return None

    def _create_lease(self, app: str, *, holder: str, ttl: float, now: datetime) -> bool:
        body = lease.new(app, namespace=self._namespace, holder=holder, ttl=ttl, now=now)
        sent = time.monotonic()
        try:
            created = self.api.request(
                "POST", kinds.LEASE.path(self._namespace), body=body, expect=(409,),
                action=Action("create", "leases.coordination.k8s.io", lease.name(app),
                              self._namespace))
        except ApiError:
            return False
        self._remember(app, created, holder=holder, sent=sent)
        return True

    def _replace_lease(self, app: str, body: dict[str, Any], *,
                       holder: str | None = None) -> bool:
        """A compare-and-set: False when the lease changed since it was read (or is gone).
        A lease written with HOLDER as its holder is remembered as ours."""
        name = lease.name(app)
        sent = time.monotonic()
        try:
            stored = self.api.request(
                "PUT", kinds.LEASE.path(self._namespace, name), body=body, expect=(409, 404),
                action=Action("update", "leases.coordination.k8s.io", name, self._namespace))
        except ApiError:
            return False
        if holder is not None:
            self._remember(app, stored, holder=holder, sent=sent)
        return True

    def _held_by(self, app: str, current: dict[str, Any]) -> LockHeld:
        return LockHeld(cluster=self.cluster.name, app=app,
                        holder=lease.holder(current) or "unknown",
                        expires=lease.expires_text(current))


def _key(manifest: Mapping[str, Any]) -> tuple[str, str]:
    return str(manifest.get("apiVersion")), str(manifest.get("kind"))


def _roles(manifests: Iterable[Manifest]) -> set[tuple[str, str]]:
    return {(str(m.get("kind")), str((m.get("metadata") or {}).get("name")))
            for m in manifests if m.get("kind") in ("Role", "ClusterRole")}


def _role_of(manifest: Manifest) -> tuple[str, str] | None:
    """(kind, name) of the role a RoleBinding or ClusterRoleBinding grants."""
    if manifest.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
        return None
    ref = manifest.get("roleRef") or {}
    return str(ref.get("kind")), str(ref.get("name"))


def _is_established(crd: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (crd.get("status") or {}).get("conditions") or ())


class _Rollout:
    """One workload's rollout, followed through watches on it and on its pods until judged."""

    def __init__(self, api: _Api, resource: kinds.Resource, namespace: str, name: str) -> None:
        self.api, self.resource, self.namespace, self.name = api, resource, namespace, name
        self.what = f"{resource.kind}/{name}"
        self.progress = "not started"
        self._revisions: dict[str, str | None] = {}  # ReplicaSet name -> its revision
        self._stopping: dict[str, float] = {}  # pod uid -> when it was first seen stopping

    def wait(self, *, deadline: float, timeout: float,
             look: Callable[[bool], None] = lambda final: None,
             applied: dict[str, Any] | None = None,
             events: queue.Queue[Event] | None = None) -> None:
        """Until judged; `look` runs at least every `LOCK_LOOK` seconds in between, and after
        each event. APPLIED is the workload as the apply just left it: its rollout is watched
        from there, not read again, unless it looks settled already (a verdict is never given
        on an old copy). EVENTS is where the watches put what they see (others may put a
        ("lease", "WAKE", None) there: a look is due)."""
        pods: dict[str, Any] = {}
        if events is None:
            events = queue.Queue()
        workload = applied if applied is not None and not self._settled(applied) else \
            self.api.request("GET", self.resource.path(self.namespace, self.name),
                             action=Action("get", self.resource.rbac_name, self.name,
                                           self.namespace))
        if self._judged(workload, pods):
            return
        watches = self._watches(workload, events)
        for watch in watches:
            watch.start()
        try:
            while not self._judged(workload, pods):
                look(False)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RolloutFailed(f"{self.what}: not rolled out after {timeout:g}s: "
                                        f"{self.progress}{self._hint(workload, pods)}")
                try:
                    event = events.get(timeout=min(remaining, LOCK_LOOK))
                except queue.Empty:
                    continue
                workload = self._follow(workload, pods, event)
        finally:
            for watch in watches:
                watch.stop()

    def _watches(self, workload: dict[str, Any], events: queue.Queue[Event]) -> list[_Watch]:
        selector = workloads.label_selector((workload.get("spec") or {}).get("selector") or {})
        return [
            _Watch(self.api, self.resource.path(self.namespace), tag="workload", events=events,
                   query={"fieldSelector": f"metadata.name={self.name}"},
                   resource_version=workload["metadata"]["resourceVersion"],
                   action=Action("watch", self.resource.rbac_name, self.name, self.namespace)),
            # Pods are looked at for a crash, and for old ones still stopping once the workload
            # reads done; no list first: the watch brings those that exist before any change.
            _Watch(self.api, kinds.POD.path(self.namespace), tag="pods", events=events,
                   query={"labelSelector": selector}, resource_version=kubewatch.NOW,
                   action=Action("watch", "pods", namespace=self.namespace)),
        ]

    def _follow(self, workload: dict[str, Any], pods: dict[str, Any],
                event: Event) -> dict[str, Any]:
        """Fold one watch event into what is known; the workload as it now is."""
        tag, kind, payload = event
        if tag == "lease":
            return workload  # a wake-up: the look that follows sees what changed
        if kind == "ERROR":
            raise payload
        if tag == "pods":
            if kind == "DELETED":
                pods.pop(payload["metadata"]["name"], None)
                return workload
            if kind == "SYNC":
                pods.clear()
            for pod in payload if kind == "SYNC" else (payload,):
                pods[pod["metadata"]["name"]] = pod
                if workloads.is_stopping(pod):
                    self._stopping.setdefault(pod["metadata"]["uid"], time.monotonic())
            return workload
        if kind == "DELETED" or (kind == "SYNC" and not payload):
            raise RolloutFailed(f"{self.what} was deleted during its rollout")
        return dict(payload[0] if kind == "SYNC" else payload)

    def _settled(self, workload: dict[str, Any]) -> bool:
        verdict = workloads.judge(self.resource.kind, workload)
        return verdict.done or verdict.failure is not None

    def _judged(self, workload: dict[str, Any], pods: Mapping[str, Any]) -> bool:
        """True once rolled out; RolloutFailed once it cannot be."""
        verdict = workloads.judge(self.resource.kind, workload)
        self.progress = verdict.progress
        if verdict.failure:
            raise RolloutFailed(f"{self.what}: {verdict.failure}")
        if verdict.done:
            now = time.monotonic()
            stopping_for = {uid: now - since for uid, since in self._stopping.items()}
            serving = workloads.old_pods_serving(self.resource.kind, workload, pods.values(),
                                                 stopping_for)
            if serving is None:
                return True
            self.progress = f"{verdict.progress}, {serving}"
            return False
        problem = self._crashing(workload, pods)
        if problem:
            raise RolloutFailed(f"{self.what}: {problem}")
        return False

    def _hint(self, workload: dict[str, Any], pods: Mapping[str, Any]) -> str:
        """Why a new pod is not running yet, if one says: ` (pod x: ErrImagePull: ...)`."""
        for pod in pods.values():
            waiting = workloads.pod_waiting(pod)
            if waiting and self._current(workload, pod):
                return f" ({apierrors.one_line(waiting)})"
        return ""

    def _crashing(self, workload: dict[str, Any], pods: Mapping[str, Any]) -> str | None:
        if not workloads.observed(workload):
            return None  # which pods are new is known only once the controller saw the spec
        for pod in pods.values():
            problem = workloads.pod_problem(pod)
            if problem and self._current(workload, pod):
                return problem
        return None

    def _current(self, workload: dict[str, Any], pod: dict[str, Any]) -> bool:
        revision = None
        owner = workloads.owner(pod)
        if self.resource.kind == "Deployment" and owner and owner[0] == "ReplicaSet":
            revision = self._replica_set_revision(owner[1])
        return workloads.is_current(self.resource.kind, workload, pod,
                                  replica_set_revision=revision)

    def _replica_set_revision(self, name: str) -> str | None:
        if name not in self._revisions:
            try:
                found = self.api.request(
                    "GET", kinds.REPLICA_SET.path(self.namespace, name), expect=(404,),
                    action=Action("get", kinds.REPLICA_SET.rbac_name, name, self.namespace))
            except ApiError:
                found = {}
            annotations = (found.get("metadata") or {}).get("annotations") or {}
            self._revisions[name] = annotations.get(workloads.REVISION_ANNOTATION)
        return self._revisions[name]


class _LeaseSight:
    """The app's Lease followed by one WATCH for the length of a rollout wait, so the wait's
    looks at it cost no request while nothing changes.

    The sink of a `_Watch` (`put` runs on the watch's thread): an event whose lease is held
    by `holder` is ours (a renewal, a retake) and dropped; any other (taken, released,
    deleted, a re-list that does not show it ours) is a change, kept for the next look, which
    it wakes at once. An ERROR (403 where the identity lacks `watch` on leases, or what
    retries did not cure) ends the following: the looks then ask the API server as they
    would without a watch.
    """

    def __init__(self, api: _Api, path: str, *, name: str, namespace: str, holder: str,
                 version: str) -> None:
        self._log, self._holder = api.log, holder
        self._changed, self._failed = threading.Event(), threading.Event()
        self._wake: queue.Queue[Event] | None = None
        self._started = False
        self._watch = _Watch(api, path, tag="lease", events=self,
                             query={"fieldSelector": f"metadata.name={name}"},
                             resource_version=version,
                             action=Action("watch", "leases.coordination.k8s.io", name,
                                           namespace))

    def following(self) -> bool:
        """Whether the watch follows the lease: opened on the first call (a rollout judged
        at once needs none), False once it failed."""
        if not self._started:
            self._started = True
            self._watch.start()
        return not self._failed.is_set()

    def changed(self) -> bool:
        """Whether a change not ours came since the last call (the look that asks the API
        server next sees it, or a newer one)."""
        if not self._changed.is_set():
            return False
        self._changed.clear()
        return True

    def wakes(self, events: queue.Queue[Event]) -> None:
        """Where to say that a look is due: the queue the rollout wait now reads."""
        self._wake = events

    def stop(self) -> None:
        if self._started:
            self._watch.stop()

    def put(self, event: Event, /) -> None:
        _, kind, payload = event
        if kind == "ERROR":
            if self._failed.is_set():
                return
            self._failed.set()
            self._log.warning("kube.lease_watch_unavailable", detail=str(payload),
                              instead=f"a look at the lease every {LOCK_LOOK:g}s of wait")
        elif self._ours(kind, payload):
            return
        else:
            self._changed.set()
        wake = self._wake
        if wake is not None:
            wake.put(("lease", "WAKE", None))

    def _ours(self, kind: str, payload: Any) -> bool:
        if kind == "SYNC":
            return len(payload) == 1 and lease.holder(payload[0]) == self._holder
        return kind != "DELETED" and lease.holder(payload) == self._holder


class _Sink(Protocol):
    """Where a `_Watch` puts its events: a queue, or a `_LeaseSight`."""

    def put(self, item: Event, /) -> None: ...


class _Watch:
    """One collection followed by `kubewatch.ListWatch` on a thread of its own, into `events`.

    Puts (tag, "SYNC", items) after each list (the first one, and after 410 Gone), then (tag,
    type, object) per change. An error that retries do not cure is put as (tag, "ERROR",
    DriverError) and ends the thread. `stop` returns promptly.
    """

    def __init__(self, api: _Api, path: str, *, tag: str, events: _Sink,
                 query: Mapping[str, str], action: Action,
                 resource_version: str | None = None) -> None:
        self.api, self.path, self.tag, self.events = api, path, tag, events
        self.query, self.action = dict(query), action
        self._stopped = threading.Event()
        self._follower = kubewatch.ListWatch(
            list_=self._list, watch=self._open, resource_version=resource_version,
            on_sync=lambda items: events.put((tag, "SYNC", items)),
            on_event=lambda kind, obj: events.put((tag, kind, obj)),
            on_drop=lambda detail: api.log.info("kube.watch_dropped", action=str(action),
                                                detail=detail),
            stopped=self._stopped)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{tag}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._follower.stop()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._follower.run()
        except Exception as error:  # ends the thread; the waiting side raises it
            if not self._stopped.is_set():
                if isinstance(error, kubewatch.Failed):
                    error = apierrors.from_watch_event(dict(error.status))
                if not isinstance(error, DriverError | RolloutFailed):
                    error = DriverError(apierrors.describe(error, self.action),
                                        cluster=self.api.cluster.name)
                self.events.put((self.tag, "ERROR", error))

    def _list(self) -> dict[str, Any]:
        return self.api.request("GET", self.path, query=self.query,
                                action=Action("list", self.action.resource, self.action.name,
                                              self.action.namespace))

    def _open(self, version: str) -> urllib3.BaseHTTPResponse:
        query = {**self.query, "watch": "true", "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(WATCH_SECONDS)}
        if version != kubewatch.NOW:
            query["resourceVersion"] = version
        try:
            return self.api.stream(self.path, query=query, action=self.action, expect=(410,))
        except ApiError as error:
            raise kubewatch.Gone() from error  # 410 before the first event


@dataclass(frozen=True)
class _Connection:
    """One loading of the kubeconfig: where to go, and the credentials and pool to go with."""

    host: str
    configuration: Any  # kubernetes.client.Configuration
    client: Any  # kubernetes.client.ApiClient, which owns the TLS pool
    generation: int

    @property
    def pool(self) -> urllib3.PoolManager:
        manager: urllib3.PoolManager = self.client.rest_client.pool_manager
        return manager

    def headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        # auth_settings() runs the client's refresh hook, so an expiring exec-plugin token is
        # renewed here; whatever it yields is registered before it is sent anywhere.
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                for secret in kubeconfig.header_secrets(setting["value"]):
                    redact.register(secret)
                headers[setting["key"]] = setting["value"]
        return headers


class _Api:
    """HTTP to one API server: timeouts, retries, re-authentication, error translation."""

    def __init__(self, cluster: Cluster, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cluster = cluster
        self.sleep = sleep
        self.log = log.bind(cluster=cluster.name)
        self.calls: Counter[str] = Counter()  # "GET", "WATCH", ...: what a deploy costs
        self.requests: Counter[str] = Counter()  # "get leases...", "watch pods": the same, by kind
        self._connection: _Connection | None = None
        self._lock = threading.Lock()

    def load(self) -> _Connection:
        """(Re)read the cluster's credentials into a client of our own."""
        if kubeconfig.uses_service_account(self.cluster):
            configuration = self._service_account()
        else:
            configuration = self._kubeconfig()
        configuration.retries = False  # tenacity retries, and logs each retry
        _register_loaded(configuration)
        with self._lock:
            generation = self._connection.generation + 1 if self._connection else 1
            self._connection = _Connection(configuration.host, configuration,
                                           client.ApiClient(configuration), generation)
            return self._connection

    def _service_account(self) -> Any:
        """The pod's service account. The client's loader reads the token file again a minute
        after each read, and a 401 reloads it at once (`_authenticated`): a projected token
        that the kubelet rotates is picked up either way."""
        missing = kubeconfig.missing_service_env()
        token, ca = kubeconfig.service_account()
        if missing or not token.is_file():
            what = ", ".join(missing) if missing else f"no token at {token}"
            raise DriverError(f"context {kubeconfig.IN_CLUSTER}: not inside a pod ({what}); "
                              f"set {kubeconfig.SERVICE_ACCOUNT_DIR_ENV} if the service "
                              "account is mounted elsewhere", cluster=self.cluster.name)
        configuration = client.Configuration()
        try:
            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=str(token), cert_filename=str(ca), try_refresh_token=True)
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError) as error:
            raise DriverError(f"context {kubeconfig.IN_CLUSTER}: "
                              f"{apierrors.one_line(str(error))}",
                              cluster=self.cluster.name) from error
        return configuration

    def _kubeconfig(self) -> Any:
        """The kubeconfig's context for the cluster."""
        files = kubeconfig.locations(self.cluster.kubeconfig)
        existing = [path for path in files if path.is_file()]
        if not existing:
            raise DriverError(f"kubeconfig {os.pathsep.join(map(str, files))} not found",
                              cluster=self.cluster.name)
        for path in existing:
            _register_secrets(path)
        configuration = client.Configuration()
        try:
            with _LOADING:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.pathsep.join(map(str, existing)),
                    context=self.cluster.context, client_configuration=configuration,
                    persist_config=False)
        except (ConfigException, OSError, ValueError, KeyError, TypeError) as error:
            raise DriverError(f"kubeconfig context {self.cluster.context or '(current)'}: "
                              f"{apierrors.one_line(str(error))}",
                              cluster=self.cluster.name) from error
        return configuration

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.client.rest_client.pool_manager.clear()
            connection.client.close()

    def request(self, method: str, path: str, *, action: Action,
                query: Mapping[str, str] | None = None, body: Any = None,
                content_type: str = JSON, accept: str = JSON,
                expect: tuple[int, ...] = ()) -> dict[str, Any]:
        """One call, its answer as a dict. Statuses in `expect` raise ApiError for the caller
        to handle; every other failure is a DriverError."""
        self._count(method, action)
        response = self._call(method, path, action=action, query=query, body=body,
                              content_type=content_type, accept=accept, expect=expect,
                              stream=False)
        data = response.data
        return json.loads(data) if data else {}

    def stream(self, path: str, *, query: Mapping[str, str], action: Action,
               expect: tuple[int, ...] = ()) -> urllib3.BaseHTTPResponse:
        """A watch: the open response, to be read as it arrives and closed by the caller."""
        self._count("WATCH", action)
        return self._call("GET", path, action=action, query=query, body=None, content_type=JSON,
                          accept=JSON, expect=expect, stream=True)

    def _count(self, method: str, action: Action) -> None:
        with self._lock:  # watches count from their own threads
            self.calls[method] += 1
            self.requests[f"{action.verb} {action.resource}"] += 1

    def _call(self, method: str, path: str, *, action: Action, query: Mapping[str, str] | None,
              body: Any, content_type: str, accept: str, expect: tuple[int, ...],
              stream: bool) -> urllib3.BaseHTTPResponse:
        retrying = retry.retrying(retry.API_CALL, retry_on=apierrors.is_transient,
                                  on_retry=self._log_retry(action), sleep=self.sleep)
        request = _Request(method, path, query, body, content_type, accept, stream)
        try:
            response: urllib3.BaseHTTPResponse = retrying(self._authenticated, request)
        except ApiError as error:
            if error.status in expect:
                raise
            raise DriverError(apierrors.describe(error, action),
                              cluster=self.cluster.name) from error
        except Unreachable as error:
            raise DriverError(apierrors.describe(error, action),
                              cluster=self.cluster.name) from error
        return response

    def _authenticated(self, request: _Request) -> urllib3.BaseHTTPResponse:
        """Send; on a 401 reload the kubeconfig once (exec-plugin tokens expire) and resend."""
        connection = self._current()
        try:
            return _send(connection, request)
        except ApiError as error:
            if error.status != 401:
                raise
        self.log.info("kube.reauthenticate", reason="401 Unauthorized")
        return _send(self._reload(connection), request)

    def _current(self) -> _Connection:
        connection = self._connection
        return connection if connection is not None else self.load()

    def _reload(self, stale: _Connection) -> _Connection:
        current = self._connection
        if current is not None and current.generation != stale.generation:
            return current  # another thread reloaded already
        return self.load()

    def _log_retry(self, action: Action) -> Callable[[tenacity.RetryCallState], None]:
        def log_retry(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.log.warning("kube.retry", policy=retry.API_CALL.name, action=str(action),
                             attempt=state.attempt_number,
                             wait=round(state.next_action.sleep, 2) if state.next_action else None,
                             detail=apierrors.one_line(str(error)))
        return log_retry


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: Mapping[str, str] | None
    body: Any
    content_type: str
    accept: str
    stream: bool


def _send(connection: _Connection, request: _Request) -> urllib3.BaseHTTPResponse:
    url = connection.host + request.path
    if request.query:
        url += "?" + urlencode(request.query)
    headers = connection.headers(request.accept)
    data = None
    if request.body is not None:
        data = json.dumps(request.body).encode()
        headers["Content-Type"] = request.content_type
    try:
        response = connection.pool.request(
            request.method, url, body=data, headers=headers, retries=False, redirect=False,
            timeout=WATCH_TIMEOUT if request.stream else REQUEST_TIMEOUT,
            preload_content=not request.stream)
    except urllib3.exceptions.SSLError as error:
        raise Unreachable(f"{connection.host}: TLS failed: {error}", transient=False) from error
    except urllib3.exceptions.HTTPError as error:
        raise Unreachable(f"{connection.host}: {_reason(error)}") from error
    if response.status >= 400:
        content = response.read() if request.stream else response.data
        response.release_conn()
        raise apierrors.from_response(response.status, content or b"", response.reason or "")
    return response


def _reason(error: urllib3.exceptions.HTTPError) -> str:
    """`connection refused`, `read timed out`: the cause, without the pool's repr."""
    cause = getattr(error, "reason", None) or error
    text = re.sub(r"\[Errno -?\d+\] ", "", str(cause))
    return text.rpartition(": ")[2] if ": " in text else text or type(error).__name__


def _register_secrets(path: Path) -> None:
    """Every credential in a kubeconfig file, registered the moment the file is read."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return  # the client's loader reports the file's problem
    if isinstance(document, dict):
        for secret in kubeconfig.secrets(document):
            redact.register(secret)


def _register_loaded(configuration: Any) -> None:
    """What the client derived from the file: the header it will send, a client key's PEM."""
    for secret in kubeconfig.header_secrets(configuration.api_key.get("BearerToken")):
        redact.register(secret)
    if configuration.password:
        redact.register(configuration.password)
    if configuration.key_file:
        with contextlib.suppress(OSError):
            redact.register(Path(configuration.key_file).read_text().strip())
