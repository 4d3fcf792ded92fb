"""The checks file: which probes a verification sends, and how a bad file is refused.

The authorization matrix is the heart of the contract: every principal against every resource,
allowed only where the allow-list says so and denied everywhere else (deny by default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wavegate import redact
from wavegate.config import checks
from wavegate.config.checks import Allowed, Denied, Expect, JsonIds, Request
from wavegate.engine import credentials
from wavegate.errors import EXIT_BAD_INPUT, InputError

REPO = Path(__file__).resolve().parents[2]
FILE = Path("/apps/library/checks.yaml")

SUITE = """\
principals:
  alice:     {token_env: T_ALICE}
  bob:       {token_env: T_BOB}
  anonymous: {}
checks:
  - name: serving the new version
    request: GET /version
    expect: {status: 200, json: {version: "1.2.3"}}
  - name: space access
    authz_matrix:
      principals: [alice, bob, anonymous]
      resources:
        space-eng:     {request: GET /api/spaces/space-eng,     marker: space-eng}
        space-finance: {request: GET /api/spaces/space-finance, marker: space-finance}
        space-hr:      {request: GET /api/spaces/space-hr,      marker: space-hr}
      allow:
        alice: [space-eng]
        bob:   [space-finance]
  - name: listing
    as: alice
    request: GET /api/spaces
    expect: {status: 200, json_ids: {path: "$.spaces[*].id", subset_of: [space-eng]}}
"""


def load(text: str = SUITE) -> checks.Suite:
    return checks.load(text, FILE)


def matrix(suite: checks.Suite) -> dict[tuple[str, str], type]:
    """(principal, request path) -> Allowed or Denied, for the matrix probes."""
    return {(p.principal.name if p.principal else "-", p.request.path): type(p.expectation)
            for p in suite.probes if p.check == "space access"}


# --- what a suite expands to --------------------------------------------------------------------

def test_a_matrix_expands_to_every_principal_against_every_resource() -> None:
    pairs = matrix(load())
    assert len(pairs) == 9
    allowed = {pair for pair, kind in pairs.items() if kind is Allowed}
    assert allowed == {("alice", "/api/spaces/space-eng"), ("bob", "/api/spaces/space-finance")}
    denied = {pair for pair, kind in pairs.items() if kind is Denied}
    assert len(denied) == 7
    # Deny by default: anonymous is granted nothing, and nobody sees space-hr.
    assert {path for who, path in denied if who == "anonymous"} == {
        "/api/spaces/space-eng", "/api/spaces/space-finance", "/api/spaces/space-hr"}
    assert all(kind is Denied for (_, path), kind in pairs.items() if path.endswith("hr"))


def test_matrix_probes_carry_the_marker_and_security_severity_in_principal_order() -> None:
    probes = [p for p in load().probes if p.check == "space access"]
    assert [(p.principal.name if p.principal else None) for p in probes] == (
        ["alice"] * 3 + ["bob"] * 3 + ["anonymous"] * 3)
    first = probes[0]
    assert first.request == Request("GET", "/api/spaces/space-eng")
    assert first.expectation == Allowed("space-eng")
    assert probes[1].expectation == Denied("space-finance")
    assert {p.severity for p in probes} == {"security"}


def test_single_checks_keep_their_order_expectation_and_principal() -> None:
    suite = load()
    version = suite.probes[0]
    assert version.check == "serving the new version"
    assert version.principal is None  # no `as`: sent without a token
    assert str(version.request) == "GET /version"
    assert version.expectation == Expect(status=(200,), json={"version": "1.2.3"})
    assert version.severity == "functional"
    listing = suite.probes[-1]
    assert listing.principal is not None and listing.principal.name == "alice"
    assert listing.expectation == Expect(
        json_ids=JsonIds(path="$.spaces[*].id", subset_of=("space-eng",)))
    assert listing.severity == "security"  # a list check guards against leaks by default


def test_principals_know_whether_they_send_a_token_and_where_they_are_written() -> None:
    principals = load().principals
    assert principals["alice"].sends_token and principals["bob"].sends_token
    assert not principals["anonymous"].sends_token
    assert (principals["alice"].line, principals["anonymous"].line) == (2, 4)


@pytest.mark.parametrize(("expect", "expected"), [
    pytest.param("{status: [200, 204]}", Expect(status=(200, 204)), id="status-list"),
    pytest.param("{status: 404}", Expect(status=(404,)), id="status-single"),
    pytest.param("{json_ids: {path: '$.ids', equals: [a, b]}}",
                 Expect(json_ids=JsonIds("$.ids", equals=("a", "b"))), id="json-ids-equals"),
    pytest.param("{json_ids: {path: '$.ids', equals: []}}",
                 Expect(json_ids=JsonIds("$.ids", equals=())), id="json-ids-equals-empty"),
    pytest.param("{json_ids: {path: '$.ids', subset_of: []}}",
                 Expect(json_ids=JsonIds("$.ids", subset_of=())), id="json-ids-subset-empty"),
])
def test_expect_forms(expect: str, expected: Expect) -> None:
    suite = load(f"checks:\n  - name: c\n    request: GET /x\n    expect: {expect}\n")
    assert suite.probes[0].expectation == expected


def test_explicit_severity_overrides_the_default() -> None:
    suite = load("checks:\n  - name: c\n    request: GET /x\n    severity: security\n")
    assert suite.probes[0].severity == "security"


def test_the_library_app_checks_expand_to_twelve_probes() -> None:
    text = (REPO / "manifests" / "library-app" / "checks.yaml").read_text(encoding="utf-8")
    suite = checks.load(text.replace("${version}", "1.0.0"), FILE)
    assert len(suite.probes) == 1 + 9 + 1 + 1
    assert sum(isinstance(p.expectation, Allowed) for p in suite.probes) == 2
    assert sum(isinstance(p.expectation, Denied) for p in suite.probes) == 7


# --- refusals: file, line, field ------------------------------------------------------------------

def edited(old: str, new: str) -> str:
    assert SUITE.count(old) == 1
    return SUITE.replace(old, new)


BROKEN = [
    pytest.param(edited("    as: alice\n", "    as: mallory\n"), 20, "checks[2].as",
                 "unknown principal 'mallory' (not under 'principals')", id="unknown-as"),
    pytest.param(edited("[alice, bob, anonymous]", "[alice, eve]"), 11,
                 "checks[1].authz_matrix.principals[1]", "unknown principal 'eve'",
                 id="unknown-matrix-principal"),
    pytest.param(edited("alice: [space-eng]", "alice: [space-eng, space-ops]"), 17,
                 "checks[1].authz_matrix.allow.alice[1]", "unknown resource 'space-ops'",
                 id="unknown-resource-in-allow"),
    pytest.param(edited("bob:   [space-finance]", "bob:   [space-finance]\n        eve: []"),
                 19, "checks[1].authz_matrix.allow.eve", "unknown field",
                 id="allow-for-principal-outside-matrix"),
    pytest.param(edited("    request: GET /version\n", "    request: /version\n"), 7,
                 "checks[0].request", "expected 'METHOD /path', got '/version'",
                 id="request-without-method"),
    pytest.param(edited("    request: GET /version\n", "    request: get /version\n"), 7,
                 "checks[0].request", "expected 'METHOD /path'", id="request-lowercase-method"),
    pytest.param(edited("    request: GET /version\n", "    request: GET version\n"), 7,
                 "checks[0].request", "expected 'METHOD /path'", id="request-path-no-slash"),
    pytest.param(edited("  - name: space access\n",
                        "  - name: space access\n    request: GET /x\n"), 9,
                 "checks[1]", "exactly one of 'request', 'authz_matrix' or 'access_drift'",
                 id="request-and-matrix"),
    pytest.param(edited("    request: GET /version\n", ""), 6,
                 "checks[0]", "exactly one of 'request', 'authz_matrix' or 'access_drift'",
                 id="neither-request-nor-matrix"),
    pytest.param(edited("  - name: serving the new version\n    request: GET /version\n",
                        "  - request: GET /version\n"), 6,
                 "checks[0]", "missing required field 'name'", id="check-without-name"),
    pytest.param(edited("{token_env: T_BOB}", "{token_env: T_BOB, token_file: bob.txt}"), 3,
                 "principals.bob", "at most one of token_env, token_file or token_command",
                 id="principal-env-and-file"),
    pytest.param(edited("marker: space-hr}", "marker: }"), 15,
                 "checks[1].authz_matrix.resources.space-hr.marker",
                 "expected a non-empty string", id="resource-empty-marker"),
    pytest.param(edited(",      marker: space-hr}", "}"), 15,
                 "checks[1].authz_matrix.resources.space-hr", "missing required field 'marker'",
                 id="resource-without-marker"),
    pytest.param(edited("subset_of: [space-eng]", "subset_of: [a], equals: [a]"), 22,
                 "checks[2].expect.json_ids", "exactly one of 'subset_of' or 'equals'",
                 id="json-ids-subset-and-equals"),
    pytest.param(edited('path: "$.spaces[*].id"', "path: spaces"), 22,
                 "checks[2].expect.json_ids.path", "starting with $", id="json-path-no-dollar"),
    pytest.param(edited("{status: 200, json:", "{status: 20, json:"), 8,
                 "checks[0].expect.status", "expected a whole number >= 100, got 20",
                 id="status-too-small"),
    pytest.param(edited("    as: alice\n", "    as: alice\n    severity: critical\n"), 21,
                 "checks[2].severity", "expected one of security, functional",
                 id="unknown-severity"),
    pytest.param(edited("  - name: listing\n", "  - name: listing\n    retries: 3\n"), 20,
                 "checks[2].retries", "unknown field", id="unknown-check-field"),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), BROKEN)
def test_a_broken_checks_file_names_file_line_and_field(
    text: str, line: int, field: str, message: str,
) -> None:
    with pytest.raises(InputError) as caught:
        load(text)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert str(caught.value).startswith(f"{FILE}:{line}: {field}: "), str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [
    ("principals: {}\n", "missing required field 'checks'"),
    ("checks: []\n", "a checks file needs at least one check"),
    ("checks: [{name: c, request: GET /x}]\nextra: 1\n", "unknown field"),
])
def test_a_checks_file_without_checks_is_refused(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load(text)


def test_a_token_written_into_the_checks_file_is_refused_without_echoing_it() -> None:
    text = edited("{token_env: T_BOB}", "{token: bob-literal-secret-42}")
    with pytest.raises(InputError) as caught:
        load(text)
    assert str(caught.value).startswith(f"{FILE}:3: principals.bob.token: unknown field")
    assert "bob-literal-secret-42" not in str(caught.value)


# --- credentials: tokens from the environment or files, never from checks.yaml -------------------

def test_tokens_come_from_the_environment_and_anonymous_sends_none() -> None:
    tokens = credentials.resolve(load(), {"T_ALICE": "alice-tok-111", "T_BOB": "bob-tok-222"})
    assert tokens == {"alice": "alice-tok-111", "bob": "bob-tok-222", "anonymous": None}


def test_resolved_tokens_are_registered_for_redaction() -> None:
    credentials.resolve(load(), {"T_ALICE": "alice-tok-redact-me", "T_BOB": "bob-tok-333"})
    assert redact.scrub("Bearer alice-tok-redact-me") == f"Bearer {redact.MASK}"


def test_a_token_file_is_read_relative_to_the_checks_file_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "alice.token").write_text("alice-file-tok\n", encoding="utf-8")
    suite = checks.load("principals:\n  alice: {token_file: secrets/alice.token}\n"
                        "checks: [{name: c, as: alice, request: GET /x}]\n",
                        tmp_path / "checks.yaml")
    assert suite.principals["alice"].token_file == tmp_path / "secrets" / "alice.token"
    assert credentials.resolve(suite, {}) == {"alice": "alice-file-tok"}


@pytest.mark.parametrize(("environ", "message"), [
    pytest.param({"T_BOB": "bob-present-secret"}, "variable T_ALICE is not set", id="unset"),
    pytest.param({"T_ALICE": "", "T_BOB": "bob-present-secret"}, "variable T_ALICE is not set",
                 id="empty"),
])
def test_a_missing_token_variable_names_the_variable_and_the_principals_line(
    environ: dict[str, str], message: str,
) -> None:
    with pytest.raises(InputError) as caught:
        credentials.resolve(load(), environ)
    text = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert text == f"{FILE}:2: principals.alice: token for principal 'alice': {message}"
    assert "bob-present-secret" not in text


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(None, "cannot read", id="missing-file"),
    pytest.param("  \n", "is empty", id="empty-file"),
])
def test_an_unreadable_token_file_names_the_file_and_principal(
    tmp_path: Path, content: str | None, message: str,
) -> None:
    if content is not None:
        (tmp_path / "bob.token").write_text(content, encoding="utf-8")
    suite = checks.load("principals:\n  anonymous: {}\n  bob: {token_file: bob.token}\n"
                        "checks: [{name: c, as: bob, request: GET /x}]\n",
                        tmp_path / "checks.yaml")
    with pytest.raises(InputError) as caught:
        credentials.resolve(suite, {})
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'checks.yaml'}:3: principals.bob: token for principal "
                           f"'bob': ")
    assert message in text and str(tmp_path / "bob.token") in text

