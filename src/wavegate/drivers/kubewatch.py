"""List, then watch, one collection of API objects; list again when the watch has expired.

Written once for the two places that follow a collection: the Kubernetes driver (a rollout's
workload and its pods) and the sandbox's node agent (every Pod and Service of its cluster).
`ListWatch.run` lists, hands the items over, then watches from the list's resourceVersion,
re-opening the watch from the last resourceVersion seen (bookmarks keep it fresh) each time the
server ends it or the connection drops; a 410 Gone, as an answer or as an ERROR event, means
that version is too old to resume from, so it lists again. Started from `NOW` instead, it
skips the list: the watch opens at the newest version and the server sends what exists as
ADDED events first (one request, not two, for a caller that needs no moment when the whole
collection is known). `stop` returns promptly: it shuts the socket the loop is blocked on.

Owns the loop and the reading of a watch stream (one JSON event per line), not the transport:
the caller says how to list and how to open a watch (its own client, timeouts, retries and
credentials), and what to do with what arrives. It does not import the kubernetes client, and
it neither logs nor translates errors: what the loop cannot cure (a failed list or watch
request, an ERROR event other than 410) is raised to the caller.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import urllib3

__all__ = ["Dropped", "Failed", "Gone", "ListWatch", "events"]

Json = dict[str, Any]
NOW = ""  # a resourceVersion to start from: the newest, what exists sent as ADDED first
MAX_PAUSE = 2.0  # seconds between re-opening a watch whose connection keeps dropping


class Gone(Exception):
    """The resourceVersion is too old to resume from (410 Gone): list again."""


class Failed(Exception):
    """The server ended the watch with an ERROR event other than 410; `status` is its body."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        super().__init__(f"{status.get('code')} {status.get('reason')}: {status.get('message')}")
        self.status = status


class Dropped(Exception):
    """The connection broke in the middle of a watch stream: resume where it was."""


class ListWatch:
    """One collection followed from the caller's thread until `stop`.

    `list_()` returns a List body (`items`, `metadata.resourceVersion`); `watch(version)` opens
    a watch from that version (`NOW`: leave it unset), raising `Gone` when the server answers
    410. `on_sync(items)` is called after each list, `on_event(type, object)` for each ADDED,
    MODIFIED or DELETED, and `on_drop(detail)` when a connection broke and the watch is
    re-opened. `resource_version` is where to start: None lists first.
    """

    def __init__(
        self,
        *,
        list_: Callable[[], Mapping[str, Any]],
        watch: Callable[[str], urllib3.BaseHTTPResponse],
        on_sync: Callable[[list[Json]], None],
        on_event: Callable[[str, Json], None],
        on_drop: Callable[[str], None] = lambda detail: None,
        resource_version: str | None = None,
        stopped: threading.Event | None = None,
    ) -> None:
        self._list, self._watch = list_, watch
        self._on_sync, self._on_event, self._on_drop = on_sync, on_event, on_drop
        self._version = resource_version  # where to resume; None: list first
        self._stopped = stopped or threading.Event()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._guard = threading.Lock()

    def run(self) -> None:
        """Follow the collection until `stop`; raises what listing or watching cannot cure."""
        drops = 0
        while not self._stopped.is_set():
            if self._version is None:
                self._version = self._relist()
            try:
                dropped = self._follow(self._version)
            except Gone:
                self._version, dropped = None, False
            drops = drops + 1 if dropped else 0
            if drops:  # a connection that keeps dropping is not hammered
                self._stopped.wait(min(0.1 * 2**drops, MAX_PAUSE))

    def stop(self) -> None:
        self._stopped.set()
        with self._guard:  # `_follow` drops the response under the same lock
            if isinstance(self._response, urllib3.HTTPResponse):
                with contextlib.suppress(OSError):
                    self._response.shutdown()

    def _relist(self) -> str:
        listed = self._list()
        self._on_sync(list(listed.get("items") or []))
        return str(listed["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> bool:
        """Watch from `version`; whether the connection dropped."""
        response = self._watch(version)
        with self._guard:
            self._response = response
            stopped = self._stopped.is_set()  # stop() came before it could shut this one
        try:
            if not stopped:
                self._read(response)
        except Dropped as error:
            if not self._stopped.is_set():
                self._on_drop(str(error))
            return True
        finally:
            with self._guard:
                self._response = None
            _close(response)
        return False

    def _read(self, response: urllib3.BaseHTTPResponse) -> None:
        for event in events(response):
            if self._stopped.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise Failed(obj)
            # Moved on event by event: a drop resumes after the last one handed over.
            self._version = str((obj.get("metadata") or {}).get("resourceVersion")
                                or self._version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._on_event(str(kind), obj)


def events(response: urllib3.BaseHTTPResponse) -> Iterator[Json]:
    """The JSON lines of a watch response, as they arrive; `Dropped` if the stream breaks."""
    buffer = b""
    try:
        for chunk in response.stream(decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                if line.strip():
                    yield json.loads(line)
        if buffer.strip():
            yield json.loads(buffer)
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        raise Dropped(f"watch interrupted: {type(error).__name__}") from error


def _close(response: urllib3.BaseHTTPResponse) -> None:
    response.close()  # a watch cut short must not go back to the pool half-read
    response.release_conn()
