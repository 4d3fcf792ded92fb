"""library_app's HTTP/1.1 server, byte for byte: keep-alive, framing, refusals, shutdown.

Each test serves a real `LibraryServer` on 127.0.0.1:0 in a thread and talks to it over a raw
socket, so what is asserted is what any client sees on the wire.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from library_app import http11
from library_app.server import LibraryServer, make_server
from tests.waits import eventually

TOKEN = "alice-secret-token"


@pytest.fixture
def served() -> Iterator[list[LibraryServer]]:
    servers: list[LibraryServer] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def serve(servers: list[LibraryServer], **env: str) -> tuple[str, int]:
    server = make_server("127.0.0.1", 0, "1.0.0", {"LIBRARY_TOKEN_ALICE": TOKEN, **env})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return server.server_address[:2]


def exchange(connection: socket.socket, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send `request`; the status line, headers and Content-Length body of the answer."""
    connection.sendall(request)
    stream = connection.makefile("rb")
    status = stream.readline().decode("latin-1").rstrip("\r\n")
    fields = {}
    while (line := stream.readline().decode("latin-1").rstrip("\r\n")):
        name, _, value = line.partition(":")
        fields[name.lower()] = value.strip()
    body = stream.read(int(fields.get("content-length", "0")))
    return status, fields, body


def closed_by_server(connection: socket.socket) -> bool:
    connection.settimeout(5)
    return connection.recv(1) == b""


def test_one_connection_carries_many_requests(served: list[LibraryServer]) -> None:
    with socket.create_connection(serve(served)) as connection:
        for _ in range(3):
            status, fields, body = exchange(connection, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
            assert body == b'{"version": "1.0.0"}'
            assert "connection" not in fields
    assert served[0].accepted == 1


def test_an_authorized_read_answers_with_the_space(served: list[LibraryServer]) -> None:
    with socket.create_connection(serve(served)) as connection:
        status, fields, body = exchange(connection, (
            f"GET /api/spaces/space-eng HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            "\r\n").encode())
    assert status == "HTTP/1.1 200 OK" and b'"space-eng"' in body
    assert fields["cache-control"] == "no-store" and fields["server"] == "library_app"


def test_connection_close_and_http_1_0_end_the_connection(served: list[LibraryServer]) -> None:
    address = serve(served)
    for request in (b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n",
                    b"GET /version HTTP/1.0\r\n\r\n"):
        with socket.create_connection(address) as connection:
            status, fields, _ = exchange(connection, request)
            assert status.endswith("200 OK") and fields["connection"] == "close"
            assert closed_by_server(connection)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"NONSENSE\r\n\r\n", "400 Bad Request"),
    (b"GET /version HTTP/2.0\r\n\r\n", "505 HTTP Version Not Supported"),
    (b"GET /version HTTP/1.1\r\nno colon here\r\n\r\n", "400 Bad Request"),
    (b"POST /api/search HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "501 Not Implemented"),
    (b"GET /version HTTP/1.1\r\nX: " + b"a" * (http11.HEAD_LIMIT + 10) + b"\r\n\r\n",
     "431 Request Header Fields Too Large"),
])
def test_a_request_it_cannot_read_is_refused_and_the_connection_closed(
        served: list[LibraryServer], request_bytes: bytes, status: str) -> None:
    with socket.create_connection(serve(served)) as connection:
        answer, fields, _ = exchange(connection, request_bytes)
        assert answer == f"HTTP/1.1 {status}" and fields["connection"] == "close"
        assert closed_by_server(connection)


def test_a_search_body_over_the_limit_is_refused_unread(served: list[LibraryServer]) -> None:
    with socket.create_connection(serve(served)) as connection:
        status, fields, _ = exchange(connection, (
            f"POST /api/search HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {http11.MAX_BODY + 1}\r\n\r\n").encode())
        assert status == "HTTP/1.1 400 Bad Request" and fields["connection"] == "close"
        assert closed_by_server(connection)


def test_head_is_refused_without_a_body(served: list[LibraryServer]) -> None:
    with socket.create_connection(serve(served)) as connection:
        connection.sendall(b"HEAD /version HTTP/1.1\r\n\r\nGET /version HTTP/1.1\r\n\r\n")
        connection.settimeout(5)
        received = b""
        while received.count(b"HTTP/1.1") < 2 or not received.endswith(b"}"):
            received += connection.recv(4096)
    head, second = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 405") and b"Allow: GET, POST" in head
    assert second.startswith(b"HTTP/1.1 200 OK")  # the HEAD answer carried no body


def test_shutdown_ends_a_hanging_answer_at_once(served: list[LibraryServer]) -> None:
    address = serve(served, LIBRARY_FAIL="hang")
    with socket.create_connection(address) as connection:
        connection.sendall(f"GET /api/spaces HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                           "\r\n".encode())
        server = served[-1]
        eventually(lambda: server.api_requests or None, every=0.01)  # it reached the handler
        started = time.monotonic()
        served.pop().shutdown()
        assert closed_by_server(connection)
        assert time.monotonic() - started < 2


def test_shutdown_before_serving_returns() -> None:
    server = make_server("127.0.0.1", 0, "1.0.0", {})
    server.shutdown()
    server.serve_forever()  # returns at once: it was shut down first
    server.server_close()


def test_a_client_that_sends_nothing_is_dropped_after_the_idle_timeout(
        served: list[LibraryServer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "IDLE_TIMEOUT", 0.2)
    with socket.create_connection(serve(served)) as connection:
        assert closed_by_server(connection)


def test_a_client_that_stops_reading_is_dropped_after_the_idle_timeout(
        served: list[LibraryServer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "IDLE_TIMEOUT", 0.2)
    with socket.create_connection(serve(served, LIBRARY_FAIL="huge-body")) as connection:
        connection.sendall(f"GET /api/spaces HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                           "\r\n".encode())
        server = served[-1]
        eventually(lambda: server.api_requests or None, every=0.01)
        time.sleep(0.5)  # not reading, past the idle timeout: what this test is about
        connection.settimeout(5)
        received = 0
        while chunk := connection.recv(1 << 20):
            received += len(chunk)
    assert received < 256 * 1024 * 1024  # the server gave up, far short of the whole body


def test_shutdown_amid_new_connections_leaves_none_open() -> None:
    """Connections accepted as the server stops, some whose coroutines never got to start,
    are closed with it: nothing is left for the garbage collector to find on a closed loop
    (pytest fails the test on such an unraisable warning)."""
    for _ in range(20):
        server = make_server("127.0.0.1", 0, "1.0.0", {})
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        clients = [socket.create_connection(server.server_address[:2]) for _ in range(30)]
        server.shutdown()
        server.server_close()
        serving.join()
        for client in clients:
            client.close()
        gc.collect()


def test_a_streamed_answer_ends_when_the_client_hangs_up(
        served: list[LibraryServer], caplog: pytest.LogCaptureFixture) -> None:
    address = serve(served, LIBRARY_FAIL="huge-body")
    with socket.create_connection(address) as connection:
        connection.sendall(f"GET /api/spaces HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                           "\r\n".encode())
        assert connection.recv(1 << 16)  # the answer is streaming
    # The server is free again, and did not go on writing into the closed connection
    # (asyncio warns "socket.send() raised exception." for each such write).
    with socket.create_connection(address) as connection:
        connection.settimeout(5)
        status, _, _ = exchange(connection, b"GET /version HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert not [record for record in caplog.records if record.name == "asyncio"]
