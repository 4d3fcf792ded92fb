"""Judging one probe's answer. The table is the spec a release engineer reads (docs/checks.md):

a denial is 401/403/404 whose body does not show the marker; a 2xx where a denial was due is a
`security` fail; a member who is refused fails too (so a 403-for-everyone outage cannot pass);
a 401 for a principal that sent a token is an error, never a pass; 5xx and no answer are
retryable errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wavegate.config import jsonpath
from wavegate.config.checks import Allowed, Denied, Expect, JsonIds, Principal, Probe, Request
from wavegate.decide.verdict import Outcome, Response, TransportError, Verdict, judge

ALICE = Principal("alice", token_env="T_ALICE")
BOB_FILE = Principal("bob", token_file=Path("/run/secrets/bob.token"))
ANON = Principal("anonymous")
HR = "space-hr"
ENG = "space-eng"
VERSION = Expect(status=(200,), json={"version": "1.2.3"})
SUBSET = Expect(json_ids=JsonIds("$.spaces[*].id", subset_of=(ENG,)))
EQUALS = Expect(json_ids=JsonIds("$.spaces[*].id", equals=(ENG,)))

PASS, FAIL, ERROR = Outcome.PASS, Outcome.FAIL, Outcome.ERROR


def probe(expectation: Allowed | Denied | Expect, principal: Principal | None = ALICE,
          severity: str = "security") -> Probe:
    return Probe(check="c", principal=principal, request=Request("GET", "/api/spaces/x"),
                 expectation=expectation, severity=severity)


def answer(status: int, body: Any = b"") -> Response:
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return Response(status=status, body=body)


def spaces(*ids: str) -> dict[str, Any]:
    return {"spaces": [{"id": space, "name": space.title()} for space in ids]}


CASES = [
    # --- matrix pairs the allow-list does not grant -------------------------------------------
    pytest.param(probe(Denied(HR)), answer(200, {"id": HR}), FAIL, "security",
                 "access granted where a denial was due: got 200, body shows 'space-hr'",
                 id="denied+200-leaks"),
    pytest.param(probe(Denied(HR)), answer(200, b"ok"), FAIL, "security",
                 "access granted where a denial was due: got 200", id="denied+200-no-marker"),
    pytest.param(probe(Denied(HR)), answer(204), FAIL, "security", "got 204",
                 id="denied+204"),
    pytest.param(probe(Denied(HR)), answer(403, {"error": "forbidden"}), PASS, "security",
                 "denied (403)", id="denied+403"),
    pytest.param(probe(Denied(HR)), answer(404, {"error": "not found"}), PASS, "security",
                 "denied (404)", id="denied+404"),
    pytest.param(probe(Denied(HR), ANON), answer(401, b"login"), PASS, "security",
                 "denied (401)", id="anonymous-denied+401"),
    pytest.param(probe(Denied(HR), None), answer(401), PASS, "security", "denied (401)",
                 id="no-principal-denied+401"),
    pytest.param(probe(Denied(HR), ANON), answer(403), PASS, "security", "denied (403)",
                 id="anonymous-denied+403"),
    pytest.param(probe(Denied(HR)), answer(404, {"detail": "space-hr is not yours"}), FAIL,
                 "security", "denied with 404 but the body shows 'space-hr'",
                 id="denied+404-body-shows-marker"),
    pytest.param(probe(Denied(HR), ANON), answer(401, {"preview": HR}), FAIL, "security",
                 "denied with 401 but the body shows", id="anonymous-denied+401-shows-marker"),
    pytest.param(probe(Denied(HR)), answer(401), ERROR, "security",
                 "got 401 although a token was sent", id="token-denied+401-is-broken-credential"),
    pytest.param(probe(Denied(HR)), answer(302), FAIL, "security",
                 "expected a denial (401/403/404), got 302", id="denied+302"),
    pytest.param(probe(Denied(HR)), answer(400), FAIL, "security",
                 "expected a denial (401/403/404), got 400", id="denied+400"),
    # --- matrix pairs the allow-list grants (the positive control) ----------------------------
    pytest.param(probe(Allowed(ENG)), answer(200, {"id": ENG}), PASS, "security",
                 "allowed (200)", id="allowed+200-marker"),
    pytest.param(probe(Allowed(ENG)), answer(403), FAIL, "functional",
                 "a member was refused: got 403, expected access", id="allowed+403"),
    pytest.param(probe(Allowed(ENG)), answer(404), FAIL, "functional",
                 "a member was refused: got 404", id="allowed+404"),
    pytest.param(probe(Allowed(ENG)), answer(200, {"id": "other"}), FAIL, "functional",
                 "got 200 without the marker 'space-eng'", id="allowed+200-without-marker"),
    pytest.param(probe(Allowed(ENG)), answer(401), ERROR, "security",
                 "got 401 although a token was sent: the probe credential is broken",
                 id="allowed+401-with-token"),
    pytest.param(probe(Allowed(ENG), BOB_FILE), answer(401), ERROR, "security",
                 "probe credential is broken", id="allowed+401-token-from-file"),
    # --- no judgeable answer ------------------------------------------------------------------
    pytest.param(probe(Denied(HR)), answer(500), ERROR, "security", "got 500", id="denied+500"),
    pytest.param(probe(Allowed(ENG)), answer(503), ERROR, "security", "got 503",
                 id="allowed+503"),
    pytest.param(probe(VERSION, None, "functional"), answer(502), ERROR, "functional",
                 "got 502", id="expect+502"),
    pytest.param(probe(Denied(HR)), TransportError("ConnectTimeout"), ERROR, "security",
                 "no answer: ConnectTimeout", id="transport-error"),
    # --- single checks ------------------------------------------------------------------------
    pytest.param(probe(VERSION, None, "functional"), answer(200, {"version": "1.2.3"}), PASS,
                 "functional", "got 200 as expected", id="version-matches"),
    pytest.param(probe(VERSION, None, "functional"), answer(200, {"version": "1.2.2"}), FAIL,
                 "functional", "field 'version' is '1.2.2', expected '1.2.3'",
                 id="version-differs"),
    pytest.param(probe(VERSION, None, "functional"), answer(200, ["1.2.3"]), FAIL,
                 "functional", "field 'version' is None", id="version-body-not-an-object"),
    pytest.param(probe(VERSION, None, "functional"), answer(404, {"version": "1.2.3"}), FAIL,
                 "functional", "got 404, expected 200", id="status-mismatch"),
    pytest.param(probe(Expect(status=(200, 204)), None, "functional"), answer(204), PASS,
                 "functional", "got 204", id="one-of-several-statuses"),
    pytest.param(probe(Expect(status=(200, 204)), None, "functional"), answer(201), FAIL,
                 "functional", "got 201, expected 200/204", id="none-of-several-statuses"),
    pytest.param(probe(VERSION, None, "functional"), answer(200, b"<html>1.2.3</html>"), FAIL,
                 "functional", "got 200 with a body that is not JSON", id="body-not-json"),
    pytest.param(probe(Expect(), None, "functional"), answer(200, b"<html>"), PASS,
                 "functional", "got 200", id="status-only-ignores-body"),
    pytest.param(probe(Expect(status=(401,))), answer(401), PASS, "security", "got 401",
                 id="401-explicitly-expected-with-token"),
    pytest.param(probe(Expect()), answer(401), ERROR, "security",
                 "probe credential is broken", id="expect-200-token-gets-401"),
    pytest.param(probe(Expect(), ANON, "functional"), answer(401), FAIL, "functional",
                 "got 401, expected 200", id="expect-200-anonymous-gets-401"),
    # --- listings: json_ids -------------------------------------------------------------------
    pytest.param(probe(SUBSET), answer(200, spaces(ENG)), PASS, "security",
                 "got 200 as expected", id="subset-holds"),
    pytest.param(probe(SUBSET), answer(200, spaces()), PASS, "security", "as expected",
                 id="subset-empty-list"),
    pytest.param(probe(SUBSET), answer(200, spaces(ENG, "space-finance", HR)), FAIL,
                 "security", "ids at $.spaces[*].id include space-finance, space-hr, beyond "
                 "the allowed set", id="subset-violated"),
    pytest.param(probe(SUBSET, severity="functional"), answer(200, spaces("space-finance")),
                 FAIL, "security", "include space-finance",
                 id="subset-violated-is-security-whatever-declared"),
    pytest.param(probe(EQUALS), answer(200, spaces(ENG)), PASS, "security", "as expected",
                 id="equals-holds"),
    pytest.param(probe(EQUALS), answer(200, spaces()), FAIL, "functional",
                 "ids at $.spaces[*].id lack space-eng", id="equals-missing-id"),
    pytest.param(probe(EQUALS), answer(200, spaces(ENG, HR)), FAIL, "security",
                 "include space-hr", id="equals-extra-id-is-a-leak"),
    pytest.param(probe(EQUALS), answer(200, b"not json"), FAIL, "security", "not JSON",
                 id="listing-not-json"),
    pytest.param(probe(Expect(json={"version": "1.2.3"},
                              json_ids=JsonIds("$.spaces[*].id", subset_of=(ENG,)))),
                 answer(200, {"version": "1.2.3", **spaces(HR)}), FAIL, "security",
                 "include space-hr", id="json-and-ids-both-checked"),
]


@pytest.mark.parametrize(("the_probe", "the_answer", "outcome", "severity", "detail"), CASES)
def test_judge(the_probe: Probe, the_answer: Response | TransportError, outcome: Outcome,
               severity: str, detail: str) -> None:
    verdict = judge(the_probe, the_answer)
    assert (verdict.outcome, verdict.severity) == (outcome, severity), verdict.detail
    assert detail in verdict.detail


@pytest.mark.parametrize(("the_answer", "retryable", "status"), [
    pytest.param(answer(500), True, 500, id="500"),
    pytest.param(answer(503), True, 503, id="503"),
    pytest.param(TransportError("ReadTimeout"), True, None, id="transport"),
    pytest.param(answer(401), False, 401, id="401-with-token: an answer, not asked again"),
    pytest.param(answer(200), False, 200, id="fail-is-never-retried"),
    pytest.param(answer(403), False, 403, id="pass"),
])
def test_only_no_answer_and_5xx_are_retryable(
    the_answer: Response | TransportError, retryable: bool, status: int | None,
) -> None:
    verdict = judge(probe(Denied(HR)), the_answer)
    assert (verdict.retryable, verdict.status) == (retryable, status)


def test_a_verdict_never_shows_the_token_or_body_beyond_the_marker() -> None:
    body = {"id": HR, "owner_token": "leaked-body-secret"}
    verdict = judge(probe(Denied(HR)), answer(200, body))
    assert verdict == Verdict(FAIL, "security", "access granted where a denial was due: "
                              "got 200, body shows 'space-hr'", status=200)


def test_a_listing_whose_path_reaches_nothing_does_not_pass() -> None:
    renamed = {"items": [{"id": ENG}, {"id": "space-finance"}, {"id": HR}]}
    verdict = judge(probe(SUBSET), answer(200, renamed))
    assert verdict.outcome is not PASS


# --- jsonpath.select -----------------------------------------------------------------------------

DOC = {"spaces": [{"id": "a", "tags": ["x", "y"]}, {"id": "b"}, {"name": "no-id"}],
       "odd key": 1, "kebab-key": 2, "meta": {"n": 3, "m": 4}, "n": None}


@pytest.mark.parametrize(("path", "values"), [
    ("$", [DOC]),
    ("$.spaces[*].id", ["a", "b"]),
    ("$.spaces[0].id", ["a"]),
    ("$.spaces[0].tags[*]", ["x", "y"]),
    ("$.spaces[*].tags[1]", ["y"]),
    ("$.spaces[9].id", []),
    ("$.missing", []),
    ("$.missing[*].id", []),
    ("$['odd key']", [1]),
    ("$.kebab-key", [2]),
    ("$.meta[*]", [3, 4]),
    ("$.meta.n", [3]),
    ("$.n", [None]),
    ("$.spaces.id", []),  # a key step on a list reaches nothing
    ("$.meta[0]", []),    # an index step on a mapping reaches nothing
])
def test_jsonpath_select(path: str, values: list[Any]) -> None:
    assert jsonpath.select(DOC, path) == values


@pytest.mark.parametrize(("path", "message"), [
    ("spaces", "a JSON path starts with $"),
    ("$.a..b", "unsupported JSON path step at '..b'"),
    ("$[-1]", "unsupported JSON path step at '[-1]'"),
    ("$[?(@.id)]", "unsupported JSON path step"),
    ("$.spaces[*", "unsupported JSON path step at '[*'"),
])
def test_jsonpath_refuses_paths_outside_its_subset(path: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        jsonpath.select(DOC, path)
    assert message in str(caught.value)
