"""Holding one run's locks: every cluster's lease for the app, renewed while the run lives.

A deploy takes all of them before it touches anything, so a second deploy fails fast (exit 4,
naming the holder) instead of meeting the first one mid-fleet. An emergency rollback takes them
by force, one cluster at a time from its own workers (`take`), so a cluster it cannot reach
never keeps it from the others; the run that loses one learns it at its next renewal or its
next fenced write.

Every cluster is asked in parallel (a bounded pool), for taking, renewing and releasing alike:
one hung API server must not let the other leases lapse. A renewal still in flight when the next
one is due is not sent again; one that has not come back within a lease term is reported as
overdue (that cluster's next fenced write says whether the lease survived).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from types import TracebackType

import structlog

from wavegate.drivers.base import Driver
from wavegate.engine import fanout
from wavegate.errors import DriverError, LockHeld, Preempted, WavegateError

log = structlog.get_logger(__name__)
DEFAULT_TTL = 30.0


class Locks:
    def __init__(self, drivers: Mapping[str, Driver], *, app: str, holder: str,
                 ttl: float = DEFAULT_TTL, force: bool = False,
                 on_lost: Callable[[Preempted], None] = lambda error: None,
                 all_at_once: bool = True) -> None:
        """ALL_AT_ONCE takes every lock on entry, or none (a deploy); otherwise each is taken
        by `take` (an emergency rollback, cluster by cluster)."""
        self.drivers, self.app, self.holder, self.ttl = drivers, app, holder, ttl
        self.force, self.on_lost, self.all_at_once = force, on_lost, all_at_once
        self._held: dict[str, None] = {}  # ordered: released in the order taken
        self._guard = threading.Lock()
        self.keep = False  # leave the leases in place on exit (a paused run)
        self._stopped = threading.Event()
        self._pool = fanout.pool(len(drivers), name="lock")
        self._renewing: dict[str, tuple[Future[None], float]] = {}  # name -> (call, sent at)
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                         name="lock-renewal")

    def __enter__(self) -> Locks:
        if self.all_at_once:
            self._take_all()
        self._renewer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stopped.set()
        if self._renewer.is_alive():
            self._renewer.join()
        if not self.keep:
            self.release()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def held(self) -> list[str]:
        with self._guard:
            return list(self._held)

    def take(self, name: str) -> None:
        """Take one cluster's lock (LockHeld, DriverError); renewed from then on."""
        self.drivers[name].acquire_lock(self.app, holder=self.holder, ttl=self.ttl,
                                        force=self.force)
        with self._guard:
            self._held[name] = None

    def release(self) -> None:
        names = self.held
        list(self._pool.map(self._release_one, names))
        with self._guard:
            self._held.clear()

    def _take_all(self) -> None:
        """Every lock, asked in parallel; if any is refused, the ones taken are given back and
        the refusal is raised (a held lock before an unreachable cluster: exit 4 names it)."""
        errors = [error for error in self._pool.map(self._try_take, list(self.drivers)) if error]
        if errors:
            self.release()
            raise next((e for e in errors if isinstance(e, LockHeld)), errors[0])

    def _try_take(self, name: str) -> WavegateError | None:
        try:
            self.take(name)
        except (LockHeld, DriverError) as error:
            return error
        return None

    def _release_one(self, name: str) -> None:
        try:
            self.drivers[name].release_lock(self.app, holder=self.holder)
        except (DriverError, Preempted) as error:
            log.warning("lock.release_failed", cluster=name, detail=str(error))

    def _renew_until_stopped(self) -> None:
        while not self._stopped.wait(self.ttl / 3):
            now = time.monotonic()
            for name in self.held:
                pending = self._renewing.get(name)
                if pending is None or pending[0].done():
                    self._renewing[name] = (self._pool.submit(self._renew_one, name), now)
                elif now - pending[1] >= self.ttl:
                    log.warning("lock.renew_overdue", cluster=name, app=self.app,
                                waited=round(now - pending[1], 1))

    def _renew_one(self, name: str) -> None:
        try:
            self.drivers[name].renew_lock(self.app, holder=self.holder, ttl=self.ttl)
        except Preempted as error:
            with self._guard:
                self._held.pop(name, None)
            self.on_lost(error)
        except DriverError as error:
            log.warning("lock.renew_failed", cluster=name, detail=str(error))
