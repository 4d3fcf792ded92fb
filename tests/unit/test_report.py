"""The run report: the JSON a CI job keeps, written as the run goes and never with a token."""

from __future__ import annotations

import json
from pathlib import Path

from wavegate.config import checks
from wavegate.engine import credentials
from wavegate.outputs.report import RunReport

APP = Path(__file__).parents[2] / "manifests" / "library-app"
TOKEN = "report-test-alice-8Gq2"


def report_with_two_clusters() -> RunReport:
    report = RunReport(run_id="run-1", app="library-app", version="2.0.0", command="deploy")
    report.add_cluster("prod-0", "canary", to_version="2.0.0")
    report.add_cluster("prod-1", "rest", to_version="2.0.0")
    return report


def test_the_report_has_the_fixed_shape_ci_jobs_read(tmp_path: Path):
    report = report_with_two_clusters()
    report.update("prod-0", state="rolled-back", from_version="1.0.0",
                  checks=[{"name": "space access", "principal": "alice",
                           "request": "GET /api/spaces/space-finance", "outcome": "fail",
                           "severity": "security", "detail": "expected a denial, got 200"}])
    report.finish(outcome="rolled-back", exit_code=1, message="prod-0: space access failed")
    report.write(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert {"run_id", "app", "version", "outcome", "exit_code", "started_at",
            "finished_at", "clusters"} <= set(data)
    assert (data["outcome"], data["exit_code"]) == ("rolled-back", 1)
    assert data["finished_at"] >= data["started_at"]
    canary, rest = data["clusters"]
    assert {"cluster", "wave", "state", "from_version", "to_version", "checks"} <= set(canary)
    assert (canary["cluster"], canary["wave"], canary["state"]) == ("prod-0", "canary",
                                                                    "rolled-back")
    assert (canary["from_version"], canary["to_version"]) == ("1.0.0", "2.0.0")
    assert canary["checks"][0]["principal"] == "alice"
    assert (rest["cluster"], rest["state"]) == ("prod-1", "pending")  # never reached


def test_no_token_reaches_the_report_even_inside_a_detail(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LIBRARY_TOKEN_ALICE", TOKEN)
    monkeypatch.setenv("LIBRARY_TOKEN_BOB", "report-test-bob-3Kx9")
    monkeypatch.setenv("LIBRARY_TOKEN_CAROL", "report-test-carol-8Qw2")
    suite = checks.load((APP / "checks.yaml").read_text(), APP / "checks.yaml")
    credentials.resolve(suite)  # reading the tokens registers them as secrets
    report = report_with_two_clusters()
    report.update("prod-0", detail=f"401 for Bearer {TOKEN}",
                  checks=[{"name": "x", "principal": "alice", "request": "GET /",
                           "outcome": "error", "severity": None,
                           "detail": f"echoed header: Authorization: Bearer {TOKEN}"}])
    report.finish(outcome="failed", exit_code=3, message=f"token {TOKEN} refused")
    report.write(tmp_path / "report.json")
    written = (tmp_path / "report.json").read_text()
    assert TOKEN not in written
    assert "[redacted]" in written and "echoed header" in written  # the rest is kept


def test_the_report_on_disk_follows_every_change_so_a_killed_run_leaves_it(tmp_path: Path):
    target = tmp_path / "runs" / "run-1.json"
    report = report_with_two_clusters()
    report.listen(lambda changed: changed.write(target))
    report.update("prod-0", state="rolling-out")
    assert json.loads(target.read_text())["clusters"][0]["state"] == "rolling-out"
    report.update("prod-0", state="verified")
    assert json.loads(target.read_text())["clusters"][0]["state"] == "verified"
    assert [p.name for p in target.parent.iterdir()] == ["run-1.json"]  # no stray temporaries
