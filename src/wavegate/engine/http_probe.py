"""One probe request, bounded: a total deadline and a body limit, whatever the endpoint sends.

A socket timeout bounds each read, so an endpoint that trickles a byte just under it holds a
request for as long as it likes, and a body read whole can be of any size. Here the body is
read as it comes and counted: past `max_body` bytes, or past `deadline` seconds from the start
(waiting for a connection, connect, headers and body together), the answer is `Unreadable` and
the connection is dropped, never drained. Compression is declined up front
(`Accept-Encoding: identity`); a server that compresses anyway is decoded under the same byte
limit, so a small gzip bomb cannot grow in memory either.

Every probe of the process is sent from one asyncio event loop in one thread (`run`), and each
cluster's `Pool` keeps its connections open between probes and rounds (HTTP/1.1 keep-alive).
A 1,000-cluster run sends about 40,000 probes: with a thread per probe in flight, those threads
taking turns at the interpreter lock cost more CPU than the probes (about 1 ms each in a run),
where one loop sends them for about 0.1 ms. The deadline is the loop's timeout around the
whole exchange. The HTTP/1.1 client is the few lines a probe needs (a request, a status line,
headers, a body by length, chunks or to the end), not a general one: no redirects, no proxy,
no cookies. This module only sends and reads; judging the answer is `verdict.judge`.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from wavegate import __version__
from wavegate.config import durations, sizes
from wavegate.decide.verdict import Response, TransportError, Unreadable

Answer = Response | TransportError | Unreadable
T = TypeVar("T")
CHUNK = 65536
HEAD_LIMIT = 65536  # bytes of status line and headers; more is no answer a probe can judge
USER_AGENT = f"wavegate/{__version__}"
_GZIP, _ZLIB = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS
_ENCODINGS = {"": None, "identity": None, "gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
_LINE_BREAK = re.compile(r"[\r\n\0]")  # in a header or the path: a second request smuggled in


class _Malformed(Exception):
    """The endpoint's bytes are not an HTTP/1.x answer."""


class _TooLarge(Exception):
    """The decoded body passed the probe's limit."""


class _Closed(_Malformed):
    """The connection ended before any byte of an answer came back."""


# A kept connection the server closed while it sat idle fails before any answer: sent again,
# once, on a new connection.
_STALE = (_Closed, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_FAILURES = (OSError, EOFError, ValueError, asyncio.LimitOverrunError, _Malformed)


@dataclass(frozen=True)
class Limits:
    deadline: float  # seconds for the whole exchange
    max_body: int  # bytes of (decoded) body


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def still_open(self) -> bool:
        """Not closed by the server while idle (its end of file is already read)."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Seen:
    """What one exchange got so far: the status names a late or oversized answer."""

    status: int | None = None


class Pool:
    """One cluster's keep-alive connections to its endpoint, at most `size` in use at once.
    `send` runs on the probe loop (`run`); `close` may be called from any thread."""

    def __init__(self, endpoint: str, *, size: int, tls: ssl.SSLContext) -> None:
        parts = urlsplit(endpoint)
        self._tls = tls if parts.scheme == "https" else None
        self._scheme, self._host = parts.scheme, parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = host if parts.port is None else f"{host}:{self._port}"
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._closed = False

    async def send(self, method: str, target: str, *, headers: Mapping[str, str],
                   limits: Limits, content: bytes | None = None) -> Answer:
        """The answer to one request, or why there is none within `limits`."""
        if self._scheme not in ("http", "https") or not self._host:
            return TransportError(f"UnsupportedProtocol (cannot send to {self._scheme}://)")
        try:
            request = self._request(method, self._prefix + target, headers, content)
        except ValueError as error:
            return TransportError(f"LocalProtocolError ({error})")
        seen = _Seen()
        try:
            async with asyncio.timeout(limits.deadline), self._slots:
                return await self._exchange(request, method == "HEAD", limits, seen)
        except TimeoutError:  # the exchange was cancelled, and its connection closed
            return Unreadable(_late(limits), status=seen.status)

    def close(self) -> None:
        """Close the kept connections; one in use closes when its exchange ends."""
        self._closed = True
        _loop.call_soon(self._close_idle)

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _exchange(self, request: bytes, head_only: bool, limits: Limits,
                        seen: _Seen) -> Answer:
        connection = self._kept()
        if connection is not None:
            try:
                return await self._ask(connection, request, head_only, limits, seen)
            except _STALE as error:
                if seen.status is not None:
                    return _failed(error, connected=True)
            except _FAILURES as error:
                return _failed(error, connected=True)
        try:
            connection = await self._connect()
        except OSError as error:
            return _failed(error, connected=False)
        try:
            return await self._ask(connection, request, head_only, limits, seen)
        except _FAILURES as error:
            return _failed(error, connected=True)

    async def _ask(self, connection: _Connection, request: bytes, head_only: bool,
                   limits: Limits, seen: _Seen) -> Answer:
        """Send and read one exchange; the connection is kept for the next only if its answer
        was read to its end and the server did not say it closes."""
        try:
            connection.writer.write(request)
            answer, reusable = await _response(connection.reader, head_only, limits, seen)
        except BaseException:  # a failure, or the deadline's cancel: never drained, dropped
            connection.close()
            raise
        if reusable and not self._closed:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._tls, limit=HEAD_LIMIT,
            server_hostname=self._host if self._tls else None)
        return _Connection(reader, writer)  # asyncio turns Nagle off: no 40 ms per request

    def _kept(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.still_open():
                return connection
            connection.close()
        return None

    def _request(self, method: str, target: str, headers: Mapping[str, str],
                 content: bytes | None) -> bytes:
        fields = {"Host": self._authority, "User-Agent": USER_AGENT, **headers,
                  "Accept-Encoding": "identity"}
        if content is not None or method in ("POST", "PUT", "PATCH"):
            fields["Content-Length"] = str(len(content or b""))
        if " " in target or _LINE_BREAK.search("".join((target, *fields, *fields.values()))):
            # Never the value itself: it may be the Authorization header.
            raise ValueError("a header or the path holds a line break or a space")
        lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
        text = "\r\n".join(lines)
        try:
            return (text + "\r\n\r\n").encode("latin-1") + (content or b"")
        except UnicodeEncodeError:
            raise ValueError("a header holds a character outside Latin-1") from None


async def _response(reader: asyncio.StreamReader, head_only: bool, limits: Limits,
                    seen: _Seen) -> tuple[Answer, bool]:
    """The answer and whether the connection may carry another request."""
    status, version, fields = await _head(reader)
    seen.status = status
    encoding = fields.get("content-encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        return Unreadable(f"response in an encoding probes do not read: {encoding[:40]}",
                          status=status), False
    body = _Body(limits.max_body, _ENCODINGS[encoding])
    try:
        framed = await _read_body(reader, body, status=status, fields=fields,
                                  head_only=head_only)
        body.finish()
    except _TooLarge:
        return _too_large(limits, status), False
    except zlib.error:
        return Unreadable(f"response body does not decode as {encoding}", status=status), False
    return Response(status=status, body=bytes(body.data)), framed and _keeps_alive(version,
                                                                                   fields)


async def _head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Status, HTTP version and headers (names lowercased), past any 1xx interim answer."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise _Malformed("connection closed in the middle of the answer's head") \
                    from None
            raise _Closed("remote end closed connection without response") from None
        except asyncio.LimitOverrunError:
            raise _Malformed(f"answer's head over {sizes.format(HEAD_LIMIT)}") from None
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _Malformed("not an HTTP/1.x status line")
        if not 100 <= int(code) < 200:
            return int(code), version, _fields(lines)


def _fields(lines: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _Malformed("a header line without a colon")
        name, value = name.strip().lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


async def _read_body(reader: asyncio.StreamReader, body: _Body, *, status: int,
                     fields: Mapping[str, str], head_only: bool) -> bool:
    """Read the body into `body` by the way it is framed; whether it ended where it said (a
    body read to the connection's end leaves no connection to keep)."""
    if head_only or status in (204, 304):
        return True
    if "chunked" in fields.get("transfer-encoding", "").lower():
        await _chunked(reader, body)
        return True
    if "content-length" in fields:
        await _exactly(reader, body, int(fields["content-length"]))
        return True
    while chunk := await reader.read(CHUNK):
        body.take(chunk)
    return False


async def _chunked(reader: asyncio.StreamReader, body: _Body) -> None:
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        await _exactly(reader, body, size)
        if await reader.readexactly(2) != b"\r\n":
            raise _Malformed("a chunk longer than its size")
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailers: nothing a probe judges


async def _exactly(reader: asyncio.StreamReader, body: _Body, length: int) -> None:
    """`length` bytes of body, taken as they come (never more than CHUNK at once in memory
    beyond the body), so a declared length past the limit stops at the limit."""
    if length < 0:
        raise _Malformed("a negative length")
    while length:
        chunk = await reader.read(min(length, CHUNK))
        if not chunk:
            raise _Malformed("connection closed before the body's end")
        length -= len(chunk)
        body.take(chunk)


def _keeps_alive(version: str, fields: Mapping[str, str]) -> bool:
    connection = fields.get("connection", "").lower()
    return "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection


def _failed(error: BaseException, *, connected: bool) -> TransportError:
    """httpx's names for what went wrong, which reports have always shown."""
    if isinstance(error, OSError):
        name = "ReadError" if connected else "ConnectError"
    else:
        name = "RemoteProtocolError"
    text = _reason(error)
    return TransportError(name + (f" ({text[:120]})" if text else ""))


def _reason(error: BaseException) -> str:
    """What went wrong in the system's words: asyncio words a refused connection "Connect call
    failed ('127.0.0.1', 9)", where the errno says "Connection refused"."""
    if isinstance(error, OSError) and not isinstance(error, ssl.SSLError | socket.gaierror) \
            and error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return getattr(error, "strerror", None) or str(error)


def _late(limits: Limits) -> str:
    return f"no complete answer within {durations.format(limits.deadline)}"


def _too_large(limits: Limits, status: int) -> Unreadable:
    return Unreadable(f"response body over {sizes.format(limits.max_body)}", status=status)


class _Body:
    """The decoded body so far; never holds more than `limit` + 1 bytes."""

    def __init__(self, limit: int, wbits: int | None) -> None:
        self.limit, self.data = limit, bytearray()
        self._inflate = zlib.decompressobj(wbits) if wbits is not None else None

    def take(self, chunk: bytes) -> None:
        """Add a raw chunk; `_TooLarge` once the body is over the limit."""
        inflate, pending = self._inflate, chunk
        if inflate is None:
            self.data += chunk
        while inflate is not None and pending and len(self.data) <= self.limit:
            # max_length keeps a highly compressed chunk from expanding past the limit at once.
            self.data += inflate.decompress(pending, self.limit + 1 - len(self.data))
            pending = inflate.unconsumed_tail
        if len(self.data) > self.limit:
            raise _TooLarge

    def finish(self) -> None:
        if self._inflate is not None:
            self.data += self._inflate.flush(self.limit + 1 - len(self.data))
        if len(self.data) > self.limit:
            raise _TooLarge


class _ProbeLoop:
    """The event loop every probe of the process is sent from, in its own daemon thread,
    started by the first probe."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard = threading.Lock()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._started()).result()

    def call_soon(self, callback: Callable[[], object]) -> None:
        """`callback` on the loop; nothing to do where no probe was ever sent."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(callback)

    def forget(self) -> None:
        """In a forked child: the loop's thread stayed in the parent."""
        self._loop, self._guard = None, threading.Lock()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="probes", daemon=True).start()
                self._loop = loop
            return self._loop


_loop = _ProbeLoop()
os.register_at_fork(after_in_child=_loop.forget)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run probes (`Pool.send` and what awaits it) on the probe loop; wait for the result."""
    return _loop.run(coroutine)
