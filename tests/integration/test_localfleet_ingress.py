"""The local fleet's ingress streams a pod's answer: real sockets on loopback, a pod in-process.

What a client would notice: the start of a large body arrives before the pod has finished
sending it, a chunked answer keeps the connection, a client that hangs up stops the pod
sending, and a pod that dies mid-body leaves a body cut short rather than a client waiting.
(The ingress's routing, errors and draining are tested in test_localfleet_agent.py.)
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from wavegate.localfleet.ingress import Ingress

pytestmark = pytest.mark.integration

KIB = 1024
WAIT = 10.0  # only how long a broken ingress gets before the test fails, never a pacing


class Pod(BaseHTTPRequestHandler):
    """Answers by path: /held waits for `released` after its first chunk, /chunked sends
    chunks, /endless sends until the client is gone, /dies stops short of its length."""

    server: PodServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        getattr(self, "_" + self.path.strip("/"))()

    def _held(self) -> None:
        self._headers(("Content-Length", str(2 * 64 * KIB)))
        self.wfile.write(b"a" * 64 * KIB)
        if self.server.released.wait(WAIT):
            self.wfile.write(b"b" * 64 * KIB)

    def _chunked(self) -> None:
        self._headers(("Transfer-Encoding", "chunked"))
        for part in (b"one,", b"two,", b"three"):
            self.wfile.write(b"%x\r\n%b\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def _endless(self) -> None:
        self._headers(("Content-Length", str(1 << 40)))
        try:
            while True:
                self.wfile.write(b"x" * 64 * KIB)
        except OSError:
            self.server.hung_up.set()
        self.close_connection = True

    def _dies(self) -> None:
        self._headers(("Content-Length", str(1024 * KIB)))
        self.wfile.write(b"x" * 100 * KIB)
        self.close_connection = True

    def _headers(self, *headers: tuple[str, str]) -> None:
        self.send_response(200)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PodServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.78.1", 0), Pod)
        self.released, self.hung_up = threading.Event(), threading.Event()

    @property
    def address(self) -> str:
        return f"{self.server_address[0]!s}:{self.server_address[1]}"


@pytest.fixture
def pod() -> Iterator[PodServer]:
    server = PodServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def connection(pod: PodServer) -> Iterator[http.client.HTTPConnection]:
    ingress = Ingress()
    ingress.start()
    ingress.set_backends([pod.address])
    host, port = ingress.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    yield connection
    connection.close()
    ingress.close()


def test_the_start_of_a_body_arrives_while_the_pod_is_still_sending_it(
    pod: PodServer, connection: http.client.HTTPConnection
) -> None:
    connection.request("GET", "/held")
    response = connection.getresponse()
    assert response.getheader("Content-Length") == str(128 * KIB)  # passed on, not chunked
    # The pod sends the rest only once this arrives: an ingress that read the whole answer
    # first would wait for the pod, and the pod for us.
    assert response.read(64 * KIB) == b"a" * 64 * KIB
    pod.released.set()
    assert response.read() == b"b" * 64 * KIB


def test_a_chunked_answer_is_passed_on_chunked_and_the_connection_kept(
    connection: http.client.HTTPConnection,
) -> None:
    connection.request("GET", "/chunked")
    first = connection.getresponse()
    assert first.getheader("Transfer-Encoding") == "chunked"
    assert first.read() == b"one,two,three"
    socket = connection.sock
    assert socket is not None  # http.client drops a socket the server means to close
    connection.request("GET", "/chunked")
    assert connection.getresponse().read() == b"one,two,three"
    assert connection.sock is socket  # the same connection all along


def test_a_client_that_hangs_up_stops_the_pod_sending(
    pod: PodServer, connection: http.client.HTTPConnection
) -> None:
    connection.request("GET", "/endless")
    response = connection.getresponse()
    assert len(response.read(256 * KIB)) == 256 * KIB
    response.close()
    connection.close()
    assert pod.hung_up.wait(WAIT), "the pod is still sending a terabyte to nobody"


def test_a_pod_that_dies_mid_body_leaves_the_body_cut_short(
    connection: http.client.HTTPConnection,
) -> None:
    connection.request("GET", "/dies")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Length") == str(1024 * KIB)
    with pytest.raises(http.client.IncompleteRead) as short:
        response.read()
    assert len(short.value.partial) == 100 * KIB
