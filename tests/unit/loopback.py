"""An HTTP/1.1 server on a loopback port that answers with a test's handler function.

Unit tests of the probe sender talk to it over real sockets, as the sender talks to a cluster,
so they hold whatever machinery sends the probes. The handler sees each `Request` (method,
path, query, headers, body) and returns what to send back: a `Reply` (a body as bytes under a
Content-Length, or an iterator of chunks sent chunked, or under a Content-Length the test
declares), or `Raw` bytes written as they are. Either may hold its connection open without
finishing (a hang, a trickle) until the server closes.

Connections are kept alive between requests (the sender reuses them), counted as they are
accepted, and can be dropped while idle, as a server's keep-alive timeout would. Nothing
outlives `close`: held handlers are released, open connections shut, every thread joined. A
handler that raises (a bug in the test) is raised again by `close`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message  # looked up case-insensitively: headers.get("authorization")
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An HTTP answer. A bytes body goes under a Content-Length; an iterator's chunks go with
    chunked encoding unless `headers` declares a Content-Length. `hold` keeps the connection
    open after the chunks, the body unfinished, until the server closes: a trickle."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hold: bool = False

    @classmethod
    def json(cls, data: object, status: int = 200) -> Reply:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json"})


@dataclass(frozen=True)
class Raw:
    """Bytes written to the connection as they are (b"" for nothing), then the connection is
    closed, or held open until the server closes (`hold`): an endpoint that never answers."""

    data: bytes
    hold: bool = False


Handler = Callable[[Request], Reply | Raw]


class Server:
    """`handler` served on 127.0.0.1, a free port, from construction until `close`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []  # every request seen, in arrival order
        self.accepted = 0  # TCP connections accepted
        self._released = threading.Event()
        self._guard = threading.Lock()
        self._idle = threading.Condition(self._guard)  # notified when a request is answered
        self._open: dict[socket.socket, bool] = {}  # connection -> in the middle of a request
        self._errors: list[BaseException] = []
        self._http = _HTTPServer(self)
        self.url = f"http://{HOST}:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,),
                                        name="loopback-accept")
        self._thread.start()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def hold(self) -> None:
        """Block a handler until the server closes (an answer that never comes)."""
        self._released.wait()

    def pause(self, seconds: float) -> bool:
        """Wait `seconds` in a handler (a trickle's pace); True once the server is closing."""
        return self._released.wait(seconds)

    def drop_idle(self) -> int:
        """Close every connection waiting for its next request, as a server does when its
        keep-alive timeout passes; the number closed. Call it between rounds: it first waits
        for answers still being written (a client may read one before its thread is done)."""
        with self._idle:
            if not self._idle.wait_for(lambda: not any(self._open.values()), timeout=10.0):
                raise AssertionError("a connection is still answering: nothing is idle")
            idle = list(self._open)
        for conn in idle:
            _shut(conn)
        return len(idle)

    def close(self) -> None:
        self._released.set()
        self._http.shutdown()
        self._thread.join()
        with self._guard:
            still_open = list(self._open)
        for conn in still_open:  # a client that keeps its connection would keep its thread
            _shut(conn)
        self._http.server_close()  # joins every connection's thread
        if self._errors:
            raise self._errors[0]

    # Called from the server's threads.

    def _opened(self, conn: socket.socket) -> None:
        with self._guard:
            self.accepted += 1
            self._open[conn] = False

    def _busy(self, conn: socket.socket, busy: bool) -> None:
        with self._guard:
            if conn in self._open:
                self._open[conn] = busy
            self._idle.notify_all()

    def _closed(self, conn: socket.socket) -> None:
        with self._guard:
            self._open.pop(conn, None)
            self._idle.notify_all()

    def _received(self, request: Request) -> None:
        with self._guard:
            self.requests.append(request)

    def _failed(self, error: BaseException | None) -> None:
        # A client hanging up mid-answer is what limit tests provoke; anything else is a bug.
        if error is not None and not isinstance(error, ConnectionError):
            self._errors.append(error)


Serve = Callable[[Handler], Server]  # the `serve` fixture: a started server for a handler


def _shut(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile by its own thread
        conn.shutdown(socket.SHUT_RDWR)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # each connection's thread is joined by server_close
    block_on_close = True

    def __init__(self, owner: Server) -> None:
        self.owner = owner
        super().__init__((HOST, 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        self.owner._opened(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        self.owner._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.owner._failed(sys.exc_info()[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _HTTPServer

    def _serve(self) -> None:
        owner = self.server.owner
        owner._busy(self.connection, True)
        try:
            request = self._request()
            owner._received(request)
            answer = owner.handler(request)
            if isinstance(answer, Raw):
                self._raw(answer)
            else:
                self._reply(answer)
        finally:
            owner._busy(self.connection, False)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _request(self) -> Request:
        target = urlsplit(self.path)
        return Request(method=self.command, path=target.path,
                       query=parse_qs(target.query, keep_blank_values=True),
                       headers=self.headers, body=self._body())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                pass
            return bytes(body)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        declared = any(name.lower() == "content-length" for name in reply.headers)
        chunked = not isinstance(reply.body, bytes) and not declared
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes) and not declared:
            self.send_header("Content-Length", str(len(reply.body)))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in [reply.body] if isinstance(reply.body, bytes) else reply.body:
            if chunk:  # an empty chunk would end a chunked body
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if reply.hold:
            self._hold()
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _raw(self, raw: Raw) -> None:
        self.wfile.write(raw.data)
        if raw.hold:
            self._hold()
        self.close_connection = True

    def _hold(self) -> None:
        self.server.owner.hold()
        self.close_connection = True  # what was sent is unfinished: the connection cannot serve on

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test asserts on what it sees, not on an access log


@contextlib.contextmanager
def refusing() -> Iterator[str]:
    """The URL of a loopback port that refuses connections: bound (so nobody else takes it
    meanwhile) but not listening."""
    with socket.socket() as bound:
        bound.bind((HOST, 0))
        yield f"http://{HOST}:{bound.getsockname()[1]}"


async def no_pause(_seconds: float) -> None:
    """The pause between a probe's retries, in a test: none."""
