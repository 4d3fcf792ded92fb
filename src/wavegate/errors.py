"""The error hierarchy: every failure a user can see, with the exit code it ends in.

    WavegateError                 base; carries `exit_code`
    ├── InputError          (2)   bad fleet, app, checks or arguments; names file, line, field
    ├── LockHeld            (4)   another run holds a cluster's lock
    ├── Preempted           (4)   this run lost its lock (an emergency rollback took it)
    └── NeedsHuman          (3)   a cluster could not be reached, or a rollback failed
        └── DriverError     (3)   a driver call failed for good (after its retries)

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


class LockHeld(WavegateError):
    exit_code = EXIT_LOCKED

    def __init__(self, *, cluster: str, app: str, holder: str, expires: str | None) -> None:
        self.cluster, self.app, self.holder = cluster, app, holder
        until = f" until {expires}" if expires else ""
        super().__init__(f"{cluster}: {app} is locked by run {holder}{until}")


class Preempted(WavegateError):
    exit_code = EXIT_LOCKED

    def __init__(self, *, cluster: str, app: str, holder: str | None) -> None:
        self.cluster = cluster
        by = f"run {holder}" if holder else "nobody (released)"
        super().__init__(f"{cluster}: lost the lock on {app}, now held by {by}; stopped")


class NeedsHuman(WavegateError):
    exit_code = EXIT_NEEDS_HUMAN


class DriverError(NeedsHuman):
    def __init__(self, message: str, *, cluster: str) -> None:
        self.cluster = cluster
        super().__init__(f"{cluster}: {message}")
