"""Credentials live as long as the run: token files read again, helper commands re-run when
their token expires, and a 401 after a rotation retried once with a fresh token.

Helper commands are real processes (small Python scripts); expiry is judged on an injected wall
clock, so no test waits for a token to expire.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit import loopback
from wavegate import redact
from wavegate.config import checks
from wavegate.decide.verdict import Outcome
from wavegate.engine import credentials, probes
from wavegate.errors import InputError

HELPER = """\
import json, pathlib, sys
runs = pathlib.Path(sys.argv[1])
count = len(runs.read_text()) if runs.exists() else 0
runs.write_text("x" * (count + 1))
answer = pathlib.Path(sys.argv[2]).read_text()
if answer == "FAIL":
    print("helper-stdout-secret-9921"); sys.exit(7)
print(answer)
"""


class Helper:
    """A token_command whose next answer the test writes, and which counts its runs."""

    def __init__(self, folder: Path) -> None:
        self.script, self.runs = folder / "helper.py", folder / "runs"
        self.answer_file = folder / "answer"
        self.script.write_text(HELPER)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.runs), str(self.answer_file)]

    def answer(self, text: str) -> None:
        self.answer_file.write_text(text)

    @property
    def count(self) -> int:
        return len(self.runs.read_text()) if self.runs.exists() else 0


class Wall:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def suite_for(folder: Path, principal: str) -> checks.Suite:
    return checks.load(f"principals:\n  alice: {principal}\n"
                       "checks: [{name: listing, as: alice, request: GET /api/spaces}]\n",
                       folder / "checks.yaml")


def expiring(token: str, at: float) -> str:
    return json.dumps({"token": token, "expires_at": datetime.fromtimestamp(at, UTC)
                       .isoformat().replace("+00:00", "Z")})


@pytest.fixture
def helper(tmp_path: Path) -> Helper:
    return Helper(tmp_path)


def command_suite(tmp_path: Path, helper: Helper) -> checks.Suite:
    return suite_for(tmp_path, json.dumps({"token_command": helper.argv}))


# --- token_command --------------------------------------------------------------------------

def test_a_plain_token_command_is_run_once_and_its_stdout_is_the_token(
        tmp_path: Path, helper: Helper) -> None:
    helper.answer("cmd-plain-token-5521\n")
    tokens = credentials.resolve(command_suite(tmp_path, helper), {})
    assert tokens["alice"] == tokens["alice"] == "cmd-plain-token-5521"
    assert helper.count == 1
    assert redact.scrub("Bearer cmd-plain-token-5521") == f"Bearer {redact.MASK}"


def test_a_token_with_an_expiry_is_cached_until_shortly_before_it_then_fetched_again(
        tmp_path: Path, helper: Helper) -> None:
    wall = Wall()
    helper.answer(expiring("cmd-first-token-7781", wall.now + 600))
    tokens = credentials.resolve(command_suite(tmp_path, helper), {}, wall=wall)
    wall.now += 500
    assert tokens["alice"] == "cmd-first-token-7781" and helper.count == 1
    helper.answer(expiring("cmd-second-token-7782", wall.now + 600))
    wall.now += 80  # 20 s before the expiry: inside the refresh margin
    assert tokens["alice"] == "cmd-second-token-7782" and helper.count == 2
    assert redact.scrub("cmd-second-token-7782") == redact.MASK


def test_a_failing_token_command_is_exit_2_naming_the_principal_and_never_its_output(
        tmp_path: Path, helper: Helper) -> None:
    helper.answer("FAIL")
    with pytest.raises(InputError) as caught:
        credentials.resolve(command_suite(tmp_path, helper), {})
    text = str(caught.value)
    assert caught.value.exit_code == 2
    assert text.startswith(f"{tmp_path / 'checks.yaml'}:2: principals.alice: token for "
                           "principal 'alice': token_command ")
    assert "exited with 7" in text and "helper-stdout-secret-9921" not in text


@pytest.mark.parametrize(("output", "problem"), [
    ("", "printed nothing"),
    ('{"token": 5}', "without a string 'token'"),
    ('{"token": "t-123456", "expires_at": "soon"}', "not an RFC 3339 time"),
    ('{"token": "t-123456", "expires_at": "2030-01-01T00:00:00"}', "needs a time zone"),
])
def test_helper_output_that_gives_no_token_says_why(output: str, problem: str) -> None:
    with pytest.raises(credentials.Unreadable, match=problem):
        credentials.parse_output(output, "token_command helper")


def test_a_helper_that_fails_mid_run_keeps_the_last_token(tmp_path: Path, helper: Helper) -> None:
    wall = Wall()
    helper.answer(expiring("cmd-kept-token-3310", wall.now + 60))
    tokens = credentials.resolve(command_suite(tmp_path, helper), {}, wall=wall)
    helper.answer("FAIL")
    wall.now += 3600
    assert tokens["alice"] == "cmd-kept-token-3310"  # its 401 will count as a check error


def test_a_relative_helper_path_is_found_beside_the_checks_file(tmp_path: Path) -> None:
    suite = suite_for(tmp_path, "{token_command: [bin/token, --audience, library]}")
    assert suite.principals["alice"].token_command == (
        str(tmp_path / "bin" / "token"), "--audience", "library")
    assert suite.principals["alice"].sends_token


# --- token_file -----------------------------------------------------------------------------

def test_a_token_file_is_read_again_at_every_lookup(tmp_path: Path) -> None:
    token_file = tmp_path / "alice.token"
    token_file.write_text("file-token-before-1111\n")
    tokens = credentials.resolve(suite_for(tmp_path, "{token_file: alice.token}"), {})
    token_file.write_text("file-token-after-2222\n")
    assert tokens["alice"] == "file-token-after-2222"
    assert redact.scrub("file-token-after-2222") == redact.MASK
    token_file.unlink()  # mid-rotation: the last token read is kept
    assert tokens["alice"] == "file-token-after-2222"


# --- a 401 after a rotation, through a verification round -------------------------------------

def accepting(valid: list[str]) -> loopback.Handler:
    """An endpoint that accepts only the token currently in `valid[0]`."""
    def handler(request: loopback.Request) -> loopback.Reply:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return loopback.Reply(200 if sent == valid[0] else 401, b"{}")
    return handler


def tokens_sent(server: loopback.Server) -> list[str]:
    return [request.headers.get("Authorization", "").removeprefix("Bearer ")
            for request in server.requests]


def round_outcome(suite: checks.Suite, tokens: credentials.Tokens,
                  server: loopback.Server) -> tuple[Outcome, str]:
    result = probes.run_round(server.url, suite, tokens, deadline=1.0,
                              sleep=loopback.no_pause).results[0]
    return result.verdict.outcome, result.verdict.detail


def test_a_401_after_a_rotation_is_retried_once_with_a_fresh_token(
        tmp_path: Path, helper: Helper, serve: loopback.Serve) -> None:
    helper.answer("cmd-old-token-4401")  # no expiry: cached until a server refuses it
    suite = command_suite(tmp_path, helper)
    tokens = credentials.resolve(suite, {})
    server = serve(accepting(["cmd-new-token-4402"]))
    helper.answer("cmd-new-token-4402")  # the identity provider rotated
    assert round_outcome(suite, tokens, server) == (Outcome.PASS, "got 200")
    assert tokens_sent(server) == ["cmd-old-token-4401", "cmd-new-token-4402"]


def test_a_401_with_no_newer_token_is_an_error_after_one_request(
        tmp_path: Path, helper: Helper, serve: loopback.Serve) -> None:
    helper.answer("cmd-revoked-token-5501")
    suite = command_suite(tmp_path, helper)
    tokens = credentials.resolve(suite, {})
    server = serve(accepting(["someone-else-0000"]))
    outcome, detail = round_outcome(suite, tokens, server)
    assert outcome is Outcome.ERROR and "401 although a token was sent" in detail
    assert tokens_sent(server) == ["cmd-revoked-token-5501"]  # the same token: not resent
    assert helper.count == 2


def test_a_token_file_rotated_between_rounds_is_sent_from_the_next_round(
        tmp_path: Path, serve: loopback.Serve) -> None:
    token_file = tmp_path / "alice.token"
    token_file.write_text("file-round-one-6601")
    suite = suite_for(tmp_path, "{token_file: alice.token}")
    tokens = credentials.resolve(suite, {})
    valid = ["file-round-one-6601"]
    server = serve(accepting(valid))
    assert round_outcome(suite, tokens, server)[0] is Outcome.PASS
    valid[0] = "file-round-two-6602"
    token_file.write_text("file-round-two-6602")
    assert round_outcome(suite, tokens, server)[0] is Outcome.PASS
    assert tokens_sent(server) == ["file-round-one-6601", "file-round-two-6602"]
