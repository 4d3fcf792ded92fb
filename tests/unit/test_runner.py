"""The run, end to end over fake drivers and a fake clock: the decisions a user would notice.

Each cluster serves the real Library App on loopback, so the checks judge real answers; only
the cluster mechanics (apply, rollout, ledger store, lock) are faked.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.fakes import FakeClock, FakeCluster, FakeDriver
from wavegate.config import checks
from wavegate.config.app import App
from wavegate.config.fleet import Cluster, Fleet, Policy, Wave
from wavegate.decide import ledger
from wavegate.decide.ledger import Status
from wavegate.engine import credentials, deploy
from wavegate.engine.runner import Target
from wavegate.errors import (
    EXIT_LOCKED,
    EXIT_NEEDS_HUMAN,
    EXIT_OK,
    EXIT_ROLLED_BACK,
    Conflict,
    DriverError,
    LockHeld,
    Preempted,
    RolloutFailed,
)

APP = Path(__file__).parents[2] / "manifests" / "library-app"
TOKENS = {"LIBRARY_TOKEN_ALICE": "alice-secret-token-1", "LIBRARY_TOKEN_BOB": "bob-secret-token-2",
          "LIBRARY_TOKEN_CAROL": "carol-secret-token-3"}
NAMES = ("prod-0", "prod-1", "prod-2", "prod-3", "prod-4", "prod-5")
HOUR = 3600.0


@pytest.fixture(autouse=True)
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in TOKENS.items():
        monkeypatch.setenv(variable, value)


def make_fleet(**policy: object) -> Fleet:
    clusters = tuple(Cluster(name=n, region="r", driver="local", namespace="library",
                             values={"replicas": 3})
                     for n in NAMES)
    waves = (Wave("canary", ("prod-0",), 1, 2 * HOUR),
             Wave("regions", ("prod-2", "prod-3", "prod-4"), 3, HOUR),
             Wave("rest", ("prod-1", "prod-5"), 2, 30 * 60.0))
    settings = {"check_interval": 1800.0, "check_timeout": 0.5, **policy}
    return Fleet(name="test", path=Path("test.yaml"), clusters=clusters, waves=waves,
                 policy=Policy(**settings))  # type: ignore[arg-type]


def deploy_version(fleet: Fleet, states: dict[str, FakeCluster], version: str,
                   clock: FakeClock | None = None, run_id: str = "run-1") -> tuple[int, object]:
    app = App.from_folder(APP)
    targets = {}
    for cluster in fleet.clusters:
        release = app.render(cluster, version)
        suite = checks.load(release.checks, APP / "checks.yaml")
        targets[cluster.name] = Target(FakeDriver(cluster, states[cluster.name]), release,
                                       suite, credentials.resolve(suite))
    report = deploy.new_report(fleet, app, version, run_id)
    code = deploy.run(fleet, deploy.Prepared(targets), run_id=run_id, by="tester",
                      clock=clock or FakeClock(), report=report)
    return code, report


def statuses(state: FakeCluster) -> list[tuple[str, str]]:
    return [(r.version, r.status.value) for r, _ in state.records.values()]


def test_good_release_verifies_every_cluster_and_bakes_in_fake_time(clusters):
    clock = FakeClock()
    code, report = deploy_version(make_fleet(), clusters, "1.0.0", clock)
    assert code == EXIT_OK
    assert all(statuses(clusters[n]) == [("1.0.0", "verified")] for n in NAMES)
    assert clock.slept >= 3.5 * HOUR  # 2h + 1h + 30m of bake, without waiting for it
    assert {entry.state for entry in report.clusters.values()} == {"verified"}
    assert all(state.lock is None for state in clusters.values())


def test_regression_is_stopped_at_the_canary_and_rolled_back(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    code, report = deploy_version(fleet, clusters, "2.0.0", run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    assert clusters["prod-0"].applied == ["1.0.0", "2.0.0", "1.0.0"]
    assert statuses(clusters["prod-0"]) == [
        ("1.0.0", "verified"), ("2.0.0", "rolled-back"), ("1.0.0", "verified")]
    for name in NAMES[1:]:
        assert clusters[name].applied == ["1.0.0"], f"{name} must never see 2.0.0"
    assert report.clusters["prod-0"].state == "rolled-back"
    assert "[security]" in (report.clusters["prod-0"].detail or "")


def test_security_failure_names_principal_request_and_status(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-0"].stop()  # the rollback must bring the old release back by itself
    _, report = deploy_version(fleet, clusters, "2.0.0", run_id="run-2")
    detail = report.clusters["prod-0"].detail
    assert "GET /api/spaces" in detail and " as " in detail and "200" in detail


def test_failure_in_second_wave_rolls_back_that_wave_then_the_canary(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-3"].broken_versions.add("1.1.0")
    code, report = deploy_version(fleet, clusters, "1.1.0", run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    for name in ("prod-0", "prod-2", "prod-3", "prod-4"):
        assert clusters[name].applied[-1] == "1.0.0", name
        assert ("1.1.0", "rolled-back") in statuses(clusters[name]), name
    for name in ("prod-1", "prod-5"):
        assert clusters[name].applied == ["1.0.0"], f"{name} was never reached"
        assert report.clusters[name].state == "pending"


def test_first_release_that_fails_is_removed(clusters):
    code, _ = deploy_version(make_fleet(), clusters, "2.0.0")
    assert code == EXIT_ROLLED_BACK
    assert clusters["prod-0"].server is None
    assert statuses(clusters["prod-0"]) == [("2.0.0", "rolled-back")]


def test_rollback_failed_policy_only_rolls_back_the_failed_cluster(clusters):
    fleet = make_fleet(on_failure="rollback-failed")
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-4"].broken_versions.add("1.1.0")
    code, _ = deploy_version(fleet, clusters, "1.1.0", run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    assert clusters["prod-4"].applied[-1] == "1.0.0"
    assert clusters["prod-0"].applied[-1] == "1.1.0"
    assert statuses(clusters["prod-0"])[-1] == ("1.1.0", "verified")


def test_halt_policy_leaves_the_failure_for_a_human(clusters):
    fleet = make_fleet(on_failure="halt")
    deploy_version(fleet, clusters, "1.0.0")
    code, _ = deploy_version(fleet, clusters, "2.0.0", run_id="run-2")
    assert code == EXIT_NEEDS_HUMAN
    assert statuses(clusters["prod-0"])[-1] == ("2.0.0", "failed")


def go_unreachable(state: FakeCluster) -> None:
    state.unreachable = True


def test_unreachable_cluster_mid_wave_needs_a_human_and_the_others_roll_back(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-3"].faults["wait_rollout"] = go_unreachable
    code, report = deploy_version(fleet, clusters, "1.1.0", run_id="run-2")
    assert code == EXIT_NEEDS_HUMAN
    assert report.clusters["prod-3"].state == "rollback-failed"
    assert report.clusters["prod-3"].detail == (
        "prod-3: connection refused; finish with `wavegate rollback library-app -c prod-3 -f "
        f"{fleet.path} --reason 'finish rollback run-2'`")
    assert "finish with `wavegate rollback library-app -c prod-3" in report.message
    for name in ("prod-0", "prod-2", "prod-4"):
        assert clusters[name].applied == ["1.0.0", "1.1.0", "1.0.0"], name
        assert statuses(clusters[name])[1:] == [("1.1.0", "rolled-back"),
                                                ("1.0.0", "verified")], name
        assert report.clusters[name].state == "rolled-back", name
    for name in ("prod-1", "prod-5"):
        assert clusters[name].applied == ["1.0.0"], f"{name} was never reached"
    # What was left on prod-3 is for a human: its ledger still says 1.1.0 is live.
    assert statuses(clusters["prod-3"])[-1][0] == "1.1.0"


def test_second_deploy_while_the_lock_is_held_exits_4_naming_the_holder(clusters):
    fleet = make_fleet()
    from wavegate.drivers.base import Lock

    clusters["prod-2"].lock = Lock(holder="run-other", expires="later")
    with pytest.raises(LockHeld, match="run-other") as caught:
        deploy_version(fleet, clusters, "1.0.0")
    assert caught.value.exit_code == EXIT_LOCKED
    assert all(not state.applied for state in clusters.values())
    assert clusters["prod-0"].lock is None  # the locks it did take were given back


def test_watch_failure_after_the_last_wave_still_rolls_back_everywhere(clusters):
    fleet = make_fleet(watch=2 * HOUR)
    deploy_version(fleet, clusters, "1.0.0")
    clock = FakeClock()
    # An hour into the watch (every wave verified by 3.5 h), prod-5 starts leaking.
    clock.at(clock.time + 4.5 * HOUR,
             lambda: clusters["prod-5"].serve("1.1.0", {"LIBRARY_LEAK": "list-only"}))
    code, report = deploy_version(fleet, clusters, "1.1.0", clock, run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    assert "[security]" in (report.clusters["prod-5"].detail or "")
    for name in NAMES:
        assert clusters[name].applied[-1] == "1.0.0", name
        assert statuses(clusters[name])[1:] == [("1.1.0", "rolled-back"),
                                                ("1.0.0", "verified")], name
        assert report.clusters[name].state == "rolled-back", name
    assert 4.5 * HOUR <= clock.slept < 5.5 * HOUR  # caught in the watch, not after it


def test_ledger_last_known_good_after_rollback(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    deploy_version(fleet, clusters, "2.0.0", run_id="run-2")
    records = [r for r, _ in clusters["prod-0"].records.values()]
    assert ledger.live(records).version == "1.0.0"
    assert ledger.last_known_good(records).revision == 3
    assert [r.status for r in records][:2] == [Status.VERIFIED, Status.ROLLED_BACK]


# --- one error policy: whatever breaks in one cluster's work fails that cluster ---------------

FAULTS = [
    pytest.param("wait_rollout", DriverError("API server unreachable", cluster="prod-3"),
                 "prod-3: API server unreachable", id="driver-error"),
    pytest.param("wait_rollout", RolloutFailed("library-app: PodCrashed: exit 1"),
                 "rollout failed: library-app: PodCrashed", id="rollout-failed"),
    pytest.param("create_record", Conflict("revision 2 exists already"),
                 "revision 2 exists already", id="final-conflict"),
    pytest.param("records", gzip.BadGzipFile("Not a gzipped file (b'<h')"),
                 "internal error: BadGzipFile: Not a gzipped file", id="broken-gzip"),
    pytest.param("wait_rollout", KeyError("availableReplicas"),
                 "internal error: KeyError: 'availableReplicas'", id="a-bug"),
    pytest.param("endpoint", zlib.error("Error -3 while decompressing data"),
                 "internal error: error: Error -3", id="a-bug-while-verifying"),
]


@pytest.mark.parametrize(("method", "fault", "detail"), FAULTS)
def test_any_fault_in_one_clusters_work_fails_it_and_rolls_the_release_back(
    clusters, method: str, fault: BaseException, detail: str,
) -> None:
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-3"].faults[method] = fault
    with capture_logs() as logs:
        code, report = deploy_version(fleet, clusters, "1.1.0", run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    assert report.clusters["prod-3"].detail.startswith(detail)
    for name in ("prod-0", "prod-2", "prod-3", "prod-4"):  # the failing wave, then the canary
        assert report.clusters[name].state == "rolled-back", name
        assert clusters[name].applied[-1] == "1.0.0", name
        assert statuses(clusters[name])[-1] == ("1.0.0", "verified"), name
    for name in ("prod-1", "prod-5"):
        assert clusters[name].applied == ["1.0.0"], f"{name} was never reached"
        assert report.clusters[name].state == "pending"
    assert not [r for state in clusters.values() for r in statuses(state) if r[1] == "applying"]
    assert all(state.lock is None for state in clusters.values())
    bugs = [e for e in logs if e["event"] == "cluster.bug"]
    if detail.startswith("internal error"):
        assert [e["cluster"] for e in bugs] == ["prod-3"]
        assert "bug in wavegate" in bugs[0]["hint"]
        traceback = next(e for e in logs if e["event"] == "cluster.bug.traceback")
        assert traceback["log_level"] == "debug" and traceback["exc_info"] is fault
    else:
        assert bugs == []  # an expected failure is not reported as a bug


def test_a_fault_while_marking_a_wave_verified_rolls_the_release_back(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-0"].faults["update_record"] = DriverError("etcd timed out", cluster="prod-0")
    code, report = deploy_version(fleet, clusters, "1.1.0", run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    assert report.clusters["prod-0"].state == "rolled-back"
    assert statuses(clusters["prod-0"])[-1] == ("1.0.0", "verified")
    assert all(clusters[name].applied == ["1.0.0"] for name in NAMES[1:])


def test_preempted_mid_wave_ends_the_run_as_preempted_and_closes_its_records(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-3"].faults["wait_rollout"] = Preempted(
        cluster="prod-3", app="library-app", holder="run-rollback")
    code, report = deploy_version(fleet, clusters, "1.1.0", run_id="run-2")
    assert code == EXIT_LOCKED
    assert report.outcome == "preempted"
    assert report.clusters["prod-3"].state == "failed"
    assert "now held by run run-rollback" in report.clusters["prod-3"].detail
    # Whoever took the lock owns the clusters now: this run rolls nothing back ...
    assert clusters["prod-3"].applied == ["1.0.0", "1.1.0"]
    for name in ("prod-1", "prod-5"):
        assert clusters[name].applied == ["1.0.0"]
    # ... never writes again where it lost the lock (its record is the taker's to close) ...
    assert statuses(clusters["prod-3"])[-1] == ("1.1.0", "applying")
    # ... and leaves no record `applying` for resume or a reader to guess about elsewhere.
    for name in ("prod-2", "prod-4"):
        assert statuses(clusters[name])[-1] == ("1.1.0", "interrupted"), name


def test_a_rollback_reads_each_ledger_once(clusters):
    fleet = make_fleet()
    deploy_version(fleet, clusters, "1.0.0")
    clusters["prod-0"].reads = 0
    code, _ = deploy_version(fleet, clusters, "2.0.0", run_id="run-2")
    assert code == EXIT_ROLLED_BACK
    # One read to open the deploy's revision, one for the rollback: every write after them
    # starts from what was read or written last.
    assert clusters["prod-0"].reads == 2
