"""The principals' tokens, read where they live, for as long as the run lives.

    token_env      read once: a process's environment does not change under it
    token_file     read again at every lookup, so a file rotated during a two-hour bake is
                   sent from the next request on
    token_command  argv run without a shell; its stdout is the token, or JSON
                   {"token": ..., "expires_at": RFC 3339} cached until shortly before that time
                   (like a kubeconfig exec plugin); without an expiry, until a 401 asks for a
                   fresh one

`resolve` reads every token once before anything is touched: one that cannot be read then is an
input error (exit 2) naming the checks file and the principal's line. Later, a source that
fails keeps the last good token and logs why (the 401 it then gets counts as a check error).
`Tokens.refresh` reads a token afresh after a 401, so a rotation is retried once before it
counts. Every token is registered with `redact` the moment it is read; messages name the
variable, file or command, never a value, and never a command's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Protocol

import structlog

from wavegate import redact
from wavegate.config.checks import Principal, Suite
from wavegate.errors import InputError

log = structlog.get_logger(__name__)
COMMAND_TIMEOUT = 30.0
REFRESH_BEFORE = 30.0  # seconds before `expires_at` a cached token is fetched again
Wall = Callable[[], float]  # seconds since the epoch: expiries are wall-clock times


class Unreadable(Exception):
    """A token source that gave no token; the message names the source, never a value."""


class Source(Protocol):
    def read(self, *, stale: str | None) -> str:
        """The current token, never `stale` from a cache (a server refused it). Raises
        `Unreadable`."""


class EnvSource:
    def __init__(self, variable: str, environ: Mapping[str, str]) -> None:
        self.variable, self.environ = variable, environ

    def read(self, *, stale: str | None) -> str:
        token = self.environ.get(self.variable)
        if not token:
            raise Unreadable(f"variable {self.variable} is not set")
        return token


class FileSource:
    def __init__(self, path: os.PathLike[str]) -> None:
        self.path = path

    def read(self, *, stale: str | None) -> str:
        try:
            with open(self.path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as error:
            raise Unreadable(f"cannot read {self.path}: {error.strerror}") from None
        if not token:
            raise Unreadable(f"{self.path} is empty")
        return token


class CommandSource:
    """A credential helper's token, cached while its stated expiry is far enough away."""

    def __init__(self, argv: tuple[str, ...], *, wall: Wall = time.time,
                 timeout: float = COMMAND_TIMEOUT) -> None:
        self.argv, self.wall, self.timeout = argv, wall, timeout
        self._cached: str | None = None
        self._expires: float | None = None
        self._lock = threading.Lock()  # parallel probes must not run the helper at once

    def read(self, *, stale: str | None) -> str:
        with self._lock:
            # Parallel probes refused the same token: the first one to get here runs the
            # helper, the others find a cached token that is no longer the refused one.
            if self._cached is None or self._cached == stale or self._expired():
                self._cached, self._expires = self._run()
            return self._cached

    def _expired(self) -> bool:
        return self._expires is not None and self.wall() >= self._expires - REFRESH_BEFORE

    def _run(self) -> tuple[str, float | None]:
        what = f"token_command {self.argv[0]}"
        try:
            done = subprocess.run(self.argv, capture_output=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            reason = f"took over {self.timeout:g}s" if isinstance(
                error, subprocess.TimeoutExpired) else f"cannot run: {error.strerror}"
            raise Unreadable(f"{what} {reason}") from None
        if done.returncode != 0:
            raise Unreadable(f"{what} exited with {done.returncode}")
        return parse_output(done.stdout.decode("utf-8", errors="replace"), what)


def parse_output(text: str, what: str) -> tuple[str, float | None]:
    """(token, expiry as epoch seconds or None) from a helper's stdout."""
    text = text.strip()
    if not text.startswith("{"):
        if not text:
            raise Unreadable(f"{what} printed nothing")
        redact.register(text)
        return text, None
    try:
        document = json.loads(text)
    except ValueError:
        raise Unreadable(f"{what} printed JSON that does not parse") from None
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        raise Unreadable(f"{what} printed JSON without a string 'token'")
    redact.register(token)
    expires = document.get("expires_at")
    if expires is None:
        return token, None
    try:
        when = datetime.fromisoformat(str(expires))
    except ValueError:
        raise Unreadable(f"{what}: expires_at is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise Unreadable(f"{what}: expires_at needs a time zone (e.g. Z)")
    return token, when.timestamp()


class Tokens(Mapping[str, str | None]):
    """Principal name -> the token to send now (None: sends none)."""

    def __init__(self, sources: Mapping[str, Source | None],
                 first: Mapping[str, str | None]) -> None:
        self._sources = dict(sources)
        self._last = dict(first)

    def __getitem__(self, name: str) -> str | None:
        return self._read(name, stale=None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def refresh(self, name: str, refused: str) -> str | None:
        """`name`'s token read again after a server refused `refused`; None if unchanged."""
        token = self._read(name, stale=refused)
        return token if token != refused else None

    def _read(self, name: str, *, stale: str | None) -> str | None:
        source = self._sources[name]
        if source is None:
            return None
        try:
            token = source.read(stale=stale)
        except Unreadable as problem:
            log.warning("token.unreadable", principal=name, problem=str(problem))
            return self._last.get(name)
        redact.register(token)
        self._last[name] = token
        return token


def refreshed(tokens: Mapping[str, str | None], name: str, refused: str) -> str | None:
    """A new token for `name` after a 401 refused `refused`, if its source has one."""
    return tokens.refresh(name, refused) if isinstance(tokens, Tokens) else None


def resolve(suite: Suite, environ: Mapping[str, str] | None = None, *,
            wall: Wall = time.time) -> Tokens:
    """Every principal's token, read once now; a token that cannot be read is exit 2."""
    env = os.environ if environ is None else environ
    sources = {name: _source(principal, env, wall)
               for name, principal in suite.principals.items()}
    first: dict[str, str | None] = {}
    for name, source in sources.items():
        first[name] = _first(source, suite, suite.principals[name])
    return Tokens(sources, first)


def _source(principal: Principal, env: Mapping[str, str], wall: Wall) -> Source | None:
    if principal.token_env is not None:
        return EnvSource(principal.token_env, env)
    if principal.token_file is not None:
        return FileSource(principal.token_file)
    if principal.token_command is not None:
        return CommandSource(principal.token_command, wall=wall)
    return None


def _first(source: Source | None, suite: Suite, principal: Principal) -> str | None:
    if source is None:
        return None
    try:
        token = source.read(stale=None)
    except Unreadable as problem:
        raise InputError(f"token for principal {principal.name!r}: {problem}",
                         file=suite.file, line=principal.line,
                         field=f"principals.{principal.name}") from None
    redact.register(token)
    return token
