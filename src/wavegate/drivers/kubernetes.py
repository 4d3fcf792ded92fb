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

API calls, for a release of N objects and W workloads (pinned by the e2e tests):
- apply: 1 GET (fence) + N dry-run PATCHes + N PATCHes + 9 LISTs (prune, metadata only) + a
  DELETE per pruned object. The dry-run pass is what keeps a refusal from half-applying.
- wait_rollout, per workload: 1 GET; if that is not yet rolled out, 1 LIST (pods) and 2
  WATCHes (the workload, its pods), re-opened only when the server ends them; plus a GET of a
  ReplicaSet for each crashing pod whose owner is not known yet. No polling.
- ledger: records 1 LIST; stored_release 1 GET; create/update 1 GET (fence) + 1 write.
- lock: acquire 1 GET + 1 write (POST or PUT); renew 1 GET + 1 PUT; release 1 GET + 1 DELETE.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import structlog
import tenacity
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from wavegate import __version__, redact
from wavegate.config.app import Manifest, Release
from wavegate.config.fleet import Cluster
from wavegate.decide import workloads
from wavegate.decide.ledger import Record
from wavegate.drivers.base import Lock
from wavegate.errors import (
    Conflict,
    DriverError,
    LockHeld,
    Preempted,
    RolloutFailed,
    StaleLock,
)
from wavegate.kube import (
    apierrors,
    kinds,
    kubeconfig,
    lease,
    ledgersecret,
    normalize,
    preview,
    retry,
)
from wavegate.kube.apierrors import Action, ApiError, Unreachable

log = structlog.get_logger(__name__)

JSON = "application/json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON
MERGE_PATCH = "application/merge-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
FIELD_MANAGER = "wavegate"
# Not curl, Wget or Mozilla: for those the API server pretty-prints JSON, and the sandbox's v1.20
# build (Go 1.19, reflect2 1.0.1) crashes on that code path.
USER_AGENT = f"wavegate/{__version__}"
REQUEST_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)
WATCH_SECONDS = 60  # the server ends each watch after this; it is then re-opened where it was
WATCH_TIMEOUT = urllib3.Timeout(connect=5.0, read=WATCH_SECONDS + 15.0)
LOCK_ATTEMPTS = 3

T = TypeVar("T")
Event = tuple[str, str, Any]  # (watch tag, SYNC|ADDED|MODIFIED|DELETED|ERROR, object)


# The client caches embedded certificate data in temp files, publishing a file's name before
# its content is written: clusters that share a CA, loaded in parallel, could read an empty CA
# ("no certificate or crl found"). Loading is rare and fast, so it is done one at a time.
_LOADING = threading.Lock()

class KubernetesDriver:
    """The `Driver` of a cluster with `driver: kubernetes`. Construction does no I/O."""

    def __init__(self, cluster: Cluster, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cluster = cluster
        self.api = _Api(cluster, sleep=sleep)
        self._namespace = cluster.namespace
        self._resources: dict[tuple[str, str], kinds.Resource] = dict(kinds.KNOWN)
        self._log = log.bind(cluster=cluster.name)

    # --- reaching the cluster ----------------------------------------------------------------

    def connect(self) -> None:
        self.api.load()
        self.api.request("GET", "/version", action=Action("get", "/version"))

    def endpoint(self) -> str:
        if not self.cluster.endpoint:
            raise DriverError("no endpoint for the checks: set `endpoint:` in the fleet file",
                              cluster=self.cluster.name)
        return self.cluster.endpoint

    def close(self) -> None:
        self.api.close()

    # --- objects -----------------------------------------------------------------------------

    def apply(self, release: Release, *, holder: str) -> None:
        """Fence, dry-run everything (so a refusal leaves nothing half-applied), apply, prune."""
        self._fence(release.app, holder)
        ordered = kinds.apply_order(normalize.for_apply(m) for m in release.manifests)
        objects = [(self._resource(manifest), manifest) for manifest in ordered]
        created = {kinds.identity(m, "")[2] for m in ordered if m.get("kind") == "Namespace"}
        for resource, manifest in objects:
            if self._where(resource, manifest) not in created:
                self._apply_one(resource, manifest, dry_run=True)
        for resource, manifest in objects:
            self._apply_one(resource, manifest)
        pruned = self._prune(release)
        self._log.info("kube.applied", app=release.app, version=release.version,
                       objects=len(objects), pruned=pruned)

    def delete(self, app: str, *, holder: str) -> None:
        self._fence(app, holder)
        for resource in kinds.delete_order(kinds.PRUNED):
            for name in self._labelled(resource, app):
                self._delete(resource, name)

    def wait_rollout(self, release: Release, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for manifest in release.manifests:
            if manifest.get("kind") in kinds.WORKLOADS:
                resource = self._resource(manifest)
                _Rollout(self.api, resource, self._where(resource, manifest),
                         manifest["metadata"]["name"]).wait(deadline=deadline, timeout=timeout)

    def _apply_one(self, resource: kinds.Resource, manifest: Manifest, *,
                   dry_run: bool = False) -> None:
        namespace, name = self._where(resource, manifest), manifest["metadata"]["name"]
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        self.api.request("PATCH", resource.path(namespace or None, name), query=query,
                         body=manifest, content_type=APPLY_PATCH,
                         action=Action("apply", resource.rbac_name, name, namespace or None))

    preview_source = "dry-run"

    def preview(self, release: Release) -> list[str]:
        """What applying `release` would change, from a server-side dry run; nothing is
        written. Objects the release drops are listed as pruned."""
        lines: list[str] = []
        for manifest in kinds.apply_order(normalize.for_apply(m) for m in release.manifests):
            resource = self._resource(manifest)
            namespace, name = self._where(resource, manifest), manifest["metadata"]["name"]
            after = self.api.request(
                "PATCH", resource.path(namespace or None, name), body=manifest,
                query={"fieldManager": FIELD_MANAGER, "force": "true", "dryRun": "All"},
                content_type=APPLY_PATCH,
                action=Action("apply", resource.rbac_name, name, namespace or None))
            live = self._live(resource, namespace, name)
            lines += preview.diff(f"{resource.kind}/{name}", live, after)
        keep = {kinds.identity(m, self._namespace) for m in release.manifests}
        for resource in kinds.delete_order(kinds.PRUNED):
            lines += [f"- {resource.kind}/{name}: pruned (the release no longer has it)"
                      for name in self._labelled(resource, release.app)
                      if (resource.kind, self._namespace, name) not in keep]
        return lines

    def _live(self, resource: kinds.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as it is, by a list (the deployer may list what it may not get)."""
        found = self.api.request(
            "GET", resource.path(namespace or None),
            query={"fieldSelector": f"metadata.name={name}"},
            action=Action("list", resource.rbac_name, None, namespace or None))
        items = found.get("items") or []
        return dict(items[0], kind=resource.kind) if items else None

    def _prune(self, release: Release) -> int:
        """Delete the app's objects the release no longer has; how many went."""
        keep = {kinds.identity(m, self._namespace) for m in release.manifests}
        pruned = 0
        for resource in kinds.delete_order(kinds.PRUNED):
            for name in self._labelled(resource, release.app):
                if (resource.kind, self._namespace, name) not in keep:
                    self._delete(resource, name)
                    pruned += 1
        return pruned

    def _labelled(self, resource: kinds.Resource, app: str) -> list[str]:
        """Names of the app's objects of one kind (metadata only: no Secret value is read)."""
        query = {"labelSelector": ledgersecret.selector(app)}
        if resource == kinds.SECRET:
            query["fieldSelector"] = f"type!={ledgersecret.TYPE}"  # the ledger is not pruned
        listed = self.api.request("GET", resource.path(self._namespace), query=query,
                                  accept=METADATA_LIST,
                                  action=Action("list", resource.rbac_name,
                                                namespace=self._namespace))
        return sorted(item["metadata"]["name"] for item in listed.get("items") or ())

    def _delete(self, resource: kinds.Resource, name: str) -> None:
        self._log.info("kube.delete", kind=resource.kind, name=name)
        with contextlib.suppress(ApiError):  # 404: gone already
            self.api.request("DELETE", resource.path(self._namespace, name),
                             body={"propagationPolicy": "Background"}, expect=(404,),
                             action=Action("delete", resource.rbac_name, name, self._namespace))

    def _resource(self, manifest: Manifest) -> kinds.Resource:
        """The kind's API resource: from the table, else from discovery (cached)."""
        api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
        found = self._resources.get((api_version, kind))
        if found is None:
            try:
                document = self.api.request("GET", kinds.discovery_path(api_version),
                                            action=Action("discover", api_version),
                                            expect=(404,))
            except ApiError:
                document = {}  # the group/version is not served at all
            found = kinds.from_discovery(document, api_version, kind)
            if found is None:
                raise DriverError(f"{kind} ({api_version}) is not served by this cluster",
                                  cluster=self.cluster.name)
            self._resources[(api_version, kind)] = found
        return found

    def _where(self, resource: kinds.Resource, manifest: Manifest) -> str:
        if not resource.namespaced:
            return ""
        return str((manifest.get("metadata") or {}).get("namespace") or self._namespace)

    # --- ledger ------------------------------------------------------------------------------

    def records(self, app: str) -> list[Record]:
        listed = self.api.request(
            "GET", kinds.SECRET.path(self._namespace),
            query={"labelSelector": ledgersecret.selector(app),
                   "fieldSelector": f"type={ledgersecret.TYPE}"},
            action=Action("list", "secrets", namespace=self._namespace))
        records = [self._decoded(ledgersecret.record_of, item)
                   for item in listed.get("items") or ()]
        return sorted(records, key=lambda record: record.revision)

    def stored_release(self, record: Record) -> Release:
        secret = self._ledger_secret(record.app, record.revision)
        return self._decoded(lambda item: ledgersecret.release_of(item, record.app), secret)

    def create_record(self, record: Record, release: Release, *, holder: str) -> Record:
        try:
            body = ledgersecret.encode(record, release, namespace=self._namespace)
        except ledgersecret.TooLarge as error:
            raise DriverError(f"{record.app} v{release.version}: {error}; nothing was written",
                              cluster=self.cluster.name) from error
        self._fence(record.app, holder)
        name = body["metadata"]["name"]
        try:
            created = self.api.request("POST", kinds.SECRET.path(self._namespace), body=body,
                                       expect=(409,),
                                       action=Action("create", "secrets", name, self._namespace))
        except ApiError as error:
            raise Conflict(f"{self.cluster.name}: revision {record.revision} of {record.app} "
                           "exists already") from error
        return record.updated(resource_version=created["metadata"]["resourceVersion"])

    def update_record(self, record: Record, *, holder: str) -> Record:
        patch = ledgersecret.update_patch(record)
        self._fence(record.app, holder)
        name = ledgersecret.name(record.app, record.revision)
        try:
            stored = self.api.request("PATCH", kinds.SECRET.path(self._namespace, name),
                                      body=patch, content_type=MERGE_PATCH, expect=(409,),
                                      action=Action("patch", "secrets", name, self._namespace))
        except ApiError as error:
            raise Conflict(f"{self.cluster.name}: revision {record.revision} of {record.app} "
                           "changed since it was read") from error
        return record.updated(resource_version=stored["metadata"]["resourceVersion"])

    def _ledger_secret(self, app: str, revision: int) -> dict[str, Any]:
        name = ledgersecret.name(app, revision)
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
        current: dict[str, Any] | None = None
        for _ in range(LOCK_ATTEMPTS):
            now = datetime.now(UTC)
            current = self._read_lease(app)
            if current is None:
                if self._create_lease(app, holder=holder, ttl=ttl, now=now):
                    return
                continue  # created by someone else in between: judge theirs
            decision = lease.decide(current, holder_id=holder, force=force, now=now)
            if decision is lease.Decision.HELD:
                raise self._held(app, current)
            if decision is lease.Decision.STALE:
                raise StaleLock(cluster=self.cluster.name, app=app,
                                      holder=str(lease.holder(current)),
                                      expires=lease.expires_text(current))
            replacement = (lease.renewed(current, ttl=ttl, now=now)
                           if decision is lease.Decision.RENEW
                           else lease.taken(current, holder_id=holder, ttl=ttl, now=now))
            if self._replace_lease(app, replacement):
                if decision is lease.Decision.TAKE and lease.holder(current):
                    self._log.warning("kube.lock_taken", app=app, holder=holder,
                                      previous=lease.holder(current), force=force)
                return
        raise self._held(app, current or {})

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        for _ in range(LOCK_ATTEMPTS):
            current = self._read_lease(app)
            owner = lease.holder(current) if current else None
            if current is None or owner != holder:
                raise Preempted(cluster=self.cluster.name, app=app, holder=owner)
            if self._replace_lease(app, lease.renewed(current, ttl=ttl, now=datetime.now(UTC))):
                return
        raise DriverError(f"could not renew the lock on {app}: it kept changing",
                          cluster=self.cluster.name)

    def release_lock(self, app: str, *, holder: str) -> None:
        current = self._read_lease(app)
        if current is None or lease.holder(current) != holder:
            return  # not ours (any more): leave it to whoever holds it
        name = lease.name(app)
        version = current["metadata"]["resourceVersion"]
        # 409: taken (or renewed) since it was read; 404: deleted. Either way not ours to delete.
        with contextlib.suppress(ApiError):
            self.api.request("DELETE", kinds.LEASE.path(self._namespace, name),
                             body={"preconditions": {"resourceVersion": version}},
                             expect=(404, 409),
                             action=Action("delete", "leases.coordination.k8s.io", name,
                                           self._namespace))

    def read_lock(self, app: str) -> Lock | None:
        current = self._read_lease(app)
        holder = lease.holder(current) if current else None
        if current is None or holder is None:
            return None
        return Lock(holder=holder, expires=lease.expires_text(current) or "")

    def _fence(self, app: str, holder: str) -> None:
        """Every write first confirms this run still holds the lease (a lease alone does not
        stop a holder that lost it without noticing)."""
        current = self._read_lease(app)
        owner = lease.holder(current) if current else None
        if owner != holder:
            raise Preempted(cluster=self.cluster.name, app=app, holder=owner)

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
        try:
            self.api.request("POST", kinds.LEASE.path(self._namespace), body=body, expect=(409,),
                             action=Action("create", "leases.coordination.k8s.io",
                                           lease.name(app), self._namespace))
        except ApiError:
            return False
        return True

    def _replace_lease(self, app: str, body: dict[str, Any]) -> bool:
        """A compare-and-set: False when the lease changed since it was read."""
        name = lease.name(app)
        try:
            self.api.request("PUT", kinds.LEASE.path(self._namespace, name), body=body,
                             expect=(409, 404),
                             action=Action("update", "leases.coordination.k8s.io", name,
                                           self._namespace))
        except ApiError:
            return False
        return True

    def _held(self, app: str, current: dict[str, Any]) -> LockHeld:
        return LockHeld(cluster=self.cluster.name, app=app,
                        holder=lease.holder(current) or "unknown",
                        expires=lease.expires_text(current))


class _Rollout:
    """One workload's rollout, followed through watches on it and on its pods until judged."""

    def __init__(self, api: _Api, resource: kinds.Resource, namespace: str, name: str) -> None:
        self.api, self.resource, self.namespace, self.name = api, resource, namespace, name
        self.what = f"{resource.kind}/{name}"
        self.progress = "not started"
        self._revisions: dict[str, str | None] = {}  # ReplicaSet name -> its revision

    def wait(self, *, deadline: float, timeout: float) -> None:
        workload = self.api.request(
            "GET", self.resource.path(self.namespace, self.name),
            action=Action("get", self.resource.rbac_name, self.name, self.namespace))
        pods: dict[str, Any] = {}
        if self._judged(workload, pods):
            return
        events: queue.Queue[Event] = queue.Queue()
        watches = self._watches(workload, events)
        for watch in watches:
            watch.start()
        try:
            while not self._judged(workload, pods):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RolloutFailed(f"{self.what}: not rolled out after {timeout:g}s: "
                                        f"{self.progress}{self._hint(workload, pods)}")
                try:
                    event = events.get(timeout=remaining)
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
            _Watch(self.api, kinds.POD.path(self.namespace), tag="pods", events=events,
                   query={"labelSelector": selector},
                   action=Action("watch", "pods", namespace=self.namespace)),
        ]

    def _follow(self, workload: dict[str, Any], pods: dict[str, Any],
                event: Event) -> dict[str, Any]:
        """Fold one watch event into what is known; the workload as it now is."""
        tag, kind, payload = event
        if kind == "ERROR":
            raise payload
        if tag == "pods":
            if kind == "SYNC":
                pods.clear()
                pods.update((pod["metadata"]["name"], pod) for pod in payload)
            elif kind == "DELETED":
                pods.pop(payload["metadata"]["name"], None)
            else:
                pods[payload["metadata"]["name"]] = payload
            return workload
        if kind == "DELETED" or (kind == "SYNC" and not payload):
            raise RolloutFailed(f"{self.what} was deleted during its rollout")
        return dict(payload[0] if kind == "SYNC" else payload)

    def _judged(self, workload: dict[str, Any], pods: Mapping[str, Any]) -> bool:
        """True once rolled out; RolloutFailed once it cannot be."""
        verdict = workloads.judge(self.resource.kind, workload)
        self.progress = verdict.progress
        if verdict.failure:
            raise RolloutFailed(f"{self.what}: {verdict.failure}")
        if verdict.done:
            return True
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


class _Watch:
    """List, then watch, one collection from a thread of its own, into `events`.

    Puts (tag, "SYNC", items) after each list (the first one, and after 410 Gone: the
    resourceVersion is too old to resume from), then (tag, type, object) per change. When the
    server ends the watch (timeoutSeconds) or the connection drops, it is re-opened from the
    last resourceVersion seen (bookmarks keep that fresh). An error that retries do not cure is
    put as (tag, "ERROR", DriverError) and ends the thread. `stop` returns promptly: it shuts
    the socket the thread is blocked on.
    """

    def __init__(self, api: _Api, path: str, *, tag: str, events: queue.Queue[Event],
                 query: Mapping[str, str], action: Action,
                 resource_version: str | None = None) -> None:
        self.api, self.path, self.tag, self.events = api, path, tag, events
        self.query, self.action = dict(query), action
        self._resource_version = resource_version
        self._stopped = threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{tag}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._guard:  # the thread closes the response under the same lock
            if isinstance(self._response, urllib3.HTTPResponse):
                with contextlib.suppress(OSError):
                    self._response.shutdown()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        version = self._resource_version
        drops = 0
        try:
            while not self._stopped.is_set():
                if version is None:
                    version = self._list()
                version, dropped = self._follow(version)
                drops = drops + 1 if dropped else 0
                if drops:  # a connection that keeps dropping is not hammered
                    self._stopped.wait(min(0.1 * 2 ** drops, 2.0))
        except Exception as error:  # ends the thread; the waiting side raises it
            if not self._stopped.is_set():
                if not isinstance(error, DriverError | RolloutFailed):
                    error = DriverError(apierrors.describe(error, self.action),
                                        cluster=self.api.cluster.name)
                self.events.put((self.tag, "ERROR", error))

    def _list(self) -> str:
        listed = self.api.request("GET", self.path, query=self.query,
                                  action=Action("list", self.action.resource, self.action.name,
                                                self.action.namespace))
        self.events.put((self.tag, "SYNC", listed.get("items") or []))
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> tuple[str | None, bool]:
        """Watch from `version`; (where to resume, or None to list again; whether it dropped)."""
        query = {**self.query, "watch": "true", "resourceVersion": version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS)}
        try:
            response = self.api.stream(self.path, query=query, action=self.action, expect=(410,))
        except ApiError:
            return None, False  # 410 Gone before the first event
        with self._guard:
            self._response = response
            stopped = self._stopped.is_set()  # stop() came before it could shut this one
        try:
            if stopped:
                return version, False
            for event in _events(response):
                if self._stopped.is_set():
                    break
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    error = apierrors.from_watch_event(obj)
                    if error.status == 410:
                        return None, False
                    raise DriverError(apierrors.describe(error, self.action),
                                      cluster=self.api.cluster.name)
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind != "BOOKMARK":
                    self.events.put((self.tag, str(kind), obj))
        except Unreachable as error:
            if not self._stopped.is_set():
                self.api.log.info("kube.watch_dropped", action=str(self.action),
                                  detail=error.detail)
            return version, True
        finally:
            with self._guard:
                self._response = None
            response.close()
            response.release_conn()
        return version, False


def _events(response: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON lines of a watch response, as they arrive."""
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                if line.strip():
                    yield json.loads(line)
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        raise Unreachable(f"watch interrupted: {type(error).__name__}") from error


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
        self._connection: _Connection | None = None
        self._lock = threading.Lock()

    def load(self) -> _Connection:
        """(Re)read the kubeconfig for the cluster's context into a client of our own."""
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
        configuration.retries = False  # tenacity retries, and logs each retry
        _register_loaded(configuration)
        with self._lock:
            generation = self._connection.generation + 1 if self._connection else 1
            self._connection = _Connection(configuration.host, configuration,
                                           client.ApiClient(configuration), generation)
            return self._connection

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
        self._count(method)
        response = self._call(method, path, action=action, query=query, body=body,
                              content_type=content_type, accept=accept, expect=expect,
                              stream=False)
        data = response.data
        return json.loads(data) if data else {}

    def stream(self, path: str, *, query: Mapping[str, str], action: Action,
               expect: tuple[int, ...] = ()) -> urllib3.BaseHTTPResponse:
        """A watch: the open response, to be read as it arrives and closed by the caller."""
        self._count("WATCH")
        return self._call("GET", path, action=action, query=query, body=None, content_type=JSON,
                          accept=JSON, expect=expect, stream=True)

    def _count(self, kind: str) -> None:
        with self._lock:  # watches count from their own threads
            self.calls[kind] += 1

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
