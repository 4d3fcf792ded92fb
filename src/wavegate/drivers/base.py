"""The driver seam: everything the run needs from one cluster, and nothing more.

Implementations: `local.LocalDriver` (the embedded fleet), `kubernetes.KubernetesDriver`, and a
fake in the tests. Every method that writes takes `holder` (the run id) and first confirms the
run still holds the cluster's lock, raising `Preempted` if not: a lease alone does not fence a
stale holder. `apply` fences each object it writes or prunes, not just the first, and stops
before its next write once `cancel` is set (the run is stopping, or learned it lost a lock),
raising `Stopped`; `wait_rollout` notices `cancel` within a second and, given `holder`, a
lost lock within about a second, and confirms the lock once more when the rollout is done.
A driver may let a recent confirmation stand for a fence if whoever takes the lock waits that
long before writing (Kubernetes: `kube.lease.trust`, 3 s at a 30 s lease). Transient failures
are retried inside the driver; what escapes is final: `DriverError` (exit 3) or
`RolloutFailed` (the release is bad, roll it back).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from wavegate.config.app import Release
from wavegate.config.fleet import Cluster
from wavegate.decide.ledger import Record
from wavegate.kube import lease


@dataclass(frozen=True)
class Lock:
    holder: str
    expires: str  # ISO 8601, UTC

    @classmethod
    def of_lease(cls, current: dict[str, Any] | None) -> Lock | None:
        """Who holds a Lease (the local lock file is shaped like one); None when released."""
        holder = lease.holder(current) if current else None
        if current is None or holder is None:
            return None
        return cls(holder=holder, expires=lease.expires_text(current) or "")


class Driver(Protocol):
    cluster: Cluster

    def connect(self, *, confirm: bool = True) -> None:
        """Make sure the cluster can be reached (a local fleet that is down is started) and,
        with `confirm`, that it answers now; without, the caller's first request shows it
        (one request less where each cluster goes its own way, as in a rollback)."""

    def endpoint(self) -> str:
        """Base URL the checks send their requests to."""

    preview_source: str  # how `preview` knows: "dry-run" (the cluster says) or "ledger"

    def preview(self, release: Release) -> list[str]:
        """What applying `release` would change, as unified-diff lines (none: no change).
        Writes nothing; `plan` shows it."""

    def apply(self, release: Release, *, holder: str, force_conflicts: bool = False,
              cancel: threading.Event | None = None) -> None:
        """Apply the release's objects and prune the app's objects it no longer has; fields
        another field manager owns are taken only with `force_conflicts`."""

    def wait_rollout(self, release: Release, *, timeout: float, holder: str | None = None,
                     cancel: threading.Event | None = None) -> None:
        """Return once every workload of `release` is rolled out; else RolloutFailed
        (Stopped once `cancel` is set, Preempted once `holder` lost the lock)."""

    def delete(self, app: str, *, holder: str) -> None:
        """Remove every object of `app` (a first release rolled back has nothing to go to)."""

    def records(self, app: str, *, with_releases: bool = False) -> list[Record]:
        """The app's ledger, oldest first. `with_releases`: `stored_release` of these records
        will be asked (a rollback), so a driver that can fetch them with the list does."""

    def stored_release(self, record: Record) -> Release: ...

    def create_record(self, record: Record, release: Release, *, holder: str) -> Record: ...

    def update_record(self, record: Record, *, holder: str) -> Record:
        """Compare-and-set on `record.resource_version`; returns the stored record."""

    def acquire_lock(self, app: str, *, holder: str, ttl: float, force: bool = False) -> None:
        """Take the app's lock; LockHeld if another live holder has it (unless `force`)."""

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        """Extend our lease; Preempted if someone took it."""

    def release_lock(self, app: str, *, holder: str) -> None: ...

    def read_lock(self, app: str) -> Lock | None: ...
