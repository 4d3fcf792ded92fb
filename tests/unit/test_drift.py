"""Access drift, pure: parsing the check, taking a baseline from answers, judging later ones.

The live release is the oracle: an id a principal now sees that it did not see before (and
allow_new does not grant) is a security failure; a request served before and refused now is a
functional one; ids are kept only as salted fingerprints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wavegate.config import checks
from wavegate.config.checks import Probe, Request, Unchanged
from wavegate.decide import drift
from wavegate.decide.verdict import Outcome, Response, expected, judge
from wavegate.errors import InputError

FILE = Path("/apps/library/checks.yaml")
SUITE = """\
principals:
  alice: {token_env: T_ALICE}
  bob:   {token_env: T_BOB}
  carol: {token_env: T_CAROL}
checks:
  - name: no principal gains access
    access_drift:
      principals: [alice, bob, carol]
      requests:
        spaces: {request: GET /api/spaces, ids: "$.spaces[*].id", read: "GET /api/spaces/{id}"}
        search: {request: "GET /api/search?q=e", ids: "$.spaces[*].id"}
      allow_new: {carol: [space-finance]}
"""
MEMBERS = {"alice": ["space-eng"], "bob": ["space-finance"], "carol": ["space-eng", "space-hr"]}
ALL = ["space-eng", "space-finance", "space-hr"]


def load(text: str = SUITE) -> checks.Suite:
    return checks.load(text, FILE)


def listing(ids: list[str], status: int = 200) -> Response:
    return Response(status, json.dumps({"spaces": [{"id": i} for i in ids]}).encode())


def answer_like_the_app(probe: Probe, sees: dict[str, list[str]]) -> Response:
    """What library_app answers `probe` when each principal sees the spaces in `sees`."""
    expectation = probe.expectation
    assert isinstance(expectation, Unchanged) and probe.principal is not None
    visible = sees[probe.principal.name]
    if expectation.target is None:
        return listing(visible)
    return Response(200, b"{}") if expectation.target in visible else Response(404, b"{}")


def baseline(sees: dict[str, list[str]] = MEMBERS) -> drift.Baseline:
    drifts = load().drifts
    asked = [(p, answer_like_the_app(p, sees)) for p in drift.baseline_probes(drifts)]
    targets = drift.read_targets(drifts, asked)
    reads = [(p, answer_like_the_app(p, sees)) for p in drift.baseline_reads(drifts, targets)]
    return drift.record(drifts, version="1.0.0", salt="s4lt", listings=asked, targets=targets,
                        reads=reads)


def failures(sees: dict[str, list[str]], base: drift.Baseline | None = None) -> list[str]:
    """`principal request: detail` for every failing probe of a round against the baseline."""
    found = []
    base = base or baseline()
    for probe in drift.round_probes(base):
        verdict = judge(probe, answer_like_the_app(probe, sees))
        if verdict.outcome is not Outcome.PASS:
            assert probe.principal is not None
            found.append(f"{verdict.severity} {probe.principal.name} {probe.request}: "
                         f"{verdict.detail}")
    return found


# --- parsing ------------------------------------------------------------------------------------

def test_an_access_drift_check_is_kept_apart_from_the_probes() -> None:
    suite = load()
    assert suite.probes == ()
    (check,) = suite.drifts
    assert [p.name for p in check.principals] == ["alice", "bob", "carol"]
    assert [(r.name, str(r.request), r.ids) for r in check.requests] == [
        ("spaces", "GET /api/spaces", "$.spaces[*].id"),
        ("search", "GET /api/search?q=e", "$.spaces[*].id")]
    assert check.requests[0].read == Request("GET", "/api/spaces/{id}")
    assert check.allow_new == {"carol": frozenset({"space-finance"})}
    assert check.max_ids == 50 and check.samples == 1
    assert {p.name for p in suite.senders} == {"alice", "bob", "carol"}


@pytest.mark.parametrize(("edit", "field", "message"), [
    (("principals: [alice, bob, carol]", "principals: [alice, dave]"),
     "checks[0].access_drift.principals[1]", "unknown principal 'dave'"),
    (("principals: [alice, bob, carol]", "principals: []"),
     "checks[0].access_drift.principals", "at least one principal"),
    (('read: "GET /api/spaces/{id}"', 'read: "GET /api/spaces/x"'),
     "checks[0].access_drift.requests.spaces.read", "{id}"),
    (('ids: "$.spaces[*].id", read', 'ids: "spaces", read'),
     "checks[0].access_drift.requests.spaces.ids", "starting with $"),
    (("allow_new: {carol: [space-finance]}", "allow_new: {dave: [space-finance]}"),
     "checks[0].access_drift.allow_new.dave", "unknown field"),
    (("      allow_new:", "      max_ids: 0\n      allow_new:"),
     "checks[0].access_drift.max_ids", ">= 1"),
    (("    access_drift:", "    samples: 0\n    access_drift:"),
     "checks[0].samples", ">= 1"),
])
def test_a_broken_access_drift_check_names_file_line_and_field(
        edit: tuple[str, str], field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        load(SUITE.replace(*edit))
    assert f"{FILE}:" in str(caught.value) and f": {field}: " in str(caught.value)
    assert message in str(caught.value)


def test_a_request_may_be_a_mapping_with_query_headers_and_a_json_body() -> None:
    suite = load("""\
checks:
  - name: search by POST
    samples: 3
    request:
      method: POST
      path: /api/search
      query: {page: 2}
      headers: {X-Tenant: eu-1}
      json: {q: eng}
    expect: {status: 200}
""")
    (probe,) = suite.probes
    assert probe.request.target == "/api/search?page=2"
    assert probe.request.headers == (("X-Tenant", "eu-1"),)
    assert json.loads(probe.request.body or "") == {"q": "eng"}
    assert str(probe.request) == "POST /api/search?page=2" and probe.samples == 3


@pytest.mark.parametrize("header", ["Authorization: Bearer x", "X-Api-Token: x",
                                    "X-Forwarded-User: Bearer abc"])
def test_a_request_may_not_carry_a_credential_in_its_headers(header: str) -> None:
    name, value = header.split(": ")
    text = f"""\
checks:
  - name: c
    request: {{path: /x, headers: {{{name}: "{value}"}}}}
"""
    with pytest.raises(InputError, match="tokens come only from principals") as caught:
        checks.load(text, FILE)
    assert "x" not in str(caught.value).split("principals")[-1]  # the value is not echoed


# --- judging against the baseline ---------------------------------------------------------------

def test_the_same_access_passes_every_round() -> None:
    assert failures(MEMBERS) == []


def test_a_list_only_leak_names_principal_request_id_and_the_version_before() -> None:
    found = failures({**MEMBERS, "alice": ALL})
    assert any(line.startswith("security alice GET /api/spaces: now shows space-finance, "
                               "space-hr, which 1.0.0 did not show") for line in found), found


def test_a_direct_read_leak_for_one_principal_is_found_by_the_reads_alone() -> None:
    sees = dict(MEMBERS)
    base = baseline()
    reads = [p for p in drift.round_probes(base)
             if isinstance(p.expectation, Unchanged) and p.expectation.target]
    assert len(reads) == 9  # three principals read the three ids anyone listed
    leaked = [p for p in reads if p.principal and p.principal.name == "bob"
              and p.expectation.target == "space-hr"]  # type: ignore[union-attr]
    verdict = judge(leaked[0], Response(200, b'{"id": "space-hr"}'))
    assert verdict.outcome is Outcome.FAIL and verdict.severity == "security"
    assert verdict.detail == "served space-hr (200), which 1.0.0 refused"
    # The report names a read by its template, not by an id the release before listed.
    assert str(leaked[0].request) == "GET /api/spaces/{id}"
    assert leaked[0].request.target == "/api/spaces/space-hr"
    assert failures(sees) == []


def test_a_grant_allow_new_names_passes_and_one_it_does_not_fails() -> None:
    assert failures({**MEMBERS, "carol": [*MEMBERS["carol"], "space-finance"]}) == []
    found = failures({**MEMBERS, "bob": ["space-finance", "space-eng"]})
    assert found and all("bob" in line and "space-eng" in line for line in found)


def test_a_rollback_is_held_to_the_baseline_without_allow_new() -> None:
    base = baseline().for_rollback()
    assert failures({**MEMBERS, "carol": [*MEMBERS["carol"], "space-finance"]}, base)


def test_a_member_refused_where_served_before_is_a_functional_failure() -> None:
    base = baseline()
    probe = next(p for p in drift.round_probes(base)
                 if p.principal and p.principal.name == "alice" and str(p.request) ==
                 "GET /api/spaces")
    verdict = judge(probe, Response(403, b"{}"))
    assert (verdict.outcome, verdict.severity) == (Outcome.FAIL, "functional")
    assert verdict.detail == "refused with 403, where 1.0.0 served it"


@pytest.mark.parametrize(("answer", "outcome", "retryable"), [
    (Response(503, b""), Outcome.ERROR, True),
    (Response(401, b"{}"), Outcome.ERROR, False),  # a token was sent: the credential is broken
    (Response(200, b"<html>"), Outcome.FAIL, False),  # a listing that cannot be read
    (Response(200, b'{"items": []}'), Outcome.FAIL, False),
])
def test_answers_that_cannot_be_compared_never_pass(answer: Response, outcome: Outcome,
                                                    retryable: bool) -> None:
    base = baseline()
    probe = drift.round_probes(base)[0]
    verdict = judge(probe, answer)
    assert (verdict.outcome, verdict.retryable) == (outcome, retryable)


@pytest.mark.parametrize(("base", "note"), [
    (None, drift.NO_RUN), (drift.nothing_live(load().drifts, "s"), drift.NOTHING_LIVE)])
def test_without_a_baseline_the_listings_pass_with_a_note(base: drift.Baseline | None,
                                                          note: str) -> None:
    probes = drift.round_probes(base) if base else drift.unbaselined(load().drifts)
    assert len(probes) == 6  # no reads: there is nothing to read against
    verdict = judge(probes[0], listing(ALL))
    assert verdict.outcome is Outcome.PASS and verdict.detail.startswith(note)


# --- the baseline as kept -----------------------------------------------------------------------

def test_the_journal_keeps_fingerprints_never_ids_and_compares_the_same_after_reading() -> None:
    base = baseline()
    text = json.dumps(base.to_json())
    assert not any(space in text for space in ALL)
    again = drift.Baseline.from_json(json.loads(text), base.drifts)
    assert again.listings == base.listings and again.reads == base.reads
    leak = {**MEMBERS, "bob": ALL}
    assert failures(leak, again)  # listings still compared after a resume


def test_a_salt_makes_two_runs_fingerprints_differ() -> None:
    assert checks.fingerprint("a", "space-hr") != checks.fingerprint("b", "space-hr")


@pytest.mark.parametrize(("count", "limit", "expected"), [
    (3, 50, ["0", "1", "2"]), (10, 5, ["0", "2", "4", "6", "8"]), (7, 1, ["0"])])
def test_reads_are_sampled_evenly_up_to_max_ids(count: int, limit: int,
                                                expected: list[str]) -> None:
    assert list(drift.sample_evenly([str(i) for i in range(count)], limit)) == expected


def test_probes_per_principal_and_request() -> None:
    """The cost: per principal, one listing per request and one read per listed id."""
    base = baseline()
    probes = drift.round_probes(base)
    assert len(probes) == 3 * 2 + 3 * 3


def test_reports_say_what_a_passing_answer_would_have_been() -> None:
    base = baseline()
    said = {expected(p) for p in drift.round_probes(base)}
    assert "served, no id at $.spaces[*].id that 1.0.0 did not show" in said
    assert "refused, as 1.0.0 did" in said and "served, as 1.0.0 did" in said
