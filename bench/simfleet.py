"""Simulated clusters for the scale bench: an in-process driver with a stated latency model.

Latency model (what docs/performance.md states):
    every driver call that would reach a cluster's API server (connect, ledger reads and
    writes, apply, delete, locks) costs one API round trip of `latency` seconds (20 ms);
    `wait_rollout` costs `rollout` seconds (1 s), the time a real rollout takes;
    `endpoint` and `stored_release` bodies already read cost nothing extra.
The app itself is real: each cluster's endpoint is the real library_app server (a separate
process) of the version last applied there, so every check is a real HTTP request judged by
the real verdicts. Ledger and lock live in memory, with the same compare-and-set and fencing
rules as the real drivers. Bench only: never imported by the product.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from wavegate.config.app import Release
from wavegate.config.fleet import Cluster
from wavegate.decide.ledger import Record
from wavegate.drivers.base import Lock
from wavegate.errors import Conflict, LockHeld, Preempted


@dataclass(frozen=True)
class Model:
    latency: float = 0.020  # one API round trip
    rollout: float = 1.0  # one rollout, start to ready


@dataclass
class SimCluster:
    """What one simulated cluster holds: its ledger, its lock and its live version."""

    name: str
    records: dict[int, tuple[Record, Release | None]] = field(default_factory=dict)
    lock: Lock | None = None
    live_version: str | None = None


@dataclass
class Meter:
    """Shared by every simulated cluster: API calls by kind, and when each kind was first
    started and last finished (how long the fleet's lock taking and releasing lasted)."""

    calls: Counter[str] = field(default_factory=Counter)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def span(self, kind: str) -> float:
        start, end = self.spans.get(kind, (0.0, 0.0))
        return end - start


class SimDriver:
    def __init__(self, cluster: Cluster, state: SimCluster, *, model: Model,
                 servers: dict[str, str], meter: Meter) -> None:
        self.cluster, self.state, self.model = cluster, state, model
        self.servers = servers  # version -> URL of the real library_app serving it
        self.meter = meter

    def _api(self, kind: str) -> None:
        started = time.monotonic()
        time.sleep(self.model.latency)
        ended = time.monotonic()
        with self.meter.guard:
            self.meter.calls[kind] += 1
            first, last = self.meter.spans.get(kind, (started, ended))
            self.meter.spans[kind] = (min(first, started), max(last, ended))

    def connect(self, *, confirm: bool = True) -> None:
        self._api("connect")

    def endpoint(self) -> str:
        assert self.state.live_version is not None, "nothing deployed"
        return self.servers[self.state.live_version]

    def apply(self, release: Release, *, holder: str, force_conflicts: bool = False,
              cancel: object = None) -> None:
        self._api("apply")
        self._fence(release.app, holder)
        self.state.live_version = release.version

    def wait_rollout(self, release: Release, *, timeout: float, holder: str | None = None,
                     cancel: object = None) -> None:
        time.sleep(self.model.rollout)

    def delete(self, app: str, *, holder: str) -> None:
        self._api("delete")
        self._fence(app, holder)
        self.state.live_version = None

    def records(self, app: str, *, with_releases: bool = False) -> list[Record]:
        self._api("records")
        return [record for record, _ in self.state.records.values() if record.app == app]

    def stored_release(self, record: Record) -> Release:
        release = self.state.records[record.revision][1]
        assert release is not None, "no manifests stored"
        return release

    def create_record(self, record: Record, release: Release, *, holder: str) -> Record:
        self._api("create_record")
        self._fence(record.app, holder)
        with self.meter.guard:
            if record.revision in self.state.records:
                raise Conflict("exists")
            stored = record.updated(resource_version="1")
            self.state.records[record.revision] = (stored, release)
        return stored

    def update_record(self, record: Record, *, holder: str) -> Record:
        self._api("update_record")
        self._fence(record.app, holder)
        with self.meter.guard:
            current, release = self.state.records[record.revision]
            if current.resource_version != record.resource_version:
                raise Conflict("changed")
            stored = record.updated(resource_version=str(int(current.resource_version or 0) + 1))
            self.state.records[record.revision] = (stored, release)
        return stored

    def acquire_lock(self, app: str, *, holder: str, ttl: float, force: bool = False) -> None:
        self._api("acquire_lock")
        lock = self.state.lock
        if lock is not None and lock.holder != holder and not force:
            raise LockHeld(cluster=self.cluster.name, app=app, holder=lock.holder,
                           expires=lock.expires)
        self.state.lock = Lock(holder=holder, expires="in 30s")

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        self._api("renew_lock")
        self._fence(app, holder)

    def release_lock(self, app: str, *, holder: str) -> None:
        self._api("release_lock")
        if self.state.lock is not None and self.state.lock.holder == holder:
            self.state.lock = None

    def read_lock(self, app: str) -> Lock | None:
        self._api("read_lock")
        return self.state.lock

    def _fence(self, app: str, holder: str) -> None:
        # A real driver confirms the lease within the write's own request (fenced writes);
        # the model charges no extra round trip for it.
        if self.state.lock is None or self.state.lock.holder != holder:
            raise Preempted(cluster=self.cluster.name, app=app,
                            holder=self.state.lock.holder if self.state.lock else None)
