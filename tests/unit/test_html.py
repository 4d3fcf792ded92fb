"""The HTML page of a run and of a fleet: what a reader sees, read back from the markup.

The report that feeds the page is a real one: the run over fake drivers (real Library App
processes judged by the real checks), so the timeline, the rounds and the failure evidence come
from the same code paths as a deploy. Tables of hand-made reports cover the edges.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes import FakeCluster
from tests.unit.test_runner import NAMES, TOKENS, deploy_version, make_fleet
from wavegate import redact
from wavegate.cli import main
from wavegate.commands import report as reports
from wavegate.config.checks import Allowed, Denied, Expect, JsonIds, Principal, Probe, Request
from wavegate.decide.verdict import expected
from wavegate.errors import InputError
from wavegate.outputs import html, timeline
from wavegate.outputs.report import RunReport

T0 = datetime(2025, 3, 7, 8, 2, tzinfo=UTC)


class Page(HTMLParser):
    """The elements of a page with their attributes, and its visible text."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {key: value or "" for key, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str | None = None, **attrs: str) -> list[dict[str, str]]:
        wanted = {key.replace("_", "-"): value for key, value in attrs.items()}
        return [found for name, found in self.elements if (tag is None or name == tag)
                and all(found.get(key) == value for key, value in wanted.items())]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


@pytest.fixture(scope="module")
def incident() -> Iterator[dict[str, Any]]:
    """The incident's run, once for the module: 1.0.0 everywhere, then 2.0.0 caught on the
    canary."""
    states = {name: FakeCluster(name, env=dict(TOKENS)) for name in NAMES}
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in TOKENS.items():
            patch.setenv(variable, value)
        fleet = make_fleet()
        deploy_version(fleet, states, "1.0.0")
        code, report = deploy_version(fleet, states, "2.0.0", run_id="run-2")
    for state in states.values():
        state.stop()
    assert code == 1
    assert isinstance(report, RunReport)
    yield report.to_json()


@pytest.fixture
def regression(incident: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(incident)


# --- a real run's page -------------------------------------------------------------------------

def test_run_page_shows_the_canary_rolled_back_and_the_rest_never_touched(regression):
    page = Page(html.render_run(regression))
    canary = page.find("div", data_cluster="prod-0")[0]
    assert canary["data-state"] == "rolled-back" and canary["data-touched"] == "yes"
    for name in NAMES[1:]:
        row = page.find("div", data_cluster=name)[0]
        assert row["data-touched"] == "no", name
    glance = {item["data-group"] for item in page.find("li")}
    assert glance == {"rolled back", "never touched"}
    assert "rolled back: prod-0" in page.words
    assert "never touched: prod-2, prod-3, prod-4, prod-1, prod-5" in page.words
    assert [w["data-wave"] for w in page.find("div", **{"class": "wave"})] == [
        "canary", "regions", "rest"]


def test_run_page_draws_the_canary_phases_and_its_failing_round(regression):
    page = Page(html.render_run(regression))
    phases = [rect["data-phase"] for rect in page.find("rect")]
    assert phases[:3] == ["apply", "rollout", "verify"]
    assert "rollback" in phases and "bake" not in phases  # it never got to bake
    assert [line["data-outcome"] for line in page.find("line")] == ["fail"]


def test_run_page_shows_the_failing_checks_evidence_and_what_was_rolled_back(regression):
    page = Page(html.render_run(regression))
    failure = page.words.split("The failure that decided the run", 1)[1]
    assert "prod-0 failed at +" in failure
    assert "space access" in failure and "alice" in failure
    assert "GET /api/spaces/space-finance" in failure
    assert "a denial (401/403/404) without 'space-finance'" in failure  # expected
    assert "200: access granted where a denial was due" in failure  # the actual answer
    assert "Rolled back: prod-0" in failure
    assert "Rolled back (exit 1: the release failed its checks" in page.words


def test_run_page_header_names_app_version_fleet_who_and_when(regression):
    page = Page(html.render_run(regression))
    facts = page.words.split("At a glance")[0]
    for fact in ("app library-app", "version 2.0.0", "fleet test", "who tester",
                 "exit code 1", "run run-2", "started 20"):
        assert fact in facts, fact


def test_cluster_table_lists_versions_revisions_and_final_state(regression):
    page = Page(html.render_run(regression))
    table = page.words.split("Clusters", 1)[1]
    assert "prod-0 canary 1.0.0 2.0.0 r2, r3 rolled back" in table
    assert "prod-1 rest - 2.0.0 none never touched" in table


def test_page_holds_no_token_even_where_a_detail_carried_one(regression):
    redact.register(TOKENS["LIBRARY_TOKEN_ALICE"])
    regression["clusters"][0]["detail"] = f"echoed {TOKENS['LIBRARY_TOKEN_ALICE']}"
    markup = html.render_run(regression)
    assert all(token not in markup for token in TOKENS.values())
    assert redact.MASK in markup


# --- the page stands alone -----------------------------------------------------------------------

def test_page_loads_nothing_and_pins_its_only_script():
    markup = html.render_run(report_of(cluster("prod-0", "canary", [(0, "applying")])))
    policy = Page(markup).find("meta", http_equiv="Content-Security-Policy")[0]["content"]
    assert policy.startswith("default-src 'none';")
    digest = base64.b64encode(hashlib.sha256(html.SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert markup.count("<script") == 1 and "<script>" in markup  # inline, no src
    assert not re.search(r"""(src|href|url\()\s*=?\s*["']?\s*(https?:)?//""", markup)
    assert "@import" not in markup and "<link" not in markup


def test_text_from_the_report_is_escaped():
    entry = cluster("prod-0", "canary", [(0, "applying"), (1, "failed")])
    entry["detail"] = "<script>alert(1)</script>"
    entry["timeline"][1]["detail"] = "<img src=x onerror=alert(1)>"
    markup = html.render_run(report_of(entry))
    assert "<img" not in markup and "alert(1)</script>" not in markup
    assert "&lt;script&gt;" in markup


# --- timelines from hand-made reports -----------------------------------------------------------

def cluster(name: str, wave: str, events: list[tuple[float, str]],
            rounds: list[tuple[float, str, str]] = ()) -> dict[str, Any]:
    return {"cluster": name, "wave": wave, "state": events[-1][1] if events else "pending",
            "from_version": "1.0.0", "to_version": "2.0.0", "revision": 2 if events else None,
            "detail": None, "checks": [],
            "timeline": [{"at": at(s), "state": state} for s, state in events],
            "rounds": [{"at": at(s), "phase": phase, "outcome": outcome, "passed": 1,
                        "failed": 0, "errors": 0, "problems": []}
                       for s, phase, outcome in rounds]}


def report_of(*clusters: dict[str, Any], command: str = "deploy", end: float = 100,
              outcome: str = "succeeded", code: int = 0) -> dict[str, Any]:
    return {"run_id": "r", "app": "library-app", "version": "2.0.0", "command": command,
            "outcome": outcome, "exit_code": code, "message": None, "started_at": at(0),
            "finished_at": at(end), "fleet": "production", "by": "ci", "clusters": list(clusters)}


GOOD = [(0, "applying"), (1, "rolling-out"), (5, "verifying"), (6, "baking"), (50, "verified")]


@pytest.mark.parametrize(("events", "rounds", "phases"), [
    pytest.param(GOOD, [(6, "verifying", "pass"), (30, "baking", "pass")],
                 ["apply", "rollout", "verify", "bake"], id="verified-no-watch"),
    pytest.param(GOOD, [(60, "verified", "pass")],
                 ["apply", "rollout", "verify", "bake", "watch"], id="watch-after-last-wave"),
    pytest.param(GOOD + [(70, "failed"), (71, "rolling-back"), (80, "rolled-back")],
                 [(60, "verified", "pass"), (70, "verified", "fail")],
                 ["apply", "rollout", "verify", "bake", "watch", "failed", "rollback"],
                 id="watch-catches-a-leak"),
    pytest.param([(0, "applying"), (1, "rolling-out"), (40, "failed"), (41, "rolling-back"),
                  (45, "rolled-back")], [], ["apply", "rollout", "failed", "rollback"],
                 id="rollout-timeout"),
    pytest.param([], [], [], id="never-reached"),
])
def test_spans_follow_the_state_changes(events, rounds, phases):
    row = timeline.run_rows(report_of(cluster("prod-0", "canary", events, rounds)))[0]
    assert [span.phase for span in row.spans] == phases
    assert [mark.at for mark in row.marks] == [T0 + timedelta(seconds=s) for s, *_ in rounds]


def test_spans_sit_on_the_runs_own_time_axis():
    markup = html.render_run(report_of(cluster("prod-0", "canary", GOOD), end=100))
    rects = Page(markup).find("rect")
    bake = next(r for r in rects if r["data-phase"] == "bake")
    assert (float(bake["x"]), float(bake["width"])) == (60.0, 440.0)  # 6 s to 50 s of 100
    assert "+0s" in markup and "+15s" in markup and "+1m30s" in markup


def test_first_failure_decides_the_run_with_the_round_that_showed_it():
    leak = {"name": "space access", "principal": "bob", "request": "GET /api/spaces/x",
            "outcome": "fail", "severity": "security", "detail": "got 200", "status": 200}
    first = cluster("prod-2", "regions", [(0, "applying"), (10, "failed"), (12, "rolling-back"),
                                          (20, "rolled-back")])
    first["rounds"] = [{"at": at(9), "phase": "verifying", "outcome": "fail", "problems": [leak]}]
    later = cluster("prod-3", "regions", [(0, "applying"), (11, "failed")])
    found = timeline.decisive_failure(report_of(later, first, outcome="rolled-back", code=1))
    assert found is not None
    assert (found.cluster, found.at, found.problems) == ("prod-2", T0 + timedelta(seconds=10),
                                                         [leak])


def test_a_rollback_runs_clusters_are_not_failures():
    back = cluster("prod-0", "canary", [(0, "rolling-back"), (5, "rolled-back")])
    report = report_of(back, command="rollback", outcome="rolled-back", code=0)
    assert timeline.decisive_failure(report) is None
    assert 'id="failure"' not in html.render_run(report)


def test_a_report_from_before_the_timeline_still_renders():
    old = {"cluster": "prod-0", "wave": "canary", "state": "rolled-back", "from_version": "1",
           "to_version": "2", "detail": "leak", "checks": [
               {"name": "c", "principal": "alice", "request": "GET /x", "outcome": "fail",
                "severity": "security", "detail": "got 200", "status": 200}]}
    page = Page(html.render_run({**report_of(), "clusters": [old], "fleet": None}))
    assert page.find("rect") == [] and "got 200" in page.words


# --- the fleet's status page ----------------------------------------------------------------------

def record(name: str, revision: int, version: str, status: str, start: float,
           end: float | None) -> dict[str, Any]:
    return {"cluster": name, "revision": revision, "version": version, "status": status,
            "run_id": f"run-{revision}", "started_at": at(start),
            "finished_at": at(end) if end is not None else None, "by": "ci", "reason": None,
            "rollback_of": None, "checks": {"passed": 1, "failed": 0, "errors": 0}}


def test_status_page_shows_live_lkg_lock_last_change_and_history():
    status = {"app": "library-app", "clusters": [
        {"cluster": "prod-0", "live_version": "1.0.0", "live_revision": 3,
         "last_known_good": {"version": "1.0.0", "revision": 3},
         "lock": {"holder": "run-9", "expires": at(400)}},
        {"cluster": "prod-1", "live_version": None, "live_revision": None,
         "last_known_good": None, "lock": None}]}
    history = [record("prod-0", 1, "1.0.0", "verified", 0, 10),
               record("prod-0", 2, "2.0.0", "rolled-back", 100, 130),
               record("prod-0", 3, "1.0.0", "verified", 120, 130)]
    page = Page(html.render_status(status, history, fleet="production",
                                   at=T0 + timedelta(seconds=300)))
    words = page.words
    assert "prod-0 1.0.0 (r3) 1.0.0 (r3) run-9 until" in words
    assert "prod-1 - - free never deployed" in words
    row = page.find("div", data_cluster="prod-0")[0]
    assert row["data-touched"] == "yes"
    phases = [r["data-phase"] for r in page.find("rect")]
    assert phases == ["verified", "live", "rolled-back", "verified", "live"]
    assert page.find("div", data_cluster="prod-1")[0]["data-touched"] == "no"


# --- what a check expected, in words -------------------------------------------------------------

ALICE = Principal("alice", token_env="T")


@pytest.mark.parametrize(("expectation", "words"), [
    (Denied("space-hr"), "a denial (401/403/404) without 'space-hr'"),
    (Allowed("space-eng"), "2xx showing 'space-eng'"),
    (Expect(status=(200,), json={"version": "2.0.0"}), "200, version = '2.0.0'"),
    (Expect(json_ids=JsonIds("$.s[*].id", subset_of=("a", "b"))), "200, ids at $.s[*].id "
                                                                   "within [a, b]"),
    (Expect(status=(200, 204), json_ids=JsonIds("$.s[*].id", equals=("a",))),
     "200/204, ids at $.s[*].id exactly [a]"),
])
def test_expected_answer_in_words(expectation, words):
    probe = Probe(check="c", principal=ALICE, request=Request("GET", "/x"),
                  expectation=expectation, severity="security")
    assert expected(probe) == words


# --- the report command ---------------------------------------------------------------------

def test_report_command_writes_the_page_of_a_journaled_run(tmp_path, monkeypatch, regression):
    monkeypatch.chdir(tmp_path)
    journal = tmp_path / ".wavegate" / "runs" / "run-2.json"
    journal.parent.mkdir(parents=True)
    journal.write_text(json.dumps(regression))
    result = CliRunner().invoke(main, ["report", "run-2", "--html", "out/run.html"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "out/run.html"
    assert 'data-cluster="prod-0"' in (tmp_path / "out" / "run.html").read_text()


@pytest.mark.parametrize(("run_id", "content", "message"), [
    ("nope", None, "RUN_ID: no run nope here (looked in .wavegate/runs)"),
    ("../../etc/passwd", None, "neither a run id nor a report file"),
    ("broken", "{not json", ".wavegate/runs/broken.json: cannot read the run report"),
    ("other", '{"clusters": [1]}', ".wavegate/runs/other.json: not a wavegate run report"),
])
def test_report_command_refuses_bad_input_in_one_line(tmp_path, monkeypatch, run_id, content,
                                                      message):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / ".wavegate" / "runs").mkdir(parents=True)
        (tmp_path / ".wavegate" / "runs" / f"{run_id}.json").write_text(content)
    result = CliRunner().invoke(main, ["report", run_id, "--html", "x.html"])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_status_html_needs_a_file(tmp_path):
    result = CliRunner().invoke(main, ["status", "library-app", "-o", "html", "-f",
                                       str(Path(__file__).parents[2] / "clusters/local.yaml")])
    assert result.exit_code == 2 and "-o html needs a file" in result.output


def test_a_page_that_cannot_be_written_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write the page"):
        reports.write_page(blocker / "page.html", "<html>", option="--html")


# --- check --report-html -----------------------------------------------------------------------

def test_check_page_keeps_the_failing_round_and_folds_in_the_rollback_it_started(tmp_path):
    fleet = make_fleet()
    page_file = tmp_path / "check.html"
    page = reports.CheckPage(page_file, app="library-app", fleet=fleet, names=["prod-0"])
    leak = {"name": "search", "principal": "alice", "request": "GET /api/search",
            "outcome": "fail", "severity": "security", "detail": "ids include space-hr",
            "status": 200, "expected": "200, ids at $.spaces[*].id within [space-eng]"}
    page.record([{"cluster": "prod-0", "version": "2.0.0", "revision": 2, "outcome": "fail",
                  "detail": "search [security]: leak", "checks": [leak]}])
    rollback = RunReport(run_id="rb", app="library-app", version=None, command="rollback")
    for name in NAMES:
        rollback.add_cluster(name, fleet.wave_of(name).name, to_version=None)
        rollback.update(name, state="rolling-back", from_version="2.0.0", to_version="1.0.0")
        rollback.update(name, state="rolled-back", rollback_revision=3, checks=[
            {**leak, "outcome": "pass", "detail": "ok"}])
    rollback.finish(outcome="rolled-back", exit_code=0)
    assert page.rolled_back(rollback, 1) == 1
    view = Page(page_file.read_text())
    assert view.find("div", data_cluster="prod-0")[0]["data-state"] == "rolled-back"
    assert len(view.find("div", data_state="rolled-back")) == len(NAMES)
    failure = view.words.split("The failure that decided the run", 1)[1]
    assert "GET /api/search" in failure and "ids include space-hr" in failure
    assert "Rolled back: prod-0, prod-1" in failure
