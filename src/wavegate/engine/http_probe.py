"""One probe request, bounded: a total deadline and a body limit, whatever the endpoint sends.

httpx's timeouts are per read, so an endpoint that trickles a byte just under the read timeout
holds a request for as long as it likes, and `response.content` reads a body of any size into
memory. Here the body is read as a stream and counted as it comes: past `max_body` bytes, or
past `deadline` seconds from the start (connect, headers and body together), the answer is
`Unreadable` and the connection is dropped, never drained. Compression is declined up front
(`Accept-Encoding: identity`); a server that compresses anyway is decoded under the same byte
limit, so a small gzip bomb cannot grow in memory either.

The exchange runs on a daemon thread and the caller waits for it at most `deadline`: that is
what makes the deadline total even while a read is blocked. A thread left behind stops at its
next chunk or its read timeout (also `deadline`), holding at most `max_body` bytes. This module
only sends and reads; judging the answer is `verdict.judge`.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from wavegate.config import durations, sizes
from wavegate.decide.verdict import Response, TransportError, Unreadable

Answer = Response | TransportError | Unreadable
_GZIP, _ZLIB = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS
_ENCODINGS = {"": None, "identity": None, "gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}


@dataclass(frozen=True)
class Limits:
    deadline: float  # seconds for the whole exchange
    max_body: int  # bytes of (decoded) body


def send(client: httpx.Client, method: str, path: str, *, headers: Mapping[str, str],
         limits: Limits, content: bytes | None = None) -> Answer:
    """The answer to one request, or why there is none within `limits`."""
    exchange = _Exchange(client, method, path, {**headers, "Accept-Encoding": "identity"},
                         limits, content)
    threading.Thread(target=exchange.run, name="probe-send", daemon=True).start()
    if not exchange.done.wait(limits.deadline):
        exchange.abandoned.set()
        return Unreadable(_late(limits), status=exchange.status)
    if exchange.failure is not None:
        raise exchange.failure  # a bug, not an endpoint's doing: let it be seen as one
    assert exchange.answer is not None
    return exchange.answer


def _late(limits: Limits) -> str:
    return f"no complete answer within {durations.format(limits.deadline)}"


class _Exchange:
    """One request on its own thread; the caller reads `answer` once `done` is set."""

    def __init__(self, client: httpx.Client, method: str, path: str, headers: dict[str, str],
                 limits: Limits, content: bytes | None) -> None:
        self.client, self.method, self.path, self.content = client, method, path, content
        self.headers, self.limits = headers, limits
        self.done, self.abandoned = threading.Event(), threading.Event()
        self.status: int | None = None
        self.answer: Answer | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self.answer = self._exchange()
        except BaseException as error:  # handed to the waiting caller, which raises it
            self.failure = error
        finally:
            self.done.set()

    def _exchange(self) -> Answer:
        started = time.monotonic()
        try:
            with self.client.stream(self.method, self.path, headers=self.headers,
                                    content=self.content,
                                    timeout=self.limits.deadline) as response:
                self.status = response.status_code
                return self._read(response, started)
        except httpx.HTTPError as error:
            text = str(error)
            return TransportError(type(error).__name__ + (f" ({text[:120]})" if text else ""))

    def _read(self, response: httpx.Response, started: float) -> Answer:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            return Unreadable(f"response in an encoding probes do not read: {encoding[:40]}",
                              status=self.status)
        body = _Body(self.limits.max_body, _ENCODINGS[encoding])
        try:
            # An in-process transport may hand over a body already read; a network never does.
            chunks = [response.content] if response.is_stream_consumed else response.iter_raw()
            for chunk in chunks:
                if self.abandoned.is_set() or time.monotonic() - started > self.limits.deadline:
                    return Unreadable(_late(self.limits), status=self.status)
                if not body.take(chunk):
                    return self._too_large()
            if not body.finish():
                return self._too_large()
        except zlib.error:
            return Unreadable(f"response body does not decode as {encoding}", status=self.status)
        return Response(status=response.status_code, body=bytes(body.data))

    def _too_large(self) -> Unreadable:
        return Unreadable(f"response body over {sizes.format(self.limits.max_body)}",
                          status=self.status)


class _Body:
    """The decoded body so far; never holds more than `limit` + 1 bytes."""

    def __init__(self, limit: int, wbits: int | None) -> None:
        self.limit, self.data = limit, bytearray()
        self._inflate = zlib.decompressobj(wbits) if wbits is not None else None

    def take(self, chunk: bytes) -> bool:
        """Add a raw chunk; False once the body is over the limit."""
        if self._inflate is None:
            self.data += chunk
            return len(self.data) <= self.limit
        pending = chunk
        while pending:
            # max_length keeps a highly compressed chunk from expanding past the limit at once.
            self.data += self._inflate.decompress(pending, self.limit + 1 - len(self.data))
            if len(self.data) > self.limit:
                return False
            pending = self._inflate.unconsumed_tail
        return True

    def finish(self) -> bool:
        if self._inflate is not None:
            self.data += self._inflate.flush(self.limit + 1 - len(self.data))
        return len(self.data) <= self.limit
