"""One probe request, bounded: a total deadline and a body limit, whatever the endpoint sends.

A socket timeout bounds each read, so an endpoint that trickles a byte just under it holds a
request for as long as it likes, and a body read whole can be of any size. Here the body is
read as it comes and counted: past `max_body` bytes, or past `deadline` seconds from the start
(connect, headers and body together), the answer is `Unreadable` and the connection is dropped,
never drained. Compression is declined up front (`Accept-Encoding: identity`); a server that
compresses anyway is decoded under the same byte limit, so a small gzip bomb cannot grow in
memory either.

The deadline is made total by one watchdog thread for the whole process: past an exchange's
deadline it shuts its socket down, which ends whatever read or write is blocked on it. Each
cluster's `Pool` keeps its connections open between probes and rounds (HTTP/1.1 keep-alive).
This sits on the standard library's `http.client`, not httpx: a 1,000-cluster run sends about
40,000 probes, and httpx's per-request machinery plus a thread per exchange cost about 1.5 ms
of CPU each, against about 0.2 ms here. This module only sends and reads; judging the answer
is `verdict.judge`.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wavegate import __version__
from wavegate.config import durations, sizes
from wavegate.decide.verdict import Response, TransportError, Unreadable

Answer = Response | TransportError | Unreadable
CHUNK = 65536
USER_AGENT = f"wavegate/{__version__}"
_GZIP, _ZLIB = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS
_ENCODINGS = {"": None, "identity": None, "gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
# A kept connection the server closed meanwhile fails before any answer: sent again, once.
# Reads time out this long after the deadline, so the watchdog ends a late exchange (its
# detail names the deadline) and the socket's own timeout is only there should it not.
_BACKSTOP = 1.0
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
          ConnectionAbortedError)


@dataclass(frozen=True)
class Limits:
    deadline: float  # seconds for the whole exchange
    max_body: int  # bytes of (decoded) body


class Pool:
    """One cluster's keep-alive connections to its endpoint, at most `size` open at once;
    safe to share between the threads of a round."""

    def __init__(self, endpoint: str, *, size: int, tls: ssl.SSLContext) -> None:
        parts = urlsplit(endpoint)
        self._tls = tls if parts.scheme == "https" else None
        self._scheme, self._host = parts.scheme, parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[http.client.HTTPConnection] = []
        self._guard = threading.Lock()
        self._closed = False

    def send(self, method: str, target: str, *, headers: Mapping[str, str], limits: Limits,
             content: bytes | None = None) -> Answer:
        """The answer to one request, or why there is none within `limits`."""
        if self._scheme not in ("http", "https") or not self._host:
            return TransportError(f"UnsupportedProtocol (cannot send to {self._scheme}://)")
        headers = {"User-Agent": USER_AGENT, **headers, "Accept-Encoding": "identity"}
        with _deadline(limits.deadline) as timer:
            if not self._slots.acquire(timeout=max(timer.left(), 0.0)):
                return Unreadable(_late(limits))
            try:
                return self._exchange(method, self._prefix + target, headers, limits, content,
                                      timer)
            finally:
                self._slots.release()

    def close(self) -> None:
        with self._guard:
            idle, self._idle, self._closed = self._idle, [], True
        for connection in idle:
            connection.close()

    def _exchange(self, method: str, target: str, headers: dict[str, str], limits: Limits,
                  content: bytes | None, timer: _Timer) -> Answer:
        connection, kept = self._connection()
        response: http.client.HTTPResponse | None = None
        try:
            try:
                response = self._ask(connection, method, target, headers, content, timer)
            except _STALE:
                if not kept or timer.expired:
                    raise
                connection.close()
                connection, kept = self._new(), False
                response = self._ask(connection, method, target, headers, content, timer)
            answer = _read(response, limits, timer)
            response.close()  # read to its end or given up: the connection may send again
        except (OSError, http.client.HTTPException, ValueError) as error:
            failure = _failed(error, connected=connection.sock is not None)
            late = _watchdog.finish(timer) or timer.passed
            connection.close()
            status = response.status if response is not None else None
            return Unreadable(_late(limits), status=status) if late else failure
        late = _watchdog.finish(timer)  # from here the watchdog leaves this socket alone
        if isinstance(answer, Response) and not response.will_close and not late:
            self._keep(connection)
        else:
            connection.close()  # never drained: whatever the endpoint still sends is dropped
        return answer

    def _ask(self, connection: http.client.HTTPConnection, method: str, target: str,
             headers: dict[str, str], content: bytes | None,
             timer: _Timer) -> http.client.HTTPResponse:
        if connection.sock is None:
            self._connect(connection, timer)
        else:
            connection.sock.settimeout(timer.left() + _BACKSTOP)
            timer.arm(connection.sock)
        connection.request(method, target, body=content, headers=headers)
        return connection.getresponse()

    def _connect(self, connection: http.client.HTTPConnection, timer: _Timer) -> None:
        raw = socket.create_connection((self._host, self._port), timeout=max(timer.left(), 0.001))
        timer.arm(raw)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms per request
        raw.settimeout(timer.left() + _BACKSTOP)
        sock = self._tls.wrap_socket(raw, server_hostname=self._host) if self._tls else raw
        timer.arm(sock)
        connection.sock = sock

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection still open (and whether it was kept), or a new one."""
        while True:
            with self._guard:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._new(), False
            if _still_open(connection):
                return connection, True
            connection.close()

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port)  # connected by `_connect`

    def _keep(self, connection: http.client.HTTPConnection) -> None:
        with self._guard:
            if not self._closed:
                self._idle.append(connection)
                return
        connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """An idle connection the server has not closed: nothing to read on it yet. (poll, not
    select: a large fleet's sockets pass select's 1,024 file descriptors.)"""
    sock = connection.sock
    if sock is None:
        return False
    waiting = select.poll()
    waiting.register(sock, select.POLLIN)
    return not waiting.poll(0)


def _read(response: http.client.HTTPResponse, limits: Limits, timer: _Timer) -> Answer:
    status = response.status
    encoding = (response.getheader("content-encoding") or "").strip().lower()
    if encoding not in _ENCODINGS:
        return Unreadable(f"response in an encoding probes do not read: {encoding[:40]}",
                          status=status)
    body = _Body(limits.max_body, _ENCODINGS[encoding])
    try:
        while chunk := response.read1(CHUNK):
            if timer.passed:
                return Unreadable(_late(limits), status=status)
            if not body.take(chunk):
                return _too_large(limits, status)
        if not body.finish():
            return _too_large(limits, status)
    except zlib.error:
        return Unreadable(f"response body does not decode as {encoding}", status=status)
    if timer.passed:
        return Unreadable(_late(limits), status=status)
    return Response(status=status, body=bytes(body.data))


def _failed(error: BaseException, *, connected: bool) -> TransportError:
    """httpx's names for what went wrong, which reports have always shown."""
    if isinstance(error, TimeoutError):
        name = "ReadTimeout" if connected else "ConnectTimeout"
    elif isinstance(error, http.client.HTTPException):
        name = "RemoteProtocolError"
    elif isinstance(error, OSError):
        name = "ReadError" if connected else "ConnectError"
    else:
        name = type(error).__name__
    text = getattr(error, "strerror", None) or str(error)
    return TransportError(name + (f" ({text[:120]})" if text else ""))


def _late(limits: Limits) -> str:
    return f"no complete answer within {durations.format(limits.deadline)}"


def _too_large(limits: Limits, status: int) -> Unreadable:
    return Unreadable(f"response body over {sizes.format(limits.max_body)}", status=status)


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


@dataclass(order=True)
class _Timer:
    """One exchange's deadline, and the socket the watchdog shuts down when it passes."""

    at: float
    order: int
    sock: socket.socket | None = field(default=None, compare=False)
    expired: bool = field(default=False, compare=False)
    done: bool = field(default=False, compare=False)

    def left(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.expired or self.left() <= 0

    def arm(self, sock: socket.socket) -> None:
        self.sock = sock
        if self.expired:  # passed while connecting: end it now, not at the next read
            _shut(sock)


class _Watchdog:
    """The one thread that ends exchanges past their deadline, for the whole process: a
    thread per exchange cost more than the exchange itself."""

    def __init__(self) -> None:
        self._timers: list[_Timer] = []
        self._wake = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> _Timer:
        timer = _Timer(at=time.monotonic() + seconds, order=next(self._order))
        with self._wake:
            heapq.heappush(self._timers, timer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="probe-deadlines",
                                                daemon=True)
                self._thread.start()
            elif self._timers[0] is timer:
                self._wake.notify()  # sooner than what the watchdog sleeps until
        return timer

    def finish(self, timer: _Timer) -> bool:
        """The exchange is over: its socket is its own again (to keep or close). Whether the
        watchdog ended it first."""
        with self._wake:
            timer.done = True
            return timer.expired

    def _watch(self) -> None:
        while True:
            with self._wake:
                while self._timers and self._timers[0].done:
                    heapq.heappop(self._timers)
                if not self._timers:
                    self._wake.wait()
                    continue
                left = self._timers[0].left()
                if left > 0:
                    self._wake.wait(left)
                    continue
                timer = heapq.heappop(self._timers)
                timer.expired = True
                if timer.sock is not None:
                    # Under the lock: `finish` cannot hand the socket back meanwhile.
                    _shut(timer.sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, even under TLS: it ends a blocked read without touching
    # the TLS state another thread is using. Already closed: nothing left to end.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_watchdog = _Watchdog()


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[_Timer]:
    timer = _watchdog.start(seconds)
    try:
        yield timer
    finally:
        _watchdog.finish(timer)
