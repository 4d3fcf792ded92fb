"""One round of probes over HTTP to a server on a loopback port: what is sent, what is
retried, how connections are kept, and what a round reports. The server answers with a handler
function (tests/unit/loopback.py); the retry pause is a no-op.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.unit import loopback
from tests.unit.loopback import Reply
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
TOKEN = "alice-secret-token-1"
TOKENS = {"alice": TOKEN, "anonymous": None}


def library(request: loopback.Request) -> Reply:
    """A correct release: alice reads her space, nobody else does."""
    if request.path == "/version":
        return Reply.json({"version": "1.0.0"})
    if request.headers.get("Authorization") == f"Bearer {TOKEN}":
        return Reply.json({"id": "space-eng"})
    return Reply.json({"error": "unauthorized"}, 401)


def round_at(endpoint: str, *, deadline: float = 30.0) -> probes.Round:
    return probes.run_round(endpoint, SUITE, TOKENS, deadline=deadline,
                            sleep=loopback.no_pause)


def test_a_correct_release_passes_and_the_token_goes_only_in_its_header(
        serve: loopback.Serve) -> None:
    server = serve(library)
    result = round_at(server.url)
    assert result.outcome is Outcome.PASS
    assert probes.counts(result) == Counts(passed=3, failed=0, errors=0)
    assert probes.describe(result) is None
    by_path = {(r.path, r.headers.get("Authorization")) for r in server.requests}
    assert by_path == {("/version", None), ("/api/spaces/space-eng", None),
                       ("/api/spaces/space-eng", f"Bearer {TOKEN}")}
    for request in server.requests:
        elsewhere = [request.path, repr(request.query), repr(request.body),
                     *(value for name, value in request.headers.items()
                       if name.lower() != "authorization")]
        assert not any(TOKEN in text for text in elsewhere)
    assert TOKEN not in repr([r.as_dict() for r in result.results])


def test_a_leak_fails_the_round_and_describe_names_principal_request_and_status(
        serve: loopback.Serve) -> None:
    def leaking(request: loopback.Request) -> Reply:
        if request.path.startswith("/api/spaces/"):
            return Reply.json({"id": "space-eng"})  # to anonymous too
        return library(request)

    result = round_at(serve(leaking).url)
    assert result.outcome is Outcome.FAIL
    assert probes.describe(result) == (
        "space access [security]: GET /api/spaces/space-eng as anonymous: access granted "
        "where a denial was due: got 200, body shows 'space-eng'")
    failed = result.first(Outcome.FAIL)
    assert failed is not None and failed.attempts == 1  # a fail is never retried


def test_5xx_is_retried_until_it_answers(serve: loopback.Serve) -> None:
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def flapping(request: loopback.Request) -> Reply:
        with lock:
            calls[request.path] += 1
            count = calls[request.path]
        if request.path == "/version" and count <= 2:
            return Reply(503, b"upstream not ready")
        return library(request)

    result = round_at(serve(flapping).url)
    assert result.outcome is Outcome.PASS
    version = next(r for r in result.results if r.probe.check == "serving the new version")
    assert version.attempts == 3
    assert calls["/version"] == 3


def test_no_answer_within_the_deadline_is_an_error_not_a_pass_or_a_fail() -> None:
    with loopback.refusing() as endpoint:
        result = round_at(endpoint, deadline=0.0)
    assert result.outcome is Outcome.ERROR
    assert probes.counts(result) == Counts(passed=0, failed=0, errors=3)
    assert all(r.attempts == 1 for r in result.results)  # the deadline ends the retries
    described = probes.describe(result) or ""
    assert described.startswith("serving the new version: GET /version: no answer: ")
    assert "refused" in described


def test_a_fail_outranks_an_error_in_the_same_round(serve: loopback.Serve) -> None:
    def mixed(request: loopback.Request) -> Reply | loopback.Raw:
        if request.path == "/version":
            return Reply.json({"version": "0.9.0"})  # the old release
        return loopback.Raw(b"")  # the connection closed with no answer

    result = round_at(serve(mixed).url, deadline=0.0)
    assert result.outcome is Outcome.FAIL
    assert result.count(Outcome.ERROR) == 2
    assert (probes.describe(result) or "").startswith("serving the new version: GET /version")


def test_the_same_request_asked_by_two_checks_is_sent_once_and_judged_for_each(
        serve: loopback.Serve) -> None:
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
    server = serve(library)
    result = probes.run_round(server.url, twice, TOKENS, deadline=30.0, sleep=loopback.no_pause)
    sent = Counter(request.path for request in server.requests)
    assert sent["/api/spaces/space-eng"] == 1 + 3  # shared by the first two; samples are not
    assert [r.verdict.outcome for r in result.results] == [Outcome.PASS, Outcome.FAIL,
                                                            Outcome.PASS]
    assert [r.probe.check for r in result.results] == [
        "alice reads her space", "alice is refused her space",
        "alice reads it again, three answers"]


# --- connections kept between rounds ----------------------------------------------------------

def distinct_probes(count: int) -> checks.Suite:
    """`count` checks asking different paths, so none is answered from another's request."""
    items = "".join(f"  - {{name: item {n}, request: GET /items/{n}}}\n" for n in range(count))
    return checks.load("checks:\n" + items, Path("checks.yaml"))


def two_rounds(server: loopback.Server, *, between: Callable[[], object]) -> list[probes.Round]:
    """Two rounds of 30 distinct probes over one cluster's client, `between` run between them."""
    clients = probes.Clients()
    suite = distinct_probes(30)
    rounds = []
    try:
        for step in (lambda: None, between):
            step()
            rounds.append(probes.run_round(server.url, suite, {}, deadline=30.0,
                                           sleep=loopback.no_pause,
                                           client=clients.get("c0", server.url)))
    finally:
        clients.close()
    return rounds


def test_a_rounds_probes_share_a_few_connections_and_the_next_round_opens_none(
        serve: loopback.Serve) -> None:
    server = serve(lambda _: Reply.json({}))
    opened: list[int] = []
    rounds = two_rounds(server, between=lambda: opened.append(server.accepted))
    assert [r.count(Outcome.PASS) for r in rounds] == [30, 30]
    assert len(server.requests) == 60  # each probe went over the wire
    assert 1 <= opened[0] <= probes.PARALLEL_PROBES
    assert server.accepted == opened[0]


def test_a_server_closing_idle_connections_between_rounds_costs_the_next_round_nothing(
        serve: loopback.Serve) -> None:
    server = serve(lambda _: Reply.json({}))
    seen: dict[str, int] = {}

    def close_idle() -> None:
        seen["opened"], seen["dropped"] = server.accepted, server.drop_idle()

    first, second = two_rounds(server, between=close_idle)
    assert first.outcome is second.outcome is Outcome.PASS
    assert probes.counts(second) == Counts(passed=30, failed=0, errors=0)
    assert all(r.attempts == 1 for r in second.results)  # no retry spent on a dead connection
    assert seen["dropped"] >= 1 and server.accepted > seen["opened"]  # it had to reconnect
