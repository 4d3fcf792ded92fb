"""One round of probes over HTTP, through httpx's in-process transport: what is sent, what is
retried, and what a round reports. No socket, no sleep: the transport answers, the retry pause
is a no-op.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx

from wavegate.config import checks
from wavegate.decide.ledger import Counts
from wavegate.decide.verdict import Outcome
from wavegate.engine import probes

SUITE = checks.load("""
principals:
  alice: {token_env: T_ALICE}
  anonymous: {}
checks:
  - name: serving the new version
    request: GET /version
    expect: {status: 200, json: {version: "1.0.0"}}
  - name: space access
    authz_matrix:
      principals: [alice, anonymous]
      resources:
        space-eng: {request: GET /api/spaces/space-eng, marker: space-eng}
      allow:
        alice: [space-eng]
""", Path("checks.yaml"))
TOKENS = {"alice": "alice-secret-token-1", "anonymous": None}
ENDPOINT = "http://127.0.0.1:9"


def library(request: httpx.Request) -> httpx.Response:
    """A correct release: alice reads her space, nobody else does."""
    if request.url.path == "/version":
        return httpx.Response(200, json={"version": "1.0.0"})
    if request.headers.get("Authorization") == "Bearer alice-secret-token-1":
        return httpx.Response(200, json={"id": "space-eng"})
    return httpx.Response(401, json={"error": "unauthorized"})


def round_with(handler: httpx.MockTransport, *, deadline: float = 30.0) -> probes.Round:
    return probes.run_round(ENDPOINT, SUITE, TOKENS, deadline=deadline, transport=handler,
                            sleep=lambda _seconds: None)


def test_a_correct_release_passes_and_the_token_goes_only_in_its_header() -> None:
    seen: list[httpx.Request] = []
    lock = threading.Lock()

    def recording(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append(request)
        return library(request)

    result = round_with(httpx.MockTransport(recording))
    assert result.outcome is Outcome.PASS
    assert probes.counts(result) == Counts(passed=3, failed=0, errors=0)
    assert probes.describe(result) is None
    by_path = {(r.url.path, r.headers.get("Authorization")) for r in seen}
    assert by_path == {("/version", None), ("/api/spaces/space-eng", None),
                       ("/api/spaces/space-eng", "Bearer alice-secret-token-1")}
    assert all("alice-secret-token-1" not in str(r.url) for r in seen)
    assert "alice-secret-token-1" not in repr([r.as_dict() for r in result.results])


def test_a_leak_fails_the_round_and_describe_names_principal_request_and_status() -> None:
    def leaking(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/spaces/"):
            return httpx.Response(200, json={"id": "space-eng"})  # to anonymous too
        return library(request)

    result = round_with(httpx.MockTransport(leaking))
    assert result.outcome is Outcome.FAIL
    assert probes.describe(result) == (
        "space access [security]: GET /api/spaces/space-eng as anonymous: access granted "
        "where a denial was due: got 200, body shows 'space-eng'")
    failed = result.first(Outcome.FAIL)
    assert failed is not None and failed.attempts == 1  # a fail is never retried


def test_5xx_is_retried_until_it_answers() -> None:
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def flapping(request: httpx.Request) -> httpx.Response:
        with lock:
            calls[request.url.path] += 1
            count = calls[request.url.path]
        if request.url.path == "/version" and count <= 2:
            return httpx.Response(503, text="upstream not ready")
        return library(request)

    result = round_with(httpx.MockTransport(flapping))
    assert result.outcome is Outcome.PASS
    version = next(r for r in result.results if r.probe.check == "serving the new version")
    assert version.attempts == 3
    assert calls["/version"] == 3


def test_no_answer_within_the_deadline_is_an_error_not_a_pass_or_a_fail() -> None:
    def refusing(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = round_with(httpx.MockTransport(refusing), deadline=0.0)
    assert result.outcome is Outcome.ERROR
    assert probes.counts(result) == Counts(passed=0, failed=0, errors=3)
    assert all(r.attempts == 1 for r in result.results)  # the deadline ends the retries
    described = probes.describe(result) or ""
    assert described.startswith("serving the new version: GET /version: ")
    assert "ConnectError" in described


def test_a_fail_outranks_an_error_in_the_same_round() -> None:
    def mixed(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/version":
            return httpx.Response(200, json={"version": "0.9.0"})  # the old release
        raise httpx.ReadTimeout("timed out", request=request)

    result = round_with(httpx.MockTransport(mixed), deadline=0.0)
    assert result.outcome is Outcome.FAIL
    assert (probes.describe(result) or "").startswith("serving the new version: GET /version")


def test_the_same_request_asked_by_two_checks_is_sent_once_and_judged_for_each() -> None:
    twice = checks.load("""
principals:
  alice: {token_env: T_ALICE}
checks:
  - name: alice reads her space
    as: alice
    request: GET /api/spaces/space-eng
    expect: {status: 200}
  - name: alice is refused her space
    as: alice
    request: GET /api/spaces/space-eng
    expect: {status: 403}
  - name: alice reads it again, three answers
    as: alice
    request: GET /api/spaces/space-eng
    samples: 3
    expect: {status: 200}
""", Path("checks.yaml"))
    sent: Counter[str] = Counter()
    lock = threading.Lock()

    def counting(request: httpx.Request) -> httpx.Response:
        with lock:
            sent[request.url.path] += 1
        return library(request)

    result = probes.run_round(ENDPOINT, twice, TOKENS, deadline=30.0,
                              transport=httpx.MockTransport(counting), sleep=lambda _: None)
    assert sent["/api/spaces/space-eng"] == 1 + 3  # shared by the first two; samples are not
    assert [r.verdict.outcome for r in result.results] == [Outcome.PASS, Outcome.FAIL,
                                                            Outcome.PASS]
    assert [r.probe.check for r in result.results] == [
        "alice reads her space", "alice is refused her space",
        "alice reads it again, three answers"]
