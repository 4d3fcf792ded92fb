"""wavegate on the local fleet of six: real cluster agents, pods and HTTP on loopback.

Each test drives the CLI as a release engineer would and asserts what they would see: exit
codes, which clusters changed, what the ledger says, what the report names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import TOKENS, LocalFleet, Result

pytestmark = pytest.mark.integration
FAULTY = {"LIBRARY_LEAK": "${leak}", "LIBRARY_FAIL": "${fault}"}
SEARCH_CHECK = """
  - name: search shows only member spaces
    as: alice
    request: GET /api/search?q=space
    expect: {status: 200, json_ids: {path: "$.spaces[*].id", subset_of: [space-eng]}}
"""  # a check written for a leak the default checks never look for


def versions_on(fleet: LocalFleet) -> dict[str, str | None]:
    return {name: row["live_version"] for name, row in fleet.status().items()}


def ever_ran(fleet: LocalFleet, version: str) -> set[str]:
    return {record["cluster"] for record in fleet.history() if record["version"] == version}


def log_events(result: Result) -> list[dict[str, Any]]:
    """The structlog JSON lines a run wrote on stderr (`--log-format json`)."""
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def test_good_release_rolls_out_to_every_cluster(local_fleet: LocalFleet) -> None:
    result = local_fleet.deploy("library-app", "1.0.0")
    assert result.code == 0, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert {r["status"] for r in local_fleet.history()} == {"verified"}


def test_regression_is_stopped_at_the_canary(local_fleet: LocalFleet, tmp_path: Path) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    report_file = tmp_path / "report.json"
    result = local_fleet.deploy("library-app", "2.0.0", "--report", str(report_file))
    assert result.code == 1, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert ever_ran(local_fleet, "2.0.0") == {"prod-0"}
    report = json.loads(report_file.read_text())
    canary = next(c for c in report["clusters"] if c["cluster"] == "prod-0")
    leak = next(c for c in canary["checks"] if c["severity"] == "security"
                and c["outcome"] == "fail")
    assert leak["principal"] in ("alice", "bob") and leak["request"].startswith("GET /api/")
    assert "200" in leak["detail"]
    assert {c["state"] for c in report["clusters"] if c["cluster"] != "prod-0"} == {"pending"}


@pytest.mark.parametrize("leak", ["list-only", "bob-only"])
def test_a_leak_only_one_endpoint_or_principal_shows_is_stopped(
        local_fleet: LocalFleet, leak: str) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("leaky", configmap_extra=FAULTY)
    result = local_fleet.deploy(str(variant), "1.1.0", "--set", f"leak={leak}", "--set",
                                "fault=")
    assert result.code == 1, result.stderr
    assert ever_ran(local_fleet, "1.1.0") == {"prod-0"}
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}


def test_endpoint_that_errors_twice_then_recovers_does_not_roll_back(
        local_fleet: LocalFleet) -> None:
    variant = local_fleet.app_variant("flaky", configmap_extra=FAULTY)
    result = local_fleet.wavegate("--log-format", "json", "deploy", str(variant), "--version",
                                  "1.0.0", "-f", str(local_fleet.fleet_file), "--set", "leak=",
                                  "--set", "fault=error-5xx-first-2")
    assert result.code == 0, result.stderr
    # The fault was really hit: checks met the 500s and were retried, not judged.
    retried = [event for event in log_events(result) if event["event"] == "check.retry"]
    assert retried and all("500" in str(event["detail"]) for event in retried)
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert {r["status"] for r in local_fleet.history()} == {"verified"}


def test_endpoint_that_keeps_erroring_counts_as_a_failure(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("broken", configmap_extra=FAULTY)
    result = local_fleet.deploy(str(variant), "1.1.0", "--set", "leak=", "--set",
                                "fault=error-5xx")
    assert result.code == 1, result.stderr
    assert "consecutive check errors" in result.stdout
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}


def test_failure_in_the_second_wave_rolls_back_it_and_the_canary(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    local_fleet.set_values("prod-3", leak="bob-only")
    variant = local_fleet.app_variant("regional", configmap_extra=FAULTY)
    result = local_fleet.deploy(str(variant), "1.1.0")
    assert result.code == 1, result.stderr
    assert ever_ran(local_fleet, "1.1.0") == {"prod-0", "prod-2", "prod-3", "prod-4"}
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    rolled_back = {r["cluster"] for r in local_fleet.history() if r["status"] == "rolled-back"}
    assert rolled_back == {"prod-0", "prod-2", "prod-3", "prod-4"}


def test_crashing_release_fails_its_rollout_and_is_rolled_back(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("crashing", configmap_extra=FAULTY)
    result = local_fleet.deploy(str(variant), "1.1.0", "--set", "leak=", "--set", "fault=crash")
    assert result.code == 1, result.stderr
    assert "rollout failed" in result.stdout and "exited with code 1" in result.stdout
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}


def test_an_image_with_no_command_fails_its_rollout_at_once(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    document = yaml.safe_load(local_fleet.fleet_file.read_text())
    document["policy"]["rollout_timeout"] = "2m"  # what the rollout must not wait out
    local_fleet.fleet_file.write_text(yaml.safe_dump(document))
    variant = local_fleet.app_variant("unmapped", configmap_extra={})
    manifest = variant / "deployment.yaml"
    manifest.write_text(manifest.read_text().replace("image: library-app:", "image: nginx:"))
    result = local_fleet.deploy(str(variant), "1.1.0")
    assert result.code == 1, result.stderr
    assert "ErrImageNeverPull" in result.stdout and "'nginx:1.1.0'" in result.stdout
    assert "not rolled out after" not in result.stdout
    assert ever_ran(local_fleet, "1.1.0") == {"prod-0"}
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}


def test_rollback_all_takes_every_cluster_back_in_parallel(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    assert local_fleet.deploy("library-app", "1.1.0").code == 0
    result = local_fleet.wavegate("rollback", "library-app", "--all", "--reason", "drill",
                                  "-f", str(local_fleet.fleet_file))
    assert result.code == 0, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    history = local_fleet.history()
    assert {r["status"] for r in history if r["version"] == "1.1.0"} == {"rolled-back"}
    restored = [r for r in history if r["rollback_of"] is not None]
    assert {r["cluster"] for r in restored} == set(versions_on(local_fleet))
    assert {(r["version"], r["status"]) for r in restored} == {("1.0.0", "verified")}
    # In parallel: every cluster's rollback had started before the first one finished.
    assert max(r["started_at"] for r in restored) < min(r["finished_at"] for r in restored)


def test_second_deploy_while_the_lock_is_held_exits_4_naming_the_holder(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    from wavegate.config.fleet import load
    from wavegate.drivers.local import LocalDriver

    fleet = load(local_fleet.fleet_file)
    assert fleet.local is not None
    LocalDriver(fleet.cluster("prod-3"), fleet.local).acquire_lock(
        "library-app", holder="run-held-elsewhere", ttl=600)
    result = local_fleet.deploy("library-app", "1.1.0")
    assert result.code == 4
    assert "run-held-elsewhere" in result.stderr
    assert ever_ran(local_fleet, "1.1.0") == set()


def test_bad_input_exits_2_and_touches_nothing(local_fleet: LocalFleet) -> None:
    broken = local_fleet.root / "broken.yaml"
    broken.write_text(local_fleet.fleet_file.read_text().replace("bake:", "bake: 2 hours\n#"))
    result = local_fleet.wavegate("deploy", "library-app", "--version", "1.0.0", "-f",
                                  str(broken))
    assert result.code == 2
    assert str(broken) in result.stderr and "bake" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not (local_fleet.root / "state").exists()


def test_no_token_appears_in_any_output(local_fleet: LocalFleet, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    local_fleet.deploy("library-app", "1.0.0")
    local_fleet.deploy("library-app", "2.0.0", "--report", str(report_file))
    local_fleet.wavegate("--log-format", "json", "-v", "rollback", "library-app", "--all",
                         "-f", str(local_fleet.fleet_file))
    local_fleet.history()
    written = [p for p in (tmp_path / "state").rglob("*") if p.is_file()
               and not p.name.startswith("Secret.")]  # the cluster's own secret store
    written += [report_file, *(tmp_path / ".wavegate" / "runs").glob("*.json")]
    texts = local_fleet.outputs + [p.read_bytes().decode(errors="replace") for p in written]
    assert len(texts) > 20
    for token in TOKENS.values():
        assert not any(token in text for text in texts), f"a token leaked: {token[:8]}..."


def test_a_leak_through_search_is_stopped_by_a_checks_file_written_for_it(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("searchable", configmap_extra=FAULTY)
    checks = variant / "checks.yaml"
    checks.write_text(checks.read_text() + SEARCH_CHECK)
    result = local_fleet.deploy(str(variant), "1.1.0", "--set", "leak=search", "--set",
                                "fault=")
    assert result.code == 1, result.stderr
    assert "search shows only member spaces" in result.stdout
    assert ever_ran(local_fleet, "1.1.0") == {"prod-0"}
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}


def test_ci_outputs_junit_and_step_summary_name_the_failure(
        local_fleet: LocalFleet, tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    summary_file = tmp_path / "summary.md"
    local_fleet.env["GITHUB_STEP_SUMMARY"] = str(summary_file)
    junit_file = tmp_path / "junit.xml"
    assert local_fleet.deploy("library-app", "2.0.0", "--junit", str(junit_file)).code == 1
    suites = ET.parse(junit_file).getroot()
    canary = next(s for s in suites if s.get("name", "").startswith("prod-0"))
    failures = [case.find("failure") for case in canary if case.find("failure") is not None]
    assert failures and int(suites.get("failures", "0")) == len(failures)
    assert any("as alice" in (f.get("message") or "") and "-> 200" in (f.get("message") or "")
               and f.get("type") == "security" for f in failures)
    skipped = [s for s in suites if s.find("testcase/skipped") is not None]
    assert len(skipped) == 5  # prod-1..5 were never reached
    summary = summary_file.read_text()
    assert "rolled-back" in summary and "| prod-0 |" in summary
    assert not any(token in summary + junit_file.read_text() for token in TOKENS.values())


class _Receiver:
    """A webhook receiver on loopback that records what it is sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _with_webhook(fleet: LocalFleet, url: str) -> None:
    fleet.fleet_file.write_text(fleet.fleet_file.read_text()
                                + "notify:\n  webhooks: [{url_env: WAVEGATE_WEBHOOK}]\n")
    fleet.env["WAVEGATE_WEBHOOK"] = url


def test_webhooks_tell_the_story_in_order(local_fleet: LocalFleet) -> None:
    receiver = _Receiver()
    try:
        assert local_fleet.deploy("library-app", "1.0.0").code == 0
        _with_webhook(local_fleet, receiver.url)
        assert local_fleet.deploy("library-app", "2.0.0").code == 1
    finally:
        receiver.close()
    events = [payload["event"] for payload in receiver.received]
    assert events == ["run.started", "check.failed", "rollback.done", "run.finished"]
    assert all(payload["text"].startswith("wavegate library-app 2.0.0") for payload in
               receiver.received)
    assert "prod-0" in receiver.received[1]["text"]


def test_a_dead_webhook_receiver_harms_nothing(local_fleet: LocalFleet) -> None:
    receiver = _Receiver()
    receiver.close()  # nothing listens there any more
    _with_webhook(local_fleet, receiver.url)
    result = local_fleet.wavegate("--log-format", "json", "deploy", "library-app", "--version",
                                  "1.0.0", "-f", str(local_fleet.fleet_file))
    assert result.code == 0, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert {r["status"] for r in local_fleet.history()} == {"verified"}
    # The failed delivery is said, not hidden, and it did not become the run's failure.
    assert "notify.failed" in [event["event"] for event in log_events(result)]


def test_continuous_check_with_a_new_check_catches_a_live_leak_and_rolls_back(
        local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    variant = local_fleet.app_variant("searchable", configmap_extra=FAULTY)
    checks = variant / "checks.yaml"
    # Without the access_drift check (the shipped checks' last), nothing looks at search ...
    text = checks.read_text()
    checks.write_text(text[:text.index("  - name: no principal gains access")])
    # ... so the release that leaks through search goes out.
    out = local_fleet.deploy(str(variant), "1.1.0", "--set", "leak=search", "--set", "fault=")
    assert out.code == 0, out.stderr
    checks.write_text(checks.read_text() + SEARCH_CHECK)
    caught = local_fleet.wavegate("check", str(variant), "--every", "1s", "--rollback-on-fail",
                                  "-f", str(local_fleet.fleet_file))
    assert caught.code == 1, caught.stderr
    assert "search shows only member spaces" in caught.stdout
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
