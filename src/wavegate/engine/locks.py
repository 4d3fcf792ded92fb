"""Holding one run's locks: every cluster's lease for the app, renewed while the run lives.

A deploy takes all of them before it touches anything, so a second deploy fails fast (exit 4,
naming the holder) instead of meeting the first one mid-fleet. An emergency rollback takes them
by force; the run that loses one learns it at its next renewal or its next fenced write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType

import structlog

from wavegate.drivers.base import Driver
from wavegate.errors import DriverError, LockHeld, Preempted

log = structlog.get_logger(__name__)
DEFAULT_TTL = 30.0


class Locks:
    def __init__(self, drivers: Mapping[str, Driver], *, app: str, holder: str,
                 ttl: float = DEFAULT_TTL, force: bool = False,
                 on_lost: Callable[[Preempted], None] = lambda error: None) -> None:
        self.drivers, self.app, self.holder, self.ttl = drivers, app, holder, ttl
        self.force, self.on_lost = force, on_lost
        self._held: list[str] = []
        self.keep = False  # leave the leases in place on exit (a paused run)
        self._stopped = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                         name="lock-renewal")

    def __enter__(self) -> Locks:
        try:
            for name, driver in self.drivers.items():
                driver.acquire_lock(self.app, holder=self.holder, ttl=self.ttl, force=self.force)
                self._held.append(name)
        except (LockHeld, DriverError):
            self.release()
            raise
        self._renewer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stopped.set()
        if self._renewer.is_alive():
            self._renewer.join()
        if not self.keep:
            self.release()

    def release(self) -> None:
        for name in self._held:
            try:
                self.drivers[name].release_lock(self.app, holder=self.holder)
            except (DriverError, Preempted) as error:
                log.warning("lock.release_failed", cluster=name, detail=str(error))
        self._held.clear()

    def _renew_until_stopped(self) -> None:
        while not self._stopped.wait(self.ttl / 3):
            for name in list(self._held):
                try:
                    self.drivers[name].renew_lock(self.app, holder=self.holder, ttl=self.ttl)
                except Preempted as error:
                    self._held.remove(name)
                    self.on_lost(error)
                except DriverError as error:
                    log.warning("lock.renew_failed", cluster=name, detail=str(error))
