"""The error hierarchy: every failure a user can see, with the exit code it ends in.

    WavegateError                 base; carries `exit_code`
    ├── InputError          (2)   bad fleet, app, checks or arguments; names file, line, field
    ├── LockHeld            (4)   another run holds a cluster's lock
    │   └── StaleLock       (4)   ... and its lease ran out: that run looks dead
    ├── RunAlive            (4)   the run to resume still has a live process
    ├── Preempted           (4)   this run lost its lock (an emergency rollback took it)
    ├── RolloutFailed       (3)   the workloads did not become ready (the run rolls it back)
    ├── Conflict            (3)   a ledger compare-and-set lost: the record changed meanwhile
    ├── Stopped             (3)   a step ended early because its run is stopping (never shown)
    └── NeedsHuman          (3)   a cluster could not be reached, or a rollback failed
        ├── DriverError     (3)   a driver call failed for good (after its retries)
        │   └── FieldConflict (2) applying would take fields another field manager owns
        └── SandboxError    (3)   the kube sandbox could not start or stop

Every class that a user can meet is defined here, so its exit code is chosen, never inherited
by accident. `RolloutFailed` and `Conflict` are normally handled inside a run (a failed rollout
is rolled back, a lost compare-and-set is read again); one that escapes means a human must look.

The CLI catches `WavegateError`, prints `str(error)` on one line and exits with `exit_code`.
Messages are written for the user and never carry a secret: drivers cut API bodies short
and the probe code never formats a token.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_ROLLED_BACK = 1
EXIT_BAD_INPUT = 2
EXIT_NEEDS_HUMAN = 3
EXIT_LOCKED = 4
EXIT_PAUSED = 10


class WavegateError(Exception):
    exit_code = EXIT_NEEDS_HUMAN


class InputError(WavegateError):
    """Bad input: nothing was touched."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self, message: str, *, file: Path | str | None = None, line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.line, self.field, self.message = file, line, field, message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


def run_of(holder: str) -> str:
    """The run id in a lock holder: a holder is `<run id>/<process token>` (one incarnation)."""
    return holder.partition("/")[0]


class LockHeld(WavegateError):
    exit_code = EXIT_LOCKED

    def __init__(self, *, cluster: str, app: str, holder: str, expires: str | None) -> None:
        self.cluster, self.app, self.holder = cluster, app, holder
        until = f" until {expires}" if expires else ""
        super().__init__(f"{cluster}: {app} is locked by run {holder}{until}")


class StaleLock(LockHeld):
    """Another run's lease ran out without being released: that run probably died."""

    exit_code = EXIT_LOCKED

    def __init__(self, *, cluster: str, app: str, holder: str, expires: str | None) -> None:
        super().__init__(cluster=cluster, app=app, holder=holder, expires=expires)
        self.args = (f"{cluster}: {app} is locked by run {holder}, whose lease expired at "
                     f"{expires}: that run looks dead; `wavegate resume {run_of(holder)}` "
                     f"finishes it, `wavegate rollback {app}` undoes it",)


class RunAlive(WavegateError):
    """`resume` of a run whose process still runs: two processes must never drive one run."""

    exit_code = EXIT_LOCKED

    def __init__(self, *, run_id: str, pid: int) -> None:
        self.run_id, self.pid = run_id, pid
        super().__init__(f"run {run_id} is still running (pid {pid}); wait for it to end, or "
                         f"stop it with `wavegate abort {run_id}`")


class Preempted(WavegateError):
    exit_code = EXIT_LOCKED

    def __init__(self, *, cluster: str, app: str, holder: str | None) -> None:
        self.cluster = cluster
        by = f"run {holder}" if holder else "nobody (released)"
        super().__init__(f"{cluster}: lost the lock on {app}, now held by {by}; stopped")


class RolloutFailed(WavegateError):
    """The workloads did not become ready: a crashing pod, a timeout, a missing image."""

    exit_code = EXIT_NEEDS_HUMAN


class Conflict(WavegateError):
    """A compare-and-set lost: the record changed since it was read."""

    exit_code = EXIT_NEEDS_HUMAN


class Stopped(WavegateError):
    """A run asked one of its steps to end early (a signal, a lost lock): a driver raises it
    before its next write, or from a wait, and has written nothing more. The run handles it."""

    exit_code = EXIT_NEEDS_HUMAN

    def __init__(self, *, cluster: str) -> None:
        self.cluster = cluster
        super().__init__(f"{cluster}: stopped before the step finished (the run is stopping)")


class NeedsHuman(WavegateError):
    exit_code = EXIT_NEEDS_HUMAN


class DriverError(NeedsHuman):
    exit_code = EXIT_NEEDS_HUMAN

    def __init__(self, message: str, *, cluster: str) -> None:
        self.cluster = cluster
        super().__init__(f"{cluster}: {message}")


class FieldConflict(DriverError):
    """Applying would take fields another field manager owns: the user decides (exit 2,
    or `deploy --force-conflicts`). A DriverError, so the run still unwinds that cluster."""

    exit_code = EXIT_BAD_INPUT


class SandboxError(NeedsHuman):
    """The sandbox could not start or stop; the message names the process and its log."""

    exit_code = EXIT_NEEDS_HUMAN
