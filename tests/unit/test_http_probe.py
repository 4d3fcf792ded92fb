"""What an endpoint sends, byte for byte, and what one probe exchange makes of it: how an answer
is framed (a length, chunks, the connection's end), when its connection is kept for the next
probe, and what is no HTTP answer at all. The endpoints are loopback servers
(tests/unit/loopback.py); `Raw` answers are written exactly as given.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.unit import loopback
from tests.unit.loopback import Raw, Reply
from wavegate.decide.verdict import Response, TransportError
from wavegate.engine import http_probe

LIMITS = http_probe.Limits(deadline=5.0, max_body=1024 * 1024)


@pytest.fixture
def pool_for() -> Iterator[list[http_probe.Pool]]:
    pools: list[http_probe.Pool] = []
    yield pools
    for pool in pools:
        pool.close()


def exchanges(server: loopback.Server, pools: list[http_probe.Pool], count: int = 1,
              **headers: str) -> list[http_probe.Answer]:
    """`count` probes one after another through one cluster's pool."""
    pool = http_probe.Pool(server.url, size=4, tls=ssl.create_default_context())
    pools.append(pool)
    return [http_probe.run(pool.send("GET", "/api/spaces", headers=headers, limits=LIMITS))
            for _ in range(count)]


def test_a_chunked_answer_is_read_whole_and_its_connection_kept(
        serve: loopback.Serve, pool_for: list[http_probe.Pool]) -> None:
    server = serve(lambda _: Reply(200, iter([b'{"spaces": ', b'["space-eng"]', b"}"])))
    answers = exchanges(server, pool_for, count=2)
    assert answers == [Response(status=200, body=b'{"spaces": ["space-eng"]}')] * 2
    assert server.accepted == 1


def test_an_answer_ended_by_closing_is_read_to_the_end_and_the_next_probe_reconnects(
        serve: loopback.Serve, pool_for: list[http_probe.Pool]) -> None:
    server = serve(lambda _: Raw(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"))
    assert exchanges(server, pool_for, count=2) == [Response(status=200, body=b"hello")] * 2
    assert server.accepted == 2


def test_a_server_saying_it_closes_gets_a_new_connection_for_the_next_probe(
        serve: loopback.Serve, pool_for: list[http_probe.Pool]) -> None:
    server = serve(lambda _: Reply(200, b"{}", {"Connection": "close"}))
    assert exchanges(server, pool_for, count=2) == [Response(status=200, body=b"{}")] * 2
    assert server.accepted == 2


def test_an_interim_answer_is_skipped_for_the_final_one(
        serve: loopback.Serve, pool_for: list[http_probe.Pool]) -> None:
    server = serve(lambda _: Raw(b"HTTP/1.1 100 Continue\r\n\r\n"
                                 b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"))
    assert exchanges(server, pool_for) == [Response(status=403, body=b"denied")]


@pytest.mark.parametrize(("sent", "detail"), [
    pytest.param(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x status line", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the body's end",
                 id="cut-short"),
    pytest.param(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "without a colon", id="bad-header"),
    pytest.param(b"", "closed connection without response", id="closed"),
])
def test_what_is_no_http_answer_is_a_protocol_error_naming_why(
        serve: loopback.Serve, pool_for: list[http_probe.Pool], sent: bytes,
        detail: str) -> None:
    [answer] = exchanges(serve(lambda _: Raw(sent)), pool_for)
    assert isinstance(answer, TransportError)
    assert answer.reason.startswith("RemoteProtocolError (")
    assert detail in answer.reason


def test_a_header_with_a_line_break_is_never_sent_and_never_echoed(
        serve: loopback.Serve, pool_for: list[http_probe.Pool]) -> None:
    server = serve(lambda _: Reply.json({}))
    [answer] = exchanges(server, pool_for, Authorization="Bearer s3cret\r\nX-Admin: yes")
    assert isinstance(answer, TransportError)
    assert answer.reason.startswith("LocalProtocolError (")
    assert "s3cret" not in answer.reason
    assert server.requests == []


# --- over TLS ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl makes the test certificate, and this machine has none")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[str, str]) -> Iterator[str]:
    """An HTTPS endpoint on loopback answering every request with a small JSON body."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as conn:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                    head += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept it is blocked in
    listener.close()
    thread.join(timeout=5)


def test_an_https_endpoint_is_asked_over_tls_with_its_certificate_verified(
        tls_server: str, certificate: tuple[str, str]) -> None:
    trusting = ssl.create_default_context(cafile=certificate[0])
    pools = [http_probe.Pool(tls_server, size=1, tls=context)
             for context in (trusting, ssl.create_default_context())]
    try:
        answers = [http_probe.run(pool.send("GET", "/version", headers={}, limits=LIMITS))
                   for pool in pools]
    finally:
        for pool in pools:
            pool.close()
    assert answers[0] == Response(status=200, body=b"{}")
    assert isinstance(answers[1], TransportError)  # a certificate nobody vouches for
    assert answers[1].reason.startswith("ConnectError (")
    assert "CERTIFICATE_VERIFY_FAILED" in answers[1].reason
