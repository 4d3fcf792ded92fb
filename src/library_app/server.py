"""HTTP for library_app: routes, status codes and JSON bodies.

Who may see what comes from `spaces`, who is calling from `tokens`; this module only maps their
answers to HTTP. It never logs requests: a request line can carry a token in its query.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from library_app import spaces
from library_app.faults import Faults, parse_faults
from library_app.tokens import Tokens

Body = dict[str, object]
Response = tuple[int, Body]

UNAUTHORIZED: Response = (401, {"error": "unauthorized"})
NOT_FOUND: Response = (404, {"error": "not found"})
SPACE_PREFIX = "/api/spaces/"
TRICKLE_BODY = 1024 * 1024  # `trickle` announces this much and never gets near it
TRICKLE_PAUSE = 0.5  # `trickle`: under any read timeout, so only a total deadline ends it
MAX_REQUEST_BODY = 64 * 1024  # a search body is a few bytes; more is refused unread


@dataclass(frozen=True)
class App:
    """Everything a request needs, fixed at startup."""

    version: str
    all_spaces: tuple[spaces.Space, ...]
    tokens: Tokens
    policy: spaces.Policy
    faults: Faults

    @classmethod
    def from_env(cls, version: str, env: Mapping[str, str]) -> App:
        return cls(
            version=version,
            all_spaces=spaces.load_spaces(env),
            tokens=Tokens.from_env(env),
            policy=spaces.Policy.from_env(version, env),
            faults=parse_faults(env.get("LIBRARY_FAIL", "")),
        )


def route(app: App, path: str, query: str, authorization: str | None) -> Response:
    """The response to `GET path?query`, apart from injected 5xx (a per-process count)."""
    if path == "/healthz":
        return (200, {"status": "ok"}) if app.faults.ready() else (503, {"status": "starting"})
    if path == "/version":
        return 200, {"version": app.version}
    if not path.startswith("/api/"):
        return NOT_FOUND
    # Authenticate before routing so anonymous callers learn nothing about the API's shape.
    user = app.tokens.user_for(authorization)
    return UNAUTHORIZED if user is None else _api(app, user, path, query)


def _api(app: App, user: str, path: str, query: str) -> Response:
    if path == "/api/spaces":
        return 200, _space_list(spaces.listable(app.all_spaces, user, app.policy))
    if path == "/api/search":
        needle = parse_qs(query).get("q", [""])[0]
        return 200, _space_list(spaces.search(app.all_spaces, needle, user, app.policy))
    space_id = unquote(path.removeprefix(SPACE_PREFIX))
    if not path.startswith(SPACE_PREFIX) or not space_id or "/" in space_id:
        return NOT_FOUND
    space = spaces.readable(app.all_spaces, space_id, user, app.policy)
    return NOT_FOUND if space is None else (200, space.to_json())


def _space_list(found: list[spaces.Space]) -> Body:
    return {"spaces": [s.to_json() for s in found]}


class LibraryServer(ThreadingHTTPServer):
    """The HTTP server plus the one piece of mutable state: how many /api/* requests so far."""

    # The default backlog of 5 drops connections when a checker sends a burst of probes in
    # parallel; the dropped SYN is retried by the kernel a second later, which looks like a hang.
    # One server behind a shared front door (the fleet-scale bench: a hundred clusters' rounds
    # at once) takes hundreds of connections in a burst; the kernel caps this at somaxconn.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._api_requests = 0
        self.closing = threading.Event()  # ends trickling answers when the process stops
        super().__init__(address, _Handler)

    def server_close(self) -> None:
        self.closing.set()
        super().server_close()

    def next_api_request_fails(self) -> bool:
        with self._lock:
            self._api_requests += 1
            number = self._api_requests
        return self.app.faults.fails_api_request(number)


def make_server(host: str, port: int, version: str, env: Mapping[str, str]) -> LibraryServer:
    """A bound, not yet serving, server; port 0 picks a free port (see `server_address`)."""
    return LibraryServer((host, port), App.from_env(version, env))


class _Handler(BaseHTTPRequestHandler):
    server: LibraryServer
    server_version = "library_app"
    sys_version = ""
    timeout = 30  # a stalled client must not hold a thread forever
    # Keep-alive: a checker sends many probes per round and a round every few seconds, and a
    # new connection per probe costs more than the probe (every answer has a Content-Length).
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes; with Nagle on, the body would wait for
    # the client's delayed ACK of the headers (40 ms) on every kept-alive request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/api/") and self.server.next_api_request_fails():
            self._send(500, {"error": "injected failure"})
            return
        if url.path.startswith("/api/") and self.server.app.faults.hang:
            self.server.closing.wait()  # `hang`: no answer at all, until the process stops
            self.close_connection = True
            return
        if url.path.startswith("/api/") and self._send_injected_body():
            return
        authorization = self.headers.get("Authorization")
        self._send(*route(self.server.app, url.path, url.query, authorization))

    def _send_injected_body(self) -> bool:
        """`huge-body` and `trickle`: streamed until the client hangs up, never held whole."""
        faults = self.server.app.faults
        if not (faults.huge_body_mib or faults.trickle):
            return False
        size = faults.huge_body_mib * 1024 * 1024 or TRICKLE_BODY
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b" " * (1 if faults.trickle else 64 * 1024)
        sent = 0
        try:
            while sent < size and not self.server.closing.is_set():
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if faults.trickle:
                    self.server.closing.wait(TRICKLE_PAUSE)
        except OSError:
            pass  # the client hung up: what a bounded client does
        self.close_connection = True
        return True

    def do_POST(self) -> None:
        """`POST /api/search {"q": ...}`: the same search, for clients that send a body."""
        url = urlsplit(self.path)
        if url.path != "/api/search":
            self._method_not_allowed()
            return
        needle = self._json_field("q")
        if needle is None:
            self._send(400, {"error": 'expected a JSON body {"q": "..."}'})
            return
        authorization = self.headers.get("Authorization")
        self._send(*route(self.server.app, url.path, urlencode({"q": needle}), authorization))

    def _json_field(self, name: str) -> str | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_REQUEST_BODY:
                return None
            body = json.loads(self.rfile.read(length))
        except ValueError:  # a length or a body that is not what it says
            return None
        value = body.get(name) if isinstance(body, dict) else None
        return value if isinstance(value, str) else None

    def _method_not_allowed(self) -> None:
        self._send(405, {"error": "method not allowed"})

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _method_not_allowed

    def do_HEAD(self) -> None:
        self._send(405, {"error": "method not allowed"}, with_body=False)

    def _send(self, status: int, body: Body, *, with_body: bool = True) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")  # answers depend on who asked
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status == 405:
            self.send_header("Allow", "GET, POST")
        self.end_headers()
        if with_body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines can carry tokens, and per-request logs are not wanted."""
