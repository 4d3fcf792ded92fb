"""Locks and emergency rollback under faults: a hung cluster, a lease deleted by hand, a clock
that disagrees, stored checks that no longer load. The clusters are fake (tests/fakes.py) where
the run logic is under test, and the real local driver where the lock file is.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeClock, FakeCluster, FakeDriver
from wavegate import filestore
from wavegate.config.app import App
from wavegate.config.fleet import Cluster, Fleet, LocalFleet, Policy, Wave
from wavegate.decide.ledger import Status
from wavegate.drivers.base import Lock
from wavegate.drivers.local import LocalDriver
from wavegate.engine import ledger_writes, rollback
from wavegate.engine.locks import Locks
from wavegate.errors import EXIT_NEEDS_HUMAN, EXIT_OK, DriverError, Preempted
from wavegate.kube import lease
from wavegate.kube.lease import Decision

APP_DIR = Path(__file__).parents[2] / "manifests" / "library-app"
APP = "library-app"
NAMES = ("prod-0", "prod-1", "prod-2")
TOKENS = {"LIBRARY_TOKEN_ALICE": "alice-secret-token-1", "LIBRARY_TOKEN_BOB": "bob-secret-token-2",
          "LIBRARY_TOKEN_CAROL": "carol-secret-token-3"}
NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


@pytest.fixture(autouse=True)
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in TOKENS.items():
        monkeypatch.setenv(variable, value)


@pytest.fixture
def states() -> Iterator[dict[str, FakeCluster]]:
    clusters = {name: FakeCluster(name, env=dict(TOKENS)) for name in NAMES}
    yield clusters
    for state in clusters.values():
        state.stop()


def cluster(name: str) -> Cluster:
    return Cluster(name=name, region="r", driver="local", namespace="library",
                   values={"replicas": 3})


class Hung(FakeDriver):
    """A cluster whose API server stops answering lock renewals until `answer` is set."""

    def __init__(self, name: str, state: FakeCluster) -> None:
        super().__init__(cluster(name), state)
        self.answer = threading.Event()

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        self.answer.wait()
        super().renew_lock(app, holder=holder, ttl=ttl)


class Counted(FakeDriver):
    """Counts renewals; `renewed` is set after the third."""

    def __init__(self, name: str, state: FakeCluster) -> None:
        super().__init__(cluster(name), state)
        self.renewals = 0
        self.renewed = threading.Event()

    def renew_lock(self, app: str, *, holder: str, ttl: float) -> None:
        super().renew_lock(app, holder=holder, ttl=ttl)
        self.renewals += 1
        if self.renewals >= 3:
            self.renewed.set()


# --- renewal -------------------------------------------------------------------------------


def test_one_hung_api_server_does_not_let_the_other_leases_lapse(states):
    hung = Hung("prod-1", states["prod-1"])
    others = {name: Counted(name, states[name]) for name in ("prod-0", "prod-2")}
    drivers = {"prod-0": others["prod-0"], "prod-1": hung, "prod-2": others["prod-2"]}
    try:
        with Locks(drivers, app=APP, holder="run-a", ttl=0.03):
            for name, driver in others.items():
                assert driver.renewed.wait(timeout=30), f"{name} stopped being renewed"
            hung.answer.set()
    finally:
        hung.answer.set()


def test_taking_every_lock_asks_all_clusters_at_once_and_gives_back_on_a_refusal(states):
    states["prod-2"].unreachable = True
    with pytest.raises(DriverError, match="prod-2"), \
            Locks({n: FakeDriver(cluster(n), states[n]) for n in NAMES}, app=APP,
                  holder="run-a"):
        pytest.fail("a deploy must not start without every lock")
    assert [states[n].lock for n in NAMES] == [None, None, None]


# --- the lease: deleted by hand, released, judged across clocks -----------------------------


def local_driver(tmp_path: Path) -> LocalDriver:
    return LocalDriver(cluster("prod-0"), LocalFleet(state_dir=tmp_path, images={}, secrets={}))


def test_a_lock_file_deleted_by_hand_under_a_live_run_is_taken_again(tmp_path: Path) -> None:
    local = local_driver(tmp_path)
    local.acquire_lock(APP, holder="run-1", ttl=30)
    (tmp_path / "prod-0" / "locks" / f"{APP}.json").unlink()
    local.renew_lock(APP, holder="run-1", ttl=30)  # no Preempted: the run goes on
    assert (local.read_lock(APP) or Lock("", "")).holder == "run-1"
    (tmp_path / "prod-0" / "locks" / f"{APP}.json").unlink()
    local.delete(APP, holder="run-1")  # a fenced write retakes it too
    assert (local.read_lock(APP) or Lock("", "")).holder == "run-1"


def test_a_lock_taken_then_released_by_a_rollback_is_never_taken_back(tmp_path: Path) -> None:
    local = local_driver(tmp_path)
    local.acquire_lock(APP, holder="run-deploy", ttl=30)
    local.acquire_lock(APP, holder="run-rollback", ttl=30, force=True)
    local.release_lock(APP, holder="run-rollback")
    assert local.read_lock(APP) is None
    with pytest.raises(Preempted, match="nobody"):
        local.renew_lock(APP, holder="run-deploy", ttl=30)
    with pytest.raises(Preempted):
        local.delete(APP, holder="run-deploy")
    local.acquire_lock(APP, holder="run-next", ttl=30)  # free for the next run


def held(holder: str, *, version: str, renewed_ago: float) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30,
                     "renewTime": lease.micro_time(NOW - timedelta(seconds=renewed_ago))}}


@pytest.mark.parametrize(("renewed_ago", "silent", "expected"), [
    pytest.param(3600, 0, Decision.HELD, id="holder-clock-an-hour-behind-first-sight"),
    pytest.param(3600, 29, Decision.HELD, id="silent-less-than-a-term"),
    pytest.param(3600, 30, Decision.STALE, id="silent-a-whole-term"),
    pytest.param(-3600, 30, Decision.STALE, id="holder-clock-ahead-but-silent"),
])
def test_expiry_is_judged_by_silence_on_the_readers_clock(renewed_ago, silent, expected):
    current = held("run-other", version="7", renewed_ago=renewed_ago)
    seen = lease.sighted(None, current, at=100.0)
    assert lease.decide(current, holder_id="me", force=False, now=NOW, seen=seen,
                        at=100.0 + silent) is expected


def test_a_renewal_seen_restarts_the_silence():
    first = held("run-other", version="7", renewed_ago=3600)
    seen = lease.sighted(None, first, at=100.0)
    assert lease.sighted(seen, first, at=150.0) is seen  # unchanged: still silent since 100
    renewed = lease.sighted(seen, held("run-other", version="8", renewed_ago=3600), at=150.0)
    assert renewed.since == 150.0
    assert lease.decide(first, holder_id="me", force=False, now=NOW, seen=renewed,
                        at=160.0) is Decision.HELD
    assert lease.looks_expired(first, now=NOW)  # the timestamps alone would have said dead


# --- emergency rollback, one cluster at a time ----------------------------------------------


def fleet() -> Fleet:
    return Fleet(name="test", path=Path("/fleets/test.yaml"),
                 clusters=tuple(cluster(n) for n in NAMES),
                 waves=(Wave("all", NAMES, 3, 0.0),),
                 policy=Policy(check_interval=1.0, check_timeout=0.5, max_check_errors=2))


def released(driver: FakeDriver, version: str, status: Status, *, checks: str | None = None):
    app = App.from_folder(APP_DIR)
    release = app.render(driver.cluster, version)
    if checks is not None:
        release = dataclasses.replace(release, checks=checks)
    driver.state.lock = Lock(holder="run-old", expires="later")
    record = ledger_writes.open_revision(driver, release, run_id="run-old", by="t")
    driver.apply(release, holder="run-old")
    ledger_writes.mark(driver, APP, record.revision, holder="run-old", status=status)
    driver.state.lock = None


def emergency(drivers: dict[str, FakeDriver], folder: App | None = None) -> tuple[int, Any]:
    asked = rollback.Request(app=APP, to_version=None, reason="leak", run_id="run-rb",
                             by="tester", folder=folder)
    report = rollback.new_report(APP, list(drivers), fleet(), "run-rb", None)
    code = rollback.run(fleet(), dict(drivers), asked, clock=FakeClock(), report=report)
    return code, report


def test_an_unreachable_cluster_is_named_with_its_command_and_the_others_roll_back(states):
    drivers = {n: FakeDriver(cluster(n), states[n]) for n in NAMES}
    for driver in drivers.values():
        released(driver, "1.0.0", Status.VERIFIED)
        released(driver, "1.1.0", Status.VERIFIED)
    states["prod-1"].unreachable = True
    code, report = emergency(drivers)
    assert code == EXIT_NEEDS_HUMAN
    for name in ("prod-0", "prod-2"):
        assert states[name].applied[-1] == "1.0.0", name
        assert report.clusters[name].state == "rolled-back"
    assert states["prod-1"].applied[-1] == "1.1.0"  # untouched
    command = ("wavegate rollback library-app -c prod-1 -f /fleets/test.yaml "
               "--reason 'finish rollback run-rb'")
    assert report.clusters["prod-1"].state == "rollback-failed"
    assert f"`{command}`" in report.clusters["prod-1"].detail
    assert rollback.left_behind(report) == [f"prod-1: {report.clusters['prod-1'].detail}"]
    assert command in (report.message or "")
    assert [states[n].lock for n in NAMES] == [None, None, None]  # every lock let go


def test_stored_checks_that_no_longer_load_do_not_block_the_rollback(states):
    drivers = {n: FakeDriver(cluster(n), states[n]) for n in NAMES}
    for driver in drivers.values():
        released(driver, "1.0.0", Status.VERIFIED, checks="checks: []\n")  # no longer loads
        released(driver, "1.1.0", Status.VERIFIED)
    code, report = emergency({"prod-0": drivers["prod-0"]}, folder=App.from_folder(APP_DIR))
    assert code == EXIT_NEEDS_HUMAN  # rolled back, but not proved by its own checks
    assert states["prod-0"].applied[-1] == "1.0.0"
    entry = report.clusters["prod-0"]
    assert entry.state == "rolled-back"
    assert "its stored checks are unusable" in entry.detail
    assert "verified with" in entry.detail and "checks.yaml instead" in entry.detail
    assert {c["outcome"] for c in entry.checks} == {"pass"}  # the app folder's checks ran
    last = max(states["prod-0"].records)
    record = states["prod-0"].records[last][0]
    assert record.status is Status.VERIFIED and "stored checks are unusable" in record.reason
    assert "prod-0" in (report.message or "")


def test_a_token_variable_gone_rolls_back_on_its_rollout_alone(states, monkeypatch):
    drivers = {n: FakeDriver(cluster(n), states[n]) for n in NAMES}
    released(drivers["prod-0"], "1.0.0", Status.VERIFIED)
    released(drivers["prod-0"], "1.1.0", Status.VERIFIED)
    monkeypatch.delenv("LIBRARY_TOKEN_ALICE")
    code, report = emergency({"prod-0": drivers["prod-0"]}, folder=App.from_folder(APP_DIR))
    assert code == EXIT_NEEDS_HUMAN
    assert states["prod-0"].applied[-1] == "1.0.0"
    detail = report.clusters["prod-0"].detail
    assert "LIBRARY_TOKEN_ALICE" in detail and "judged by its rollout only" in detail
    assert TOKENS["LIBRARY_TOKEN_BOB"] not in str(report.to_json())


def test_a_rollback_everyone_can_reach_and_prove_exits_0(states):
    drivers = {n: FakeDriver(cluster(n), states[n]) for n in NAMES}
    for driver in drivers.values():
        released(driver, "1.0.0", Status.VERIFIED)
        released(driver, "1.1.0", Status.VERIFIED)
    code, report = emergency(drivers)
    assert code == EXIT_OK and report.message is None
    assert {states[n].applied[-1] for n in NAMES} == {"1.0.0"}


def test_a_lock_file_left_by_a_released_run_still_reads_as_unlocked(tmp_path: Path) -> None:
    local = local_driver(tmp_path)
    local.acquire_lock(APP, holder="run-1", ttl=30)
    local.release_lock(APP, holder="run-1")
    kept = filestore.read_json(tmp_path / "prod-0" / "locks" / f"{APP}.json")
    assert "holderIdentity" not in kept["spec"]
    assert local.read_lock(APP) is None
