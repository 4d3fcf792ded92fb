"""The ingress of a local cluster: one HTTP port on 127.0.0.1 in front of the ready pods.

Owns the reverse proxy (method, path, headers and body forwarded with `http.client`; the
pod's status and headers returned, then its body streamed in chunks of at most `CHUNK` bytes),
round-robin over the backends it is given, and the count of requests in flight per backend,
which lets a stopping pod drain before its SIGTERM. A request stays in flight until its body
has been passed on, and the ingress never holds more than a chunk of it: its memory stays
bounded whatever a pod sends. A body of known length keeps its Content-Length; one that is
not (a chunked answer) is sent on chunked, so clients keep their connection either way.

Must not decide which pods are backends: the agent calls `set_backends` with the ready,
non-terminating pods of the ingress Service. Answers of its own:
- 503 `{"error": "no ready endpoints"}` when there is no backend;
- 502 `{"error": "bad gateway", ...}` when a pod fails mid-request. A connection refused
  before anything was sent is tried on the next backend first (nothing reached the pod, so
  retrying is safe for any method): a pod that died since the last probe costs no request.
Once the status line is on its way there is no answer left to give: a pod that fails in the
middle of its body, or a client that hangs up, ends both connections (the client sees a body
cut short, the pod a closed socket, so it stops sending).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Ingress"]

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
NO_BODY_STATUSES = frozenset({204, 304})
CHUNK = 64 * 1024  # the most of a pod's body the ingress holds at once, per request


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: Iterable[bytes]  # read as it is sent, once
    length: int | None  # None: not known before the end (sent chunked)


class Ingress:
    """A reverse proxy on `127.0.0.1:port` (0 picks a free port); `url` says where it is."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._backends: tuple[str, ...] = ()
        self._detail = ""
        self._next = 0
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._server = _Server((host, port), _Handler)
        self._server.ingress = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="ingress",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def set_backends(self, addresses: Sequence[str], *, detail: str = "") -> None:
        """Route to these `host:port`s from now on; `detail` explains an empty list in 503s."""
        with self._lock:
            if tuple(addresses) != self._backends:
                log.info("ingress backends: %s", ", ".join(addresses) or "none")
            self._backends = tuple(addresses)
            self._detail = detail

    def backends(self) -> tuple[str, ...]:
        with self._lock:
            return self._backends

    def is_drained(self, address: str) -> bool:
        with self._lock:
            return address not in self._backends and self._in_flight[address] == 0

    def _acquire(self, tried: set[str]) -> str | None:
        """The next backend round-robin, not yet tried, counted as in flight; None if none."""
        with self._lock:
            candidates = [b for b in self._backends if b not in tried]
            if not candidates:
                return None
            address = candidates[self._next % len(candidates)]
            self._next += 1
            self._in_flight[address] += 1
            return address

    def _release(self, address: str) -> None:
        with self._lock:
            self._in_flight[address] -= 1
            if self._in_flight[address] <= 0:
                del self._in_flight[address]

    def _no_backend_detail(self) -> str:
        with self._lock:
            return self._detail

    @contextlib.contextmanager
    def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> Iterator[_Answer]:
        """The answer to pass on, its body read from the pod while the caller sends it."""
        tried: set[str] = set()
        refused: list[str] = []
        while (address := self._acquire(tried)) is not None:
            tried.add(address)
            try:
                with self._forward_to(address, method, path, headers, body) as answer:
                    if answer is not None:
                        yield answer
                        return
            finally:
                self._release(address)  # only once the body is passed on: drains wait for it
            refused.append(address)
        if refused:
            yield _json_answer(
                502,
                {"error": "bad gateway", "detail": "connection refused by " + ", ".join(refused)},
            )
            return
        payload: dict[str, str] = {"error": "no ready endpoints"}
        if detail := self._no_backend_detail():
            payload["detail"] = detail
        yield _json_answer(503, payload)

    @contextlib.contextmanager
    def _forward_to(
        self,
        address: str,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> Iterator[_Answer | None]:
        """The pod's answer; None when it refused the connection (nothing was sent)."""
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        try:
            yield _exchange(conn, address, method, path, headers, body)
        finally:
            conn.close()  # with a body left unread, this is what tells the pod to stop


def _exchange(
    conn: http.client.HTTPConnection,
    address: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
) -> _Answer | None:
    """Send the request and read the pod's status and headers; the body is left to stream."""
    try:
        conn.connect()
    except OSError:
        return None
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        return _json_answer(502, {"error": "bad gateway", "detail": f"{address}: {e}"})
    kept = [(k, v) for k, v in response.getheaders() if _forwardable(k, method)]
    length = None if response.chunked else response.length
    return _Answer(response.status, response.reason, kept, _chunks(response), length)


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body as it arrives (read1: no waiting for a full chunk when the pod trickles)."""
    while chunk := response.read1(CHUNK):
        yield chunk
    if response.length:  # the pod closed before the length it announced
        raise http.client.IncompleteRead(b"", response.length)


def _forwardable(name: str, method: str) -> bool:
    lower = name.lower()
    if lower in HOP_BY_HOP:
        return False
    # We set Content-Length ourselves, except for HEAD where the pod's value is the answer.
    return lower != "content-length" or method == "HEAD"


def _json_answer(status: int, payload: dict[str, str]) -> _Answer:
    body = json.dumps(payload).encode()
    return _Answer(status, "", [("Content-Type", "application/json")], (body,), len(body))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5: a round's probes open their connections at once, and past five
    # the kernel drops them and retries each a second later (a check round took 1 s, not 0.1).
    request_queue_size = 1024
    ingress: Ingress


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive to clients: every answer has a length or chunks
    server_version = "wavegate-localfleet"
    sys_version = ""
    timeout = 60  # a stalled client must not hold a thread forever
    # The status and headers go out in one write and the body in the next; with Nagle on, the
    # body waits for the client's delayed ACK of the headers: 40 ms on every kept-alive request
    # (a check round of a dozen probes, four at a time, took 0.18 s instead of 0.02 s).
    disable_nagle_algorithm = True

    def _proxy(self) -> None:
        body = self._read_body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        if self.headers.get("Host") is None:
            headers.append(("Host", self.server.ingress.url.removeprefix("http://")))
        headers.append(("X-Forwarded-For", self.client_address[0]))
        headers.append(("X-Forwarded-Proto", "http"))
        with self.server.ingress.forward(self.command, self.path, headers, body) as answer:
            self._send(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _proxy

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status, answer.reason or None)
        for name, value in answer.headers:
            self.send_header(name, value)
        if self.command == "HEAD" or answer.status in NO_BODY_STATUSES:
            self.end_headers()
            return
        chunked = answer.length is None and self.request_version != "HTTP/1.0"
        if answer.length is not None:
            self.send_header("Content-Length", str(answer.length))
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True  # an HTTP/1.0 client reads to the end of the stream
        self.end_headers()
        try:
            self._stream(answer.body, chunked=chunked)
        except (OSError, http.client.HTTPException):
            # The pod failed mid-body or the client hung up: the status is sent, so the only
            # way left to say the body is incomplete is to end the connection.
            self.close_connection = True

    def _stream(self, body: Iterable[bytes], *, chunked: bool) -> None:
        for data in body:
            if chunked:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        # The base class adds its own Server and Date; the pod's come through instead.
        self.log_request(code)
        self.send_response_only(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines can carry tokens in a query, and logs must not."""
