"""Probes are bounded: a body limit read as a stream, and a total deadline for each request.

An endpoint of a bad release may answer with a body of any size, trickle it a byte at a time, or
compress a bomb; each must end as a check `error` with a line that says which limit it passed,
never as wavegate reading the whole answer. The endpoints here are servers on a loopback port
(tests/unit/loopback.py) whose bodies are generators, so "endless" really is endless.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit import loopback
from tests.unit.loopback import Reply
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


def serving(body: bytes, **headers: str) -> loopback.Handler:
    return lambda _: Reply(200, body, headers)


def endlessly(_: loopback.Request) -> Reply:
    return Reply(200, endless())  # chunked, and a new generator for every attempt


def one_round(server: loopback.Server, checks_suite: checks.Suite | None = None,
              deadline: float = 1.0) -> probes.Result:
    result = probes.run_round(server.url, checks_suite or suite(), {}, deadline=deadline,
                              sleep=loopback.no_pause)
    return result.results[0]


def test_an_endless_body_is_an_error_past_one_mib_by_default(serve: loopback.Serve) -> None:
    result = one_round(serve(endlessly))
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.detail == "response body over 1 MiB"
    assert result.verdict.status == 200


def test_an_endless_body_under_a_declared_length_is_cut_at_the_limit_too(
        serve: loopback.Serve) -> None:
    lying = serve(lambda _: Reply(200, endless(), {"Content-Length": str(2**40)}))
    assert one_round(lying).verdict.detail == "response body over 1 MiB"


def test_max_body_raises_the_limit_for_one_check(serve: loopback.Serve) -> None:
    server = serve(serving(b"x" * (2 * sizes.MIB)))
    assert one_round(server).verdict.detail == "response body over 1 MiB"
    raised = one_round(server, suite("    max_body: 4MiB\n"))
    assert raised.verdict.outcome is Outcome.PASS


def test_a_small_gzip_bomb_is_cut_at_the_limit_not_inflated_whole(serve: loopback.Serve) -> None:
    bomb = gzip.compress(b"\0" * (16 * sizes.MIB))  # about 16 KiB on the wire
    result = one_round(serve(serving(bomb, **{"Content-Encoding": "gzip"})))
    assert result.verdict.detail == "response body over 1 MiB"


def test_a_compressed_answer_within_the_limit_is_judged_on_its_decoded_body(
        serve: loopback.Serve) -> None:
    body = zlib.compress(b'{"version": "1.0.0"}')
    answer = serving(body, **{"Content-Encoding": "deflate", "Content-Type": "application/json"})
    versioned = checks.load("checks:\n  - name: v\n    request: GET /version\n"
                            "    expect: {status: 200, json: {version: 1.0.0}}\n", CHECKS)
    assert one_round(serve(answer), versioned).verdict.outcome is Outcome.PASS


def test_a_broken_gzip_body_is_a_check_error_not_a_crash(serve: loopback.Serve) -> None:
    result = one_round(serve(serving(b"not gzip at all", **{"Content-Encoding": "gzip"})))
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.detail == "response body does not decode as gzip"


def test_a_body_that_trickles_ends_at_the_deadline_whatever_the_read_timeout(
        serve: loopback.Serve) -> None:
    def trickling(_: loopback.Request) -> Reply:
        def body() -> Iterator[bytes]:
            yield b"{"
            while not server.pause(0.02):  # a byte far more often than any read timeout
                yield b" "
        return Reply(200, body())

    server = serve(trickling)
    result = one_round(server, deadline=0.2)
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.detail == "no complete answer within 200ms"
    assert result.verdict.status == 200


def test_an_endpoint_that_never_answers_ends_at_the_deadline(serve: loopback.Serve) -> None:
    result = one_round(serve(lambda _: loopback.Raw(b"", hold=True)), deadline=0.2)
    assert result.verdict.outcome is Outcome.ERROR
    assert result.verdict.status is None
    assert result.verdict.detail == "no complete answer within 200ms"


def test_over_limit_and_late_answers_are_retried_like_other_errors(
        serve: loopback.Serve) -> None:
    def big_then_small(request: loopback.Request) -> Reply:
        first = len(server.requests) == 1  # probes of one check are sent one after another
        return endlessly(request) if first else Reply(200, b"{}")

    server = serve(big_then_small)
    result = one_round(server)
    assert result.verdict.outcome is Outcome.PASS and result.attempts == 2


def test_probes_ask_for_an_uncompressed_answer(serve: loopback.Serve) -> None:
    server = serve(serving(b""))
    one_round(server)
    assert [r.headers.get("Accept-Encoding") for r in server.requests] == ["identity"]


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
