"""Test doubles for pure unit tests of the run: a fake clock and a fake driver.

The fake driver keeps its ledger and lock in memory but serves each applied release with the
real Library App on a loopback port, so checks are judged on real HTTP answers.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from library_app.server import LibraryServer, make_server
from wavegate.config.app import Release
from wavegate.config.fleet import Cluster
from wavegate.decide.ledger import Record
from wavegate.drivers.base import Lock
from wavegate.errors import (
    Conflict,
    DriverError,
    LockHeld,
    Preempted,
    RolloutFailed,
    Stopped,
)


class FakeClock:
    """Time moves only when someone sleeps: a two-hour bake takes milliseconds.

    `at(when, action)` runs `action` once the time passes `when` (a fault that appears hours
    into a run, without a class-level patch)."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.slept = 0.0
        self._lock = threading.Lock()
        self._timers: list[tuple[float, Callable[[], None]]] = []

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._timers.append((when, action))

    def now(self) -> float:
        with self._lock:
            return self.time

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        with self._lock:
            self.time += max(seconds, 0.0)
            self.slept += max(seconds, 0.0)
            due = [timer for timer in self._timers if timer[0] <= self.time]
            self._timers = [timer for timer in self._timers if timer[0] > self.time]
        for _, action in due:
            action()


@dataclass
class FakeCluster:
    """What lives in one cluster: ledger, lock, the running app, and injected faults."""

    name: str
    records: dict[int, tuple[Record, Release]] = field(default_factory=dict)
    lock: Lock | None = None
    server: LibraryServer | None = None
    applied: list[str] = field(default_factory=list)  # versions, in order
    unreachable: bool = False
    broken_versions: set[str] = field(default_factory=set)  # rollouts of these fail
    env: dict[str, str] = field(default_factory=dict)
    # Driver method name -> a fault for its next call (once): an exception to raise, or an
    # action on this cluster (e.g. going unreachable) before the method goes on.
    faults: dict[str, BaseException | Callable[[FakeCluster], None]] = field(
        default_factory=dict)
    reads: int = 0  # ledger reads (each one lists every release Secret on Kubernetes)

    def serve(self, version: str, env: Mapping[str, str]) -> None:
        """(Re)start the app as a pod would: `version` with `env` over the cluster's own."""
        self.stop()
        self.server = make_server("127.0.0.1", 0, version, {**self.env, **env})
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def inject(self, method: str) -> None:
        fault = self.faults.pop(method, None)
        if isinstance(fault, BaseException):
            raise fault
        if fault is not None:
            fault(self)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class FakeDriver:
    def __init__(self, cluster: Cluster, state: FakeCluster) -> None:
        self.cluster = cluster
        self.state = state
        self._guard = threading.Lock()

    def connect(self, *, confirm: bool = True) -> None:
        self._reachable()

    def endpoint(self) -> str:
        self.state.inject("endpoint")
        self._reachable()
        if self.state.server is None:
            return "http://127.0.0.1:1"  # nothing serves: connections are refused, as for real
        host, port = self.state.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def apply(self, release: Release, *, holder: str, force_conflicts: bool = False,
              cancel: threading.Event | None = None) -> None:
        self.state.inject("apply")
        if cancel is not None and cancel.is_set():
            raise Stopped(cluster=self.cluster.name)
        self._fence(release.app, holder)
        self.state.serve(release.version, _container_env(release))
        self.state.applied.append(release.version)

    def wait_rollout(self, release: Release, *, timeout: float, holder: str | None = None,
                     cancel: threading.Event | None = None) -> None:
        self.state.inject("wait_rollout")
        if cancel is not None and cancel.is_set():
            raise Stopped(cluster=self.cluster.name)
        if holder is not None:
            self._fence(release.app, holder)
        self._reachable()
        if release.version in self.state.broken_versions:
            raise RolloutFailed(f"library-app: PodCrashed: {release.version} exits at start")

    def delete(self, app: str, *, holder: str) -> None:
        self._fence(app, holder)
        self.state.stop()

    def records(self, app: str, *, with_releases: bool = False) -> list[Record]:
        self.state.inject("records")
        self._reachable()
        self.state.reads += 1
        return [record for record, _ in self.state.records.values() if record.app == app]

    def stored_release(self, record: Record) -> Release:
        return self.state.records[record.revision][1]

    def create_record(self, record: Record, release: Release, *, holder: str) -> Record:
        self.state.inject("create_record")
        self._fence(record.app, holder)
        with self._guard:
            if record.revision in self.state.records:
                raise Conflict("exists")
            stored = record.updated(resource_version="1")
            self.state.records[record.revision] = (stored, release)
        return stored

    def update_record(self, record: Record, *, holder: str) -> Record:
        self.state.inject("update_record")
        self._fence(record.app, holder)
        with self._guard:
            current, release = self.state.records[record.revision]
            if current.resource_version != record.resource_version:
                raise Conflict("changed")
            stored = record.updated(resource_version=str(int(current.resource_version or 0) + 1))
            self.state.records[record.revision] = (stored, release)
        return stored

    def acquire_lock(self, app: str, *, holder: str, ttl: float, force: bool = False) -> None:
        self._reachable()
        lock = self.state.lock
        if lock is not None and lock.holder != holder and not force:
            raise LockHeld(cluster=self.cluster.name, app=app, holder=lock.holder,
                           expires=lock.expires)
        self.state.lock = Lock(holder=holder, expires="soon")

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        self._fence(app, holder)

    def release_lock(self, app: str, *, holder: str) -> None:
        if self.state.lock is not None and self.state.lock.holder == holder:
            self.state.lock = None

    def read_lock(self, app: str) -> Lock | None:
        return self.state.lock

    def _fence(self, app: str, holder: str) -> None:
        self._reachable()
        if self.state.lock is None or self.state.lock.holder != holder:
            raise Preempted(cluster=self.cluster.name, app=app,
                            holder=self.state.lock.holder if self.state.lock else None)

    def _reachable(self) -> None:
        if self.state.unreachable:
            raise DriverError("connection refused", cluster=self.cluster.name)


def _container_env(release: Release) -> Mapping[str, str]:
    """Plain `value` env entries of the release's Deployment (fault injection rides on them)."""
    env: dict[str, Any] = {}
    for manifest in release.manifests:
        if manifest.get("kind") == "Deployment":
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                env.update({e["name"]: e["value"] for e in container.get("env", [])
                            if "value" in e})
    return env


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)
