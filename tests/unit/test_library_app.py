"""library_app, the sample workload: its authorization rules, its HTTP answers, its process.

Servers run in a thread on 127.0.0.1:0; process behaviour (crash, SIGTERM, startup line) runs
`python -m library_app` as a subprocess, since that is how wavegate's local fleet starts it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from library_app import spaces
from library_app.faults import Faults, parse_faults
from library_app.server import App, LibraryServer, make_server
from library_app.tokens import Tokens

SRC = Path(__file__).resolve().parents[2] / "src"
TOKENS = {
    "LIBRARY_TOKEN_ALICE": "alice-secret-token",
    "LIBRARY_TOKEN_BOB": "bob-secret-token",
    "LIBRARY_TOKEN_CAROL": "carol-secret-token",
}
ALL_IDS = ["space-eng", "space-finance", "space-hr"]
MEMBER_IDS = {"alice": ["space-eng"], "bob": ["space-finance"], "carol": ["space-eng", "space-hr"]}

Get = Callable[..., tuple[int, dict[str, object]]]
Start = Callable[..., Get]


# --- helpers -------------------------------------------------------------------------------


def _request(url: str, user: str | None, method: str, header: str | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    if user is not None:
        req.add_header("Authorization", f"Bearer {TOKENS[f'LIBRARY_TOKEN_{user.upper()}']}")
    if header is not None:
        req.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


@pytest.fixture
def start() -> Iterator[Start]:
    """start(version=..., **env) -> get(path, as_user=None, method="GET", authorization=None)."""
    running: list[tuple[LibraryServer, threading.Thread]] = []

    def _start(version: str = "1.0.0", **env: str) -> Get:
        server = make_server("127.0.0.1", 0, version, {**TOKENS, **env})
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        running.append((server, thread))
        base = f"http://127.0.0.1:{server.server_address[1]}"

        def get(
            path: str,
            as_user: str | None = None,
            method: str = "GET",
            authorization: str | None = None,
        ) -> tuple[int, dict[str, object]]:
            status, raw = _request(base + path, as_user, method, authorization)
            return status, json.loads(raw) if raw else {}

        return get

    yield _start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


def _ids(body: dict[str, object]) -> list[str]:
    listed = body["spaces"]
    assert isinstance(listed, list)
    return [s["id"] for s in listed]


def _spawn(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    full_env = {**os.environ, "PYTHONPATH": str(SRC), "PORT": "0", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "library_app", "--version", "1.0.0", *args],
        env=full_env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


# --- the rules, pure -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "env", "enabled"),
    [
        ("1.0.0", {}, True),
        ("2.0.0", {}, False),
        ("2.0.1", {}, True),
        ("1.0.0", {"LIBRARY_MEMBER_FILTER": "off"}, False),
        ("1.0.0", {"LIBRARY_MEMBER_FILTER": "on"}, True),
    ],
)
def test_member_filter_is_off_only_in_2_0_0_or_when_switched_off(
    version: str, env: dict[str, str], enabled: bool
) -> None:
    assert spaces.member_filter_enabled(version, env) is enabled


@pytest.mark.parametrize(
    ("leak", "user", "listed", "read"),
    [
        (spaces.Leak.NONE, "alice", ["space-eng"], ["space-eng"]),
        (spaces.Leak.NONE, "carol", ["space-eng", "space-hr"], ["space-eng", "space-hr"]),
        (spaces.Leak.LIST_ONLY, "alice", ALL_IDS, ["space-eng"]),
        (spaces.Leak.BOB_ONLY, "bob", ALL_IDS, ALL_IDS),
        (spaces.Leak.BOB_ONLY, "alice", ["space-eng"], ["space-eng"]),
        (spaces.Leak.SEARCH, "alice", ["space-eng"], ["space-eng"]),
        (spaces.Leak.BOB_READS, "bob", ["space-finance"], ALL_IDS),
        (spaces.Leak.BOB_READS, "alice", ["space-eng"], ["space-eng"]),
    ],
)
def test_rules_per_leak(leak: spaces.Leak, user: str, listed: list[str], read: list[str]) -> None:
    policy = spaces.Policy(leak=leak)
    data = spaces.BUILTIN_SPACES
    assert [s.id for s in spaces.listable(data, user, policy)] == listed
    assert [i for i in ALL_IDS if spaces.readable(data, i, user, policy)] == read


def test_unknown_leak_or_fault_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ValueError, match="LIBRARY_LEAK"):
        spaces.parse_leak("list_only")
    with pytest.raises(ValueError, match="LIBRARY_FAIL"):
        parse_faults("error-5xx-first-")


@pytest.mark.parametrize(
    ("value", "faults"),
    [
        ("", Faults()),
        ("crash", Faults(crash=True)),
        ("never-ready", Faults(never_ready=True)),
        ("error-5xx", Faults(api_errors_always=True)),
        ("error-5xx-first-2", Faults(api_errors_first=2)),
        ("huge-body", Faults(huge_body_mib=256)),
        ("huge-body-32", Faults(huge_body_mib=32)),
        ("trickle", Faults(trickle=True)),
        ("hang", Faults(hang=True)),
        ("ready-when:/tmp/go", Faults(ready_when="/tmp/go")),
    ],
)
def test_parse_faults(value: str, faults: Faults) -> None:
    assert parse_faults(value) == faults


@pytest.mark.parametrize(
    ("header", "user"),
    [
        ("Bearer alice-secret-token", "alice"),
        ("bearer  bob-secret-token ", "bob"),
        ("Bearer wrong", None),
        ("Basic alice-secret-token", None),
        ("alice-secret-token", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_tokens_identify_the_caller(header: str | None, user: str | None) -> None:
    assert Tokens.from_env(TOKENS).user_for(header) == user


def test_tokens_come_only_from_non_empty_env_and_never_show_in_repr() -> None:
    tokens = Tokens.from_env({**TOKENS, "LIBRARY_TOKEN_DAVE": "", "OTHER": "x"})
    assert tokens.users == {"alice", "bob", "carol"}
    assert tokens.user_for("Bearer ") is None
    assert "secret" not in repr(tokens)


def test_a_tokens_file_rotates_a_users_token_under_a_running_process(tmp_path: Path) -> None:
    rotated = tmp_path / "tokens"
    tokens = Tokens.from_env({**TOKENS, "LIBRARY_TOKENS_FILE": str(rotated)})
    assert tokens.user_for("Bearer alice-secret-token") == "alice"  # no file yet
    rotated.write_text("alice=alice-rotated-token\n")
    assert tokens.user_for("Bearer alice-rotated-token") == "alice"
    assert tokens.user_for("Bearer alice-secret-token") is None
    assert tokens.user_for("Bearer bob-secret-token") == "bob"  # not named: unchanged


# --- HTTP ----------------------------------------------------------------------------------


def test_health_and_version_need_no_token(start: Start) -> None:
    get = start(version="1.2.3")
    assert get("/healthz") == (200, {"status": "ok"})
    assert get("/version") == (200, {"version": "1.2.3"})


def test_member_reads_own_space(start: Start) -> None:
    get = start()
    assert get("/api/spaces/space-eng", as_user="alice") == (
        200,
        {"id": "space-eng", "name": "Engineering", "members": ["alice", "carol"]},
    )


def test_non_member_gets_the_same_404_as_a_missing_space(start: Start) -> None:
    get = start()
    assert get("/api/spaces/space-finance", as_user="alice") == (404, {"error": "not found"})
    assert get("/api/spaces/space-nope", as_user="alice") == (404, {"error": "not found"})


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_list_shows_only_member_spaces(start: Start, user: str) -> None:
    status, body = start()("/api/spaces", as_user=user)
    assert status == 200
    assert _ids(body) == MEMBER_IDS[user]


@pytest.mark.parametrize("path", ["/api/spaces", "/api/spaces/space-eng", "/api/search?q=eng"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic YWxpY2U6eA=="])
def test_no_or_invalid_token_is_401(start: Start, path: str, authorization: str | None) -> None:
    assert start()(path, authorization=authorization) == (401, {"error": "unauthorized"})


def test_unknown_paths_404_and_other_methods_405(start: Start) -> None:
    get = start()
    assert get("/nope")[0] == 404
    assert get("/api/nope", as_user="alice")[0] == 404
    assert get("/api/spaces/space-eng/extra", as_user="alice")[0] == 404
    assert get("/api/spaces", as_user="alice", method="POST")[0] == 405
    assert get("/healthz", method="DELETE")[0] == 405


@pytest.mark.parametrize(
    ("version", "env"), [("2.0.0", {}), ("1.0.0", {"LIBRARY_MEMBER_FILTER": "off"})]
)
def test_regression_leaks_list_and_direct_read(
    start: Start, version: str, env: dict[str, str]
) -> None:
    get = start(version=version, **env)
    assert _ids(get("/api/spaces", as_user="alice")[1]) == ALL_IDS
    assert get("/api/spaces/space-finance", as_user="alice")[0] == 200


def test_leak_list_only(start: Start) -> None:
    get = start(LIBRARY_LEAK="list-only")
    assert _ids(get("/api/spaces", as_user="alice")[1]) == ALL_IDS
    assert get("/api/spaces/space-finance", as_user="alice")[0] == 404


def test_leak_bob_only(start: Start) -> None:
    get = start(LIBRARY_LEAK="bob-only")
    assert _ids(get("/api/spaces", as_user="bob")[1]) == ALL_IDS
    assert get("/api/spaces/space-eng", as_user="bob")[0] == 200
    assert _ids(get("/api/spaces", as_user="alice")[1]) == ["space-eng"]
    assert get("/api/spaces/space-finance", as_user="alice")[0] == 404


def test_leak_search_leaves_list_and_read_correct(start: Start) -> None:
    get = start(LIBRARY_LEAK="search")
    assert _ids(get("/api/search?q=fin", as_user="alice")[1]) == ["space-finance"]
    assert _ids(get("/api/search?q=space", as_user="alice")[1]) == ALL_IDS
    assert _ids(get("/api/spaces", as_user="alice")[1]) == ["space-eng"]
    assert get("/api/spaces/space-finance", as_user="alice")[0] == 404


def test_release_2_1_0_leaks_through_search_only(start: Start) -> None:
    get = start(version=spaces.SEARCH_LEAK_VERSION)
    assert _ids(get("/api/search?q=space", as_user="alice")[1]) == ALL_IDS
    assert _ids(get("/api/spaces", as_user="alice")[1]) == ["space-eng"]
    assert get("/api/spaces/space-finance", as_user="alice")[0] == 404


def test_search_by_post_answers_as_search_by_get() -> None:
    app = App.from_env("1.0.0", {"LIBRARY_TOKEN_ALICE": "t-alice"})
    server = LibraryServer(("127.0.0.1", 0), app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/search"
        answer = httpx.post(url, json={"q": "space"}, headers={"Authorization": "Bearer t-alice"})
        assert answer.status_code == 200 and _ids(answer.json()) == ["space-eng"]
        assert httpx.post(url, content=b"q=space", headers={
            "Authorization": "Bearer t-alice"}).status_code == 400
    finally:
        server.shutdown()
        server.server_close()


def test_search_filters_without_the_leak(start: Start) -> None:
    get = start()
    assert _ids(get("/api/search?q=fin", as_user="alice")[1]) == []
    assert _ids(get("/api/search?q=SPACE", as_user="carol")[1]) == ["space-eng", "space-hr"]
    assert _ids(get("/api/search", as_user="bob")[1]) == ["space-finance"]


def test_library_data_overrides_the_dataset(start: Start, tmp_path: Path) -> None:
    data = tmp_path / "spaces.json"
    data.write_text(json.dumps({"spaces": [{"id": "s1", "name": "One", "members": ["bob"]}]}))
    get = start(LIBRARY_DATA=str(data))
    assert _ids(get("/api/spaces", as_user="bob")[1]) == ["s1"]
    assert get("/api/spaces/space-finance", as_user="bob")[0] == 404


def test_bad_library_data_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "spaces.json"
    data.write_text(json.dumps({"spaces": [{"id": "s1", "members": "bob"}]}))
    with pytest.raises(ValueError, match=r"LIBRARY_DATA=.*spaces\[0\]"):
        make_server("127.0.0.1", 0, "1.0.0", {"LIBRARY_DATA": str(data)})


# --- failure injection ---------------------------------------------------------------------


def test_fail_never_ready_answers_503_on_healthz_forever(start: Start) -> None:
    get = start(LIBRARY_FAIL="never-ready")
    assert [get("/healthz")[0] for _ in range(3)] == [503, 503, 503]
    assert get("/api/spaces", as_user="alice")[0] == 200


def test_fail_error_5xx_answers_500_on_every_api_request(start: Start) -> None:
    get = start(LIBRARY_FAIL="error-5xx")
    assert [get("/api/spaces", as_user="alice")[0] for _ in range(3)] == [500, 500, 500]
    assert get("/api/spaces/space-eng")[0] == 500
    assert get("/healthz")[0] == 200


def test_fail_error_5xx_first_n_then_recovers(start: Start) -> None:
    get = start(LIBRARY_FAIL="error-5xx-first-2")
    statuses = [get("/api/spaces", as_user="alice")[0] for _ in range(4)]
    assert statuses == [500, 500, 200, 200]


def test_fail_crash_exits_1_before_listening() -> None:
    proc = _spawn({**TOKENS, "LIBRARY_FAIL": "crash"})
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "listening on" not in stderr


def test_bad_configuration_exits_2_with_one_line() -> None:
    proc = _spawn({"LIBRARY_LEAK": "everything"})
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert stderr.startswith("library_app: LIBRARY_LEAK='everything': expected one of")


# --- the process ---------------------------------------------------------------------------


def test_sigterm_exits_0_within_2s_and_startup_line_carries_no_token() -> None:
    proc = _spawn(TOKENS)
    try:
        assert proc.stderr is not None
        # select first, so a process that never starts fails the test instead of hanging it
        assert select.select([proc.stderr], [], [], 10)[0], "no startup line within 10 s"
        line = proc.stderr.readline()
        assert line.startswith("library_app 1.0.0 listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        assert _request(f"http://127.0.0.1:{port}/healthz", None, "GET", None)[0] == 200
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert not any(token in line + rest for token in TOKENS.values())
