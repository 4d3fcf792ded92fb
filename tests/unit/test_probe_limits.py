"""Probes are bounded: a body limit read as a stream, and a total deadline for each request.

An endpoint of a bad release may answer with a body of any size, trickle it a byte at a time, or
compress a bomb; each must end as a check `error` with a line that says which limit it passed,
never as wavegate reading the whole answer. The endpoints here are httpx in-process transports
whose bodies are generators, so "endless" really is endless.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wavegate.config import checks, sizes
from wavegate.decide.verdict import Outcome
from wavegate.engine import probes
from wavegate.errors import InputError

CHECKS = Path("/apps/library/checks.yaml")
CHUNK = b"x" * 65536


def suite(extra: str = "") -> checks.Suite:
    return checks.load("checks:\n  - name: search\n    request: GET /api/search\n"
                       f"    expect: {{status: 200}}\n{extra}", CHECKS)


def endless() -> Iterator[bytes]:
    while True:
        yield CHUNK


def serving(body: Iterator[bytes] | bytes, **headers: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        # A generator, so the client streams it as it would a network body.
        content = iter([body]) if isinstance(body, bytes) else body
        return httpx.Response(200, headers=headers, content=content)
    return httpx.MockTransport(handler)


def one_round(transport: httpx.BaseTransport, checks_suite: checks.Suite | None = None,
              deadline: float = 1.0) -> probes.Result:
    result = probes.run_round("http://127.0.0.1:9", checks_suite or suite(), {},
                              deadline=deadline, transport=transport, sleep=lambda _: None)
    return result.results[0]


def test_an_endless_body_is_an_error_past_one_mib_by_default() -> None:
    result = one_round(serving(endless()))
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.detail == "response body over 1 MiB"
    assert result.verdict.status == 200


def test_max_body_raises_the_limit_for_one_check() -> None:
    two_mib = b"x" * (2 * sizes.MIB)
    assert one_round(serving(two_mib)).verdict.detail == "response body over 1 MiB"
    raised = one_round(serving(two_mib), suite("    max_body: 4MiB\n"))
    assert raised.verdict.outcome is Outcome.PASS


def test_a_small_gzip_bomb_is_cut_at_the_limit_not_inflated_whole() -> None:
    bomb = gzip.compress(b"\0" * (16 * sizes.MIB))  # about 16 KiB on the wire
    result = one_round(serving(bomb, **{"Content-Encoding": "gzip"}))
    assert result.verdict.detail == "response body over 1 MiB"


def test_a_compressed_answer_within_the_limit_is_judged_on_its_decoded_body() -> None:
    body = zlib.compress(b'{"version": "1.0.0"}')
    answer = serving(body, **{"Content-Encoding": "deflate", "Content-Type": "application/json"})
    versioned = checks.load("checks:\n  - name: v\n    request: GET /version\n"
                            "    expect: {status: 200, json: {version: 1.0.0}}\n", CHECKS)
    assert one_round(answer, versioned).verdict.outcome is Outcome.PASS


def test_a_broken_gzip_body_is_a_check_error_not_a_crash() -> None:
    result = one_round(serving(b"not gzip at all", **{"Content-Encoding": "gzip"}))
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.detail == "response body does not decode as gzip"


def test_a_body_that_trickles_ends_at_the_deadline_whatever_the_read_timeout() -> None:
    release = threading.Event()

    def trickle() -> Iterator[bytes]:
        yield b"{"  # headers and a first byte arrive; the rest never does
        release.wait()
        yield b"}"

    try:
        result = one_round(serving(trickle()), deadline=0.2)
    finally:
        release.set()
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.detail == "no complete answer within 200ms"


def test_an_endpoint_that_never_answers_ends_at_the_deadline() -> None:
    release = threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        release.wait()
        return httpx.Response(200)

    try:
        result = one_round(httpx.MockTransport(hang), deadline=0.2)
    finally:
        release.set()
    assert result.verdict.detail == "no complete answer within 200ms"
    assert result.verdict.status is None


def test_over_limit_and_late_answers_are_retried_like_other_errors() -> None:
    sent = []

    def big_then_small(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, content=endless() if len(sent) == 1 else iter([b"{}"]))

    result = one_round(httpx.MockTransport(big_then_small))
    assert result.verdict.outcome is Outcome.PASS and result.attempts == 2


def test_probes_ask_for_an_uncompressed_answer() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Accept-Encoding"))
        return httpx.Response(200)

    one_round(httpx.MockTransport(handler))
    assert seen == ["identity"]


@pytest.mark.parametrize(("text", "size"), [
    ("4MiB", 4 * sizes.MIB), ("512KiB", 512 * 1024), ("2MB", 2_000_000), (4096, 4096),
    ("1 GiB", 1024**3),
])
def test_sizes_read_as_users_write_them(text: object, size: int) -> None:
    assert sizes.parse(text) == size


@pytest.mark.parametrize("value", ["lots", "4 mib", "-1", 0, True, "1.5MiB"])
def test_a_bad_max_body_names_file_line_and_field(value: object) -> None:
    with pytest.raises(InputError) as caught:
        suite(f"    max_body: {value!r}\n".replace("'", '"'))
    assert str(caught.value).startswith(f"{CHECKS}:5: checks[0].max_body: ")
    assert caught.value.exit_code == 2


def test_max_body_applies_to_every_cell_of_a_matrix() -> None:
    matrix = checks.load("""\
principals: {alice: {}, bob: {}}
checks:
  - name: access
    max_body: 64KiB
    authz_matrix:
      principals: [alice, bob]
      resources: {eng: {request: GET /api/spaces/eng, marker: eng}}
      allow: {alice: [eng]}
""", CHECKS)
    assert {probe.max_body for probe in matrix.probes} == {64 * 1024}
    assert {probe.max_body for probe in suite().probes} == {checks.DEFAULT_MAX_BODY}
