"""The local fleet driver: a cluster is a state folder plus the agent that runs its pods.

Desired objects are written to `objects/` (the agent reconciles them into processes), rollout
is judged from the agent's `status/` files, and the ledger and the lock are files in the same
folder, guarded by `flock` so two wavegate processes cannot both win a write. Objects and the
ledger hold Secrets and manifests: their files are 0600 and their folders 0700. The lock is a
Lease, decided as on Kubernetes (`kube.lease`): a holder that stops renewing it lets it expire.
"""

from __future__ import annotations

import difflib
import gzip
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import yaml

from wavegate import filestore
from wavegate.config import local_secrets
from wavegate.config.app import APP_LABEL, Manifest, Release
from wavegate.config.fleet import Cluster, LocalFleet
from wavegate.decide import ledger, workloads
from wavegate.decide.ledger import Record
from wavegate.drivers.base import Lock
from wavegate.errors import (
    Conflict,
    DriverError,
    LockHeld,
    Preempted,
    RolloutFailed,
    StaleLock,
    Stopped,
)
from wavegate.kube import lease
from wavegate.localfleet import objects, supervisor
from wavegate.localfleet import status as local_status

log = structlog.get_logger(__name__)
_POLL = 0.05
LOCK_LOOK = 0.5  # how often a rollout wait confirms the lock is still ours
WORKLOAD_KINDS = ("Deployment",)


@dataclass(frozen=True)
class Agent:
    """A local cluster's agent as `fleet status` shows it."""

    running: bool
    endpoint: str | None
    pid: int | None
    state_dir: Path


class LocalDriver:
    def __init__(self, cluster: Cluster, local: LocalFleet) -> None:
        self.cluster = cluster
        self.local = local
        self.dir = local.state_dir / cluster.name
        self._terms: dict[str, float] = {}  # per app: the ttl our run holds its lock for

    # --- reaching the cluster ----------------------------------------------------------------

    def connect(self, *, confirm: bool = True) -> None:
        if supervisor.is_running(self.dir) is None:
            self.start()

    def start(self) -> str:
        """Start the cluster's agent (with the fleet's out-of-band secrets); its ingress URL."""
        _private(self.dir / "objects")
        for secret in local_secrets.objects(self.local, self.cluster.namespace):
            key = f"Secret.{self.cluster.namespace}.{secret['metadata']['name']}.json"
            filestore.write_json(self.dir / "objects" / key, secret, mode=0o600)
        images = {name: list(argv) for name, argv in self.local.images.items()}
        try:
            info = supervisor.start(self.dir, cluster=self.cluster.name, images=images,
                                    python=sys.executable)
        except supervisor.AgentError as error:
            raise DriverError(f"cluster agent did not start: {error}",
                              cluster=self.cluster.name) from None
        return info.ingress

    def endpoint(self) -> str:
        info = supervisor.is_running(self.dir)
        if info is None:
            raise DriverError("cluster agent is not running (wavegate fleet up)",
                              cluster=self.cluster.name)
        return info.ingress

    def agent(self) -> Agent:
        """Whether the cluster's agent runs, and where; nothing is started."""
        info = supervisor.is_running(self.dir)
        return Agent(running=info is not None, endpoint=info.ingress if info else None,
                     pid=info.pid if info else None, state_dir=self.dir)

    def stop(self) -> None:
        """Stop the cluster's agent and every pod it started (`fleet down`)."""
        supervisor.stop(self.dir)

    # The agent has no dry run: compare the live revision's stored manifests with the new ones.
    preview_source = "ledger"

    def preview(self, release: Release) -> list[str]:
        current = ledger.live(self.records(release.app))
        if current is None:
            return []
        return list(difflib.unified_diff(
            _yaml_lines(self.stored_release(current).manifests), _yaml_lines(release.manifests),
            fromfile=f"revision {current.revision} ({current.version})",
            tofile=f"rendered ({release.version})", lineterm=""))

    # --- objects -----------------------------------------------------------------------------

    def apply(self, release: Release, *, holder: str, force_conflicts: bool = False,
              cancel: threading.Event | None = None) -> None:
        # No field managers here: force_conflicts changes nothing. Each write is fenced, so an
        # emergency rollback that takes the lock mid-apply is never overwritten.
        wanted = {_object_file(m): m for m in release.manifests}
        for name, manifest in wanted.items():
            self._fenced(release.app, holder, cancel)
            self._write_object(name, manifest)
        for path in self._app_objects(release.app):
            if path.name not in wanted:
                self._fenced(release.app, holder, cancel)
                path.unlink(missing_ok=True)  # pruned: the new revision no longer has it

    def delete(self, app: str, *, holder: str) -> None:
        self._fence(app, holder)
        for path in self._app_objects(app):
            path.unlink(missing_ok=True)

    def wait_rollout(self, release: Release, *, timeout: float, holder: str | None = None,
                     cancel: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout
        watch = _Watchful(self, release.app, holder, cancel)
        for manifest in release.manifests:
            if manifest["kind"] in WORKLOAD_KINDS:
                self._wait_workload(_object_file(manifest), deadline, timeout, watch)
        watch.check(final=True)  # rolled out, and still ours: not someone else's rollout

    def _write_object(self, name: str, manifest: Manifest) -> None:
        path = self.dir / "objects" / name
        generation = 1
        if path.exists():
            current = filestore.read_json(path)
            generation = current["metadata"].get("generation", 1)
            if _without_generation(current) != _without_generation(manifest):
                generation += 1
        stored = json.loads(json.dumps(manifest))
        stored["metadata"]["generation"] = generation
        _private(path.parent)
        filestore.write_json(path, stored, mode=0o600)

    def _app_objects(self, app: str) -> list[Path]:
        folder = self.dir / "objects"
        if not folder.is_dir():
            return []
        return [path for path in sorted(folder.glob("*.json"))
                if filestore.read_json(path).get("metadata", {}).get("labels", {})
                .get(APP_LABEL) == app]

    def _wait_workload(self, name: str, deadline: float, timeout: float,
                       watch: _Watchful) -> None:
        """Judged as the Kubernetes driver judges a Deployment: the agent's status file has
        the same shape, its pods included."""
        desired = filestore.read_json(self.dir / "objects" / name)
        what = desired["metadata"]["name"]
        while True:
            watch.check()
            if supervisor.is_running(self.dir) is None:
                raise DriverError("cluster agent stopped during the rollout",
                                  cluster=self.cluster.name)
            status = filestore.read_json(self.dir / "status" / name, missing_ok=True) or {}
            workload = {**desired, "status": status}  # no status yet: not yet seen
            verdict = workloads.judge("Deployment", workload)
            if verdict.failure:
                raise RolloutFailed(f"{what}: {verdict.failure}")
            if verdict.done:
                return
            problem = _crashing(workload)
            if problem:
                raise RolloutFailed(f"{what}: {problem}")
            if time.monotonic() > deadline:
                raise RolloutFailed(f"{what}: not rolled out after {timeout:g}s: "
                                    f"{verdict.progress}{_hint(workload)}")
            time.sleep(_POLL)

    # --- ledger ------------------------------------------------------------------------------

    def records(self, app: str, *, with_releases: bool = False) -> list[Record]:
        folder = self.dir / "ledger" / app
        if not folder.is_dir():
            return []
        return [Record.from_json(data["record"], str(data["rv"]))
                for data in map(filestore.read_json, sorted(folder.glob("*.record.json")))]

    def stored_release(self, record: Record) -> Release:
        path = self._ledger_path(record.app, record.revision, "release.json.gz")
        data = json.loads(gzip.decompress(path.read_bytes()))
        return Release(app=record.app, version=data["version"],
                       manifests=tuple(data["manifests"]), checks=data["checks"])

    def create_record(self, record: Record, release: Release, *, holder: str) -> Record:
        with filestore.exclusive(self.dir / "ledger" / record.app / ".lock"):
            self._fence(record.app, holder)
            path = self._ledger_path(record.app, record.revision, "record.json")
            if path.exists():
                raise Conflict(f"revision {record.revision} exists already")
            body = {"version": release.version, "manifests": list(release.manifests),
                    "checks": release.checks}
            payload = gzip.compress(json.dumps(body).encode())
            _write_private(self._ledger_path(record.app, record.revision, "release.json.gz"),
                           payload)
            filestore.write_json(path, {"rv": 1, "record": record.to_json()}, mode=0o600)
        return record.updated(resource_version="1")

    def update_record(self, record: Record, *, holder: str) -> Record:
        with filestore.exclusive(self.dir / "ledger" / record.app / ".lock"):
            self._fence(record.app, holder)
            path = self._ledger_path(record.app, record.revision, "record.json")
            stored = filestore.read_json(path)
            if str(stored["rv"]) != record.resource_version:
                raise Conflict(f"revision {record.revision} changed since it was read")
            version = stored["rv"] + 1
            filestore.write_json(path, {"rv": version, "record": record.to_json()}, mode=0o600)
        return record.updated(resource_version=str(version))

    def _ledger_path(self, app: str, revision: int, suffix: str) -> Path:
        folder = self.dir / "ledger" / app
        _private(folder.parent)
        _private(folder)
        return folder / f"{revision:06d}.{suffix}"

    # --- lock --------------------------------------------------------------------------------

    def acquire_lock(self, app: str, *, holder: str, ttl: float, force: bool = False) -> None:
        self._terms[app] = ttl
        with filestore.exclusive(self._lock_path(app).with_suffix(".flock")):
            now = datetime.now(UTC)
            current = self._read_lease(app)
            if current is None:
                filestore.write_json(self._lock_path(app), lease.new(
                    app, namespace=self.cluster.namespace, holder=holder, ttl=ttl, now=now))
                return
            decision = lease.decide(current, holder_id=holder, force=force, now=now)
            if decision in (lease.Decision.HELD, lease.Decision.STALE):
                error = StaleLock if decision is lease.Decision.STALE else LockHeld
                raise error(cluster=self.cluster.name, app=app,
                            holder=str(lease.holder(current)),
                            expires=lease.expires_text(current))
            filestore.write_json(self._lock_path(app), (
                lease.renewed(current, ttl=ttl, now=now) if decision is lease.Decision.RENEW
                else lease.taken(current, holder_id=holder, ttl=ttl, now=now)))

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        self._terms[app] = ttl
        with filestore.exclusive(self._lock_path(app).with_suffix(".flock")):
            current = self._read_lease(app)
            if current is None:
                self._retake(app, holder=holder)
                return
            owner = lease.holder(current)
            if owner != holder:
                raise Preempted(cluster=self.cluster.name, app=app, holder=owner)
            filestore.write_json(self._lock_path(app),
                                 lease.renewed(current, ttl=ttl, now=datetime.now(UTC)))

    def _retake(self, app: str, *, holder: str) -> None:
        """A lock file deleted by hand under our live run is ours again (called under the
        flock). One taken from us still exists, holder and all: that one is never retaken."""
        ttl = self._terms.get(app, lease.DEFAULT_TERM)
        filestore.write_json(self._lock_path(app), lease.new(
            app, namespace=self.cluster.namespace, holder=holder, ttl=ttl, now=datetime.now(UTC)))
        log.warning("local.lock_retaken", cluster=self.cluster.name, app=app, holder=holder,
                    detail="the lock file was deleted while the run held it")

    def release_lock(self, app: str, *, holder: str) -> None:
        with filestore.exclusive(self._lock_path(app).with_suffix(".flock")):
            current = self._read_lease(app)
            if current is not None and lease.holder(current) == holder:
                # Cleared, not deleted: a run this one took it from reads "released" and stops.
                filestore.write_json(self._lock_path(app), lease.released(current))

    def read_lock(self, app: str) -> Lock | None:
        return Lock.of_lease(self._read_lease(app))

    def _read_lease(self, app: str) -> dict[str, Any] | None:
        lease: dict[str, Any] | None = filestore.read_json(self._lock_path(app), missing_ok=True)
        return lease  # None: no lock file, unlocked

    def _lock_path(self, app: str) -> Path:
        return self.dir / "locks" / f"{app}.json"

    def _fenced(self, app: str, holder: str, cancel: threading.Event | None) -> None:
        """Before one write: the run's own knowledge first (free), then the lock file."""
        if cancel is not None and cancel.is_set():
            raise Stopped(cluster=self.cluster.name)
        self._fence(app, holder)

    def _fence(self, app: str, holder: str) -> None:
        """Every write first confirms this run still holds the lock."""
        if self._read_lease(app) is None:
            with filestore.exclusive(self._lock_path(app).with_suffix(".flock")):
                if self._read_lease(app) is None:
                    self._retake(app, holder=holder)
        current = self.read_lock(app)
        if current is None or current.holder != holder:
            raise Preempted(cluster=self.cluster.name, app=app,
                            holder=current.holder if current else None)


class _Watchful:
    """What a rollout wait keeps an eye on besides the rollout: the run stopping (each poll)
    and, when it knows its holder, the lock (at most every `LOCK_LOOK` seconds)."""

    def __init__(self, driver: LocalDriver, app: str, holder: str | None,
                 cancel: threading.Event | None) -> None:
        self.driver, self.app, self.holder, self.cancel = driver, app, holder, cancel
        self._next_look = time.monotonic()

    def check(self, *, final: bool = False) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Stopped(cluster=self.driver.cluster.name)
        if self.holder is not None and (final or time.monotonic() >= self._next_look):
            self.driver._fence(self.app, self.holder)
            self._next_look = time.monotonic() + LOCK_LOOK


def _yaml_lines(manifests: tuple[Manifest, ...]) -> list[str]:
    return yaml.safe_dump_all(list(manifests), sort_keys=True).splitlines()


def _private(folder: Path) -> None:
    """A folder only its owner may read (chmod too: an older wavegate made it 0755)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)


def _write_private(path: Path, payload: bytes) -> None:
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(handle, "wb") as output:
        os.fchmod(output.fileno(), 0o600)
        output.write(payload)


def _object_file(manifest: Manifest) -> str:
    metadata = manifest.get("metadata", {})
    return f"{manifest['kind']}.{metadata.get('namespace', '_')}.{metadata['name']}.json"


def _without_generation(manifest: Manifest) -> Any:
    copy = json.loads(json.dumps(manifest))
    copy.get("metadata", {}).pop("generation", None)
    return copy


def _current_pods(workload: Manifest) -> list[Manifest]:
    """The pods of the Deployment's current template, as the agent's status lists them."""
    if not workloads.observed(workload):
        return []  # which pods are new is known only once the agent has seen the spec
    template = (workload.get("spec") or {}).get("template")
    current = objects.template_hash(template) if isinstance(template, Mapping) else ""
    return [pod for pod in (workload.get("status") or {}).get("pods") or ()
            if ((pod.get("metadata") or {}).get("labels") or {})
            .get(local_status.TEMPLATE_HASH_LABEL) == current]


def _crashing(workload: Manifest) -> str | None:
    """Why a new pod will not run by waiting (a crash, an image with no command...), or None."""
    for pod in _current_pods(workload):
        problem = workloads.pod_problem(pod)
        if problem:
            return problem
    return None


def _hint(workload: Manifest) -> str:
    """Why a new pod is not running yet, if one says: ` (pod x: ContainerCreating)`."""
    for pod in _current_pods(workload):
        waiting = workloads.pod_waiting(pod)
        if waiting:
            return f" ({waiting})"
    return ""
