"""A small HTTP/1.1 server: every connection a coroutine on one event loop, kept alive.

library_app served with http.server's ThreadingHTTPServer: a thread per connection. A checker
probing a hundred clusters behind one front door holds hundreds of connections open at once,
and hundreds of threads taking turns at the interpreter lock cost more CPU than the answers:
the probes of the fleet-scale bench's 1,000 clusters took its two servers 16.8 s of CPU that
way, and 3.3 to 4.0 s on one loop each.

This serves what library_app needs and no more: requests framed by Content-Length (a chunked
request body is refused with 501), answered in order, keep-alive unless the client or the
answer says close, no TLS. `Server` has the lifecycle of a `socketserver` server (bound when
built, `serve_forever` in a thread, `shutdown` and `server_close` from another), so the
process and the tests drive it as they drove the old one. Routing is the caller's `Handler`.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

HEAD_LIMIT = 64 * 1024  # request line and headers; more is refused with 431
MAX_BODY = 64 * 1024  # a request body past this is not read: the handler sees `body=None`
IDLE_TIMEOUT = 30.0  # a client that sends or reads nothing must not hold a connection
BACKLOG = 1024  # a burst of hundreds of connections must not see dropped SYNs (a 1 s retry)
SERVER_NAME = "library_app"
SHUTDOWN_GRACE = 2.0  # seconds for open connections to end once the server stops


class BadRequest(Exception):
    """The bytes are not an HTTP/1.x request this server reads."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: Mapping[str, str]  # names lowercased; a repeated name's values joined by ", "
    body: bytes | None  # None: a declared body over MAX_BODY, left unread

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.body is None:
            return False  # its unread body would be taken for the next request
        return "keep-alive" in connection if self.version == "HTTP/1.0" \
            else "close" not in connection


class Reply:
    """How a handler answers one request: `send` a whole answer, or `start` one and `write`
    its body as it goes. `stopping` is set when the server shuts down."""

    def __init__(self, writer: asyncio.StreamWriter, stopping: asyncio.Event) -> None:
        self._writer, self.stopping = writer, stopping
        self.close = False  # the connection ends after this answer

    async def send(self, status: int, fields: Mapping[str, str], body: bytes, *,
                   with_body: bool = True) -> None:
        head = _head(status, {**fields, "Content-Length": str(len(body))}, close=self.close)
        await self.write(head + body if with_body else head)

    async def start(self, status: int, fields: Mapping[str, str]) -> None:
        await self.write(_head(status, fields, close=self.close))

    async def write(self, data: bytes) -> None:
        """Send `data`; a client that stops reading for IDLE_TIMEOUT loses its connection."""
        if self._writer.is_closing():  # the client hung up: a streamed answer ends here
            raise ConnectionResetError("the client closed the connection")
        self._writer.write(data)
        if self._writer.transport.get_write_buffer_size():  # else all of it went out at once
            async with asyncio.timeout(IDLE_TIMEOUT):
                await self._writer.drain()


Handler = Callable[[Request, Reply], Awaitable[None]]


def parse_head(raw: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Method, target, version and headers of a request head (ending in CRLF CRLF)."""
    request_line, *lines = raw.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise BadRequest(HTTPStatus.BAD_REQUEST)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():  # no folded or spaced names
            raise BadRequest(HTTPStatus.BAD_REQUEST)
        name, value = name.lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return method, target, version, fields


def _body_length(fields: Mapping[str, str]) -> int:
    if "transfer-encoding" in fields:
        raise BadRequest(HTTPStatus.NOT_IMPLEMENTED)
    text = fields.get("content-length", "0")
    if not text.isdigit():
        raise BadRequest(HTTPStatus.BAD_REQUEST)
    return int(text)


def _head(status: int, fields: Mapping[str, str], *, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_phrase(status)}", f"Server: {SERVER_NAME}",
             f"Date: {_date()}", *(f"{name}: {value}" for name, value in fields.items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


_dates: dict[int, str] = {}


def _date() -> str:
    """The Date header, formatted once a second rather than once an answer."""
    second = int(time.time())
    if second not in _dates:
        _dates.clear()
        _dates[second] = email.utils.formatdate(second, usegmt=True)
    return _dates[second]


class Server:
    """Bound to `address` when built (port 0: any free port, see `server_address`); serves
    in the thread that calls `serve_forever` until another calls `shutdown`."""

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._socket = socket.create_server(address, family=family, backlog=BACKLOG)
        self.server_address = self._socket.getsockname()
        self.accepted = 0  # connections accepted, for tests that count reuse
        self._handler = handler
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._shut = False
        self._served = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `shutdown` (`poll_interval`: socketserver's, nothing to poll here)."""
        with self._guard:
            if self._shut:
                return
            self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()
            self._served.set()

    def shutdown(self) -> None:
        """Stop serving and wait until `serve_forever` has returned (if it ever started)."""
        with self._guard:
            self._shut = True
            loop, stopping = self._loop, self._stopping
        if loop is None:
            return  # never served (or about to start, and it will see `_shut`)
        if stopping is not None:  # else `_serve` has yet to start, and it will see `_shut`
            loop.call_soon_threadsafe(stopping.set)
        self._served.wait()

    def server_close(self) -> None:
        self._socket.close()

    async def _serve(self) -> None:
        stopping, writers = asyncio.Event(), set[asyncio.StreamWriter]()
        with self._guard:
            self._stopping = stopping
            if self._shut:
                stopping.set()

        def connected(reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> Awaitable[None]:
            # Not a coroutine function: the writer is known from the moment of accepting,
            # so a connection whose coroutine never got to start is still closed at the end.
            self.accepted += 1
            writers.add(writer)
            return self._connection(reader, writer, stopping, writers)

        server = await asyncio.start_server(connected, sock=self._socket, limit=HEAD_LIMIT,
                                            backlog=BACKLOG)
        await stopping.wait()
        # Stop accepting, but close the server only once every connection has ended: asyncio
        # (3.11) sets an accepted connection up in a task of its own, and one set up after
        # the server closed fails an assertion and leaves its socket open.
        asyncio.get_running_loop().remove_reader(self._socket.fileno())
        await _end_connections(writers)
        server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          stopping: asyncio.Event, writers: set[asyncio.StreamWriter]) -> None:
        try:
            while await self._one(reader, writer, stopping):
                pass
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or went quiet
        except Exception as error:  # a handler's bug ends its connection, never the server
            print(f"{SERVER_NAME}: error answering a request: {type(error).__name__}",
                  file=sys.stderr, flush=True)
        finally:
            writers.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   stopping: asyncio.Event) -> bool:
        """Read and answer one request; whether the connection carries another."""
        reply = Reply(writer, stopping)
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                request = await _read_request(reader)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise
            return False  # closed between requests: the usual end of a kept connection
        except BadRequest as error:
            reply.close = True
            await reply.send(error.status, {"Content-Type": "application/json"},
                             b'{"error": "%s"}' % error.status.phrase.lower().encode())
            return False
        reply.close = not request.keep_alive
        await self._handler(request, reply)
        return not reply.close


async def _end_connections(writers: set[asyncio.StreamWriter]) -> None:
    """Close every connection and wait for every task to end (a connection being set up is a
    task until it becomes a connection): a closed connection ends its read, a `hang` or
    `trickle` answer sees `stopping`. Cancelling them instead would lose a connection being
    set up, and Python 3.11 logs every cancelled connection task as an error. Whatever is
    still running after SHUTDOWN_GRACE is cancelled."""
    current = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE
    while others := [task for task in asyncio.all_tasks() if task is not current]:
        for writer in writers:
            writer.close()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            for task in others:
                task.cancel()
        await asyncio.wait(others, timeout=max(left, 0.1))
    await asyncio.sleep(0)  # the closed transports' last callbacks, which close their sockets


async def _read_request(reader: asyncio.StreamReader) -> Request:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    method, target, version, fields = parse_head(raw)
    length = _body_length(fields)
    body = await reader.readexactly(length) if length <= MAX_BODY else None
    return Request(method, target, version, fields, body)
