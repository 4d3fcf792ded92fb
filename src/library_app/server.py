"""HTTP for library_app: routes, status codes and JSON bodies.

Who may see what comes from `spaces`, who is calling from `tokens`; this module only maps their
answers to HTTP. It never logs requests: a request line can carry a token in its query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from library_app import http11, spaces
from library_app.faults import Faults, parse_faults
from library_app.tokens import Tokens

Body = dict[str, object]
Response = tuple[int, Body]

UNAUTHORIZED: Response = (401, {"error": "unauthorized"})
NOT_FOUND: Response = (404, {"error": "not found"})
SPACE_PREFIX = "/api/spaces/"
TRICKLE_BODY = 1024 * 1024  # `trickle` announces this much and never gets near it
TRICKLE_PAUSE = 0.5  # `trickle`: under any read timeout, so only a total deadline ends it


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


class LibraryServer(http11.Server):
    """The HTTP server plus the one piece of mutable state: how many /api/* requests so far."""

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.api_requests = 0  # counted on the server's one loop: no lock needed
        super().__init__(address, self._answer)

    def next_api_request_fails(self) -> bool:
        self.api_requests += 1
        return self.app.faults.fails_api_request(self.api_requests)

    async def _answer(self, request: http11.Request, reply: http11.Reply) -> None:
        url = urlsplit(request.target)
        if request.method == "GET":
            await self._get(url.path, url.query, request, reply)
        elif request.method == "POST" and url.path == "/api/search":
            await self._search(request, reply)
        else:
            await _send(reply, (405, {"error": "method not allowed"}),
                        with_body=request.method != "HEAD")

    async def _get(self, path: str, query: str, request: http11.Request,
                   reply: http11.Reply) -> None:
        faults, api = self.app.faults, path.startswith("/api/")  # faults touch /api/* only
        if api and self.next_api_request_fails():
            await _send(reply, (500, {"error": "injected failure"}))
        elif api and faults.hang:
            await reply.stopping.wait()  # `hang`: no answer at all, until the process stops
            reply.close = True
        elif api and (faults.huge_body_mib or faults.trickle):
            await _stream_injected_body(faults, reply)
        else:
            await _send(reply, route(self.app, path, query, request.headers.get("authorization")))

    async def _search(self, request: http11.Request, reply: http11.Reply) -> None:
        """`POST /api/search {"q": ...}`: the same search, for clients that send a body."""
        needle = _json_field(request.body, "q")
        if needle is None:
            await _send(reply, (400, {"error": 'expected a JSON body {"q": "..."}'}))
            return
        authorization = request.headers.get("authorization")
        await _send(reply, route(self.app, "/api/search", urlencode({"q": needle}),
                                 authorization))


def make_server(host: str, port: int, version: str, env: Mapping[str, str]) -> LibraryServer:
    """A bound, not yet serving, server; port 0 picks a free port (see `server_address`)."""
    return LibraryServer((host, port), App.from_env(version, env))


async def _send(reply: http11.Reply, response: Response, *, with_body: bool = True) -> None:
    status, body = response
    fields = {"Content-Type": "application/json", "Cache-Control": "no-store"}  # per caller
    if status == 401:
        fields["WWW-Authenticate"] = "Bearer"
    if status == 405:
        fields["Allow"] = "GET, POST"
    await reply.send(status, fields, json.dumps(body).encode("utf-8"), with_body=with_body)


async def _stream_injected_body(faults: Faults, reply: http11.Reply) -> None:
    """`huge-body` and `trickle`: streamed until the client hangs up, never held whole."""
    size = faults.huge_body_mib * 1024 * 1024 or TRICKLE_BODY
    reply.close = True
    await reply.start(200, {"Content-Type": "application/json", "Content-Length": str(size)})
    chunk = b" " * (1 if faults.trickle else 64 * 1024)
    sent = 0
    while sent < size and not reply.stopping.is_set():
        await reply.write(chunk)  # a client that hangs up ends this with ConnectionError
        sent += len(chunk)
        if faults.trickle:
            with contextlib.suppress(TimeoutError):  # the pause, cut short when stopping
                await asyncio.wait_for(reply.stopping.wait(), TRICKLE_PAUSE)


def _json_field(body: bytes | None, name: str) -> str | None:
    if not body:
        return None  # none, or one over the limit left unread
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    value = parsed.get(name) if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None
