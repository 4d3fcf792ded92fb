"""Putting one cluster back on a verified release: what the ledger and the cluster show after,
and how each way it can go wrong is reported. The fake cluster serves the real Library App on
loopback, so the restored release is judged by its own checks on real answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeClock, FakeCluster, FakeDriver
from wavegate.config.app import App
from wavegate.config.fleet import Cluster, Policy
from wavegate.decide import ledger
from wavegate.decide.ledger import Record, Status
from wavegate.decide.rollout import State
from wavegate.drivers.base import Lock
from wavegate.engine import ledger_writes, restore
from wavegate.errors import Conflict, Preempted

APP = App.from_folder(Path(__file__).parents[2] / "manifests" / "library-app")
CLUSTER = Cluster(name="prod-0", region="r", driver="local", namespace="library",
                  values={"replicas": 3})
TOKENS = {"LIBRARY_TOKEN_ALICE": "alice-secret-token-1", "LIBRARY_TOKEN_BOB": "bob-secret-token-2",
          "LIBRARY_TOKEN_CAROL": "carol-secret-token-3"}
POLICY = Policy(check_interval=1.0, check_timeout=0.5, max_check_errors=2)
RUN = "run-rollback"


@pytest.fixture(autouse=True)
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in TOKENS.items():
        monkeypatch.setenv(variable, value)


@pytest.fixture
def state() -> Iterator[FakeCluster]:
    cluster = FakeCluster("prod-0", env=dict(TOKENS), lock=Lock(holder=RUN, expires="later"))
    yield cluster
    cluster.stop()


def released(driver: FakeDriver, version: str, status: Status) -> Record:
    """`version` applied by an earlier run and left with `status`."""
    release = APP.render(CLUSTER, version)
    record = ledger_writes.open_revision(driver, release, run_id=RUN, by="t")
    driver.apply(release, holder=RUN)
    return ledger_writes.mark(driver, APP.name, record.revision, holder=RUN, status=status)


def restore_to(driver: FakeDriver, *, replacing: Record | None,
               states: list[State] | None = None) -> restore.Restored:
    records = driver.records(APP.name)
    driver.state.reads = 0
    target = ledger.restore_target(records, replacing=replacing.revision) if replacing \
        else ledger.last_known_good(records)
    return restore.restore(driver, app=APP.name, records=records, replacing=replacing,
                           target=target, run_id=RUN, by="tester", reason="rollback: leak",
                           policy=POLICY, clock=FakeClock(),
                           on_state=(states if states is not None else []).append)


def history(state: FakeCluster) -> list[tuple[str, str, int | None]]:
    return [(r.version, r.status.value, r.rollback_of) for r, _ in state.records.values()]


def test_back_on_the_verified_release_proved_by_its_own_checks(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    bad = released(driver, "2.0.0", Status.FAILED)
    states: list[State] = []
    result = restore_to(driver, replacing=bad, states=states)
    assert result.ok and result.version == "1.0.0"
    assert result.detail == "back on 1.0.0 (revision 3)"
    assert {c["outcome"] for c in result.checks} == {"pass"}
    assert states == [State.ROLLING_BACK, State.ROLLED_BACK]
    assert state.applied[-1] == "1.0.0"
    assert history(state) == [("1.0.0", "verified", None), ("2.0.0", "rolled-back", None),
                              ("1.0.0", "verified", 2)]
    assert state.reads == 0  # the ledger the caller read is passed along to every write


def test_a_first_release_with_nothing_to_go_back_to_is_removed(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    bad = released(driver, "2.0.0", Status.FAILED)
    result = restore_to(driver, replacing=bad)
    assert result.ok and result.version is None
    assert result.detail == "no earlier verified release: removed the app"
    assert state.server is None
    assert history(state) == [("2.0.0", "rolled-back", None)]


def test_an_unfinished_record_replaced_is_superseded_then_rolled_back(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    cut_short = released(driver, "2.0.0", Status.APPLYING)
    result = restore_to(driver, replacing=cut_short)
    assert result.ok
    assert history(state)[1] == ("2.0.0", "rolled-back", None)


def test_a_target_that_fails_its_own_checks_is_a_failed_rollback(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    bad = released(driver, "2.0.0", Status.FAILED)
    state.env["LIBRARY_LEAK"] = "list-only"  # whatever runs now leaks, 1.0.0 included
    states: list[State] = []
    result = restore_to(driver, replacing=bad, states=states)
    assert not result.ok
    assert result.detail.startswith("1.0.0 failed its own checks: ")
    assert "[security]" in result.detail
    assert states == [State.ROLLING_BACK, State.ROLLBACK_FAILED]
    # The replaced release is not called rolled back: nothing good replaced it.
    assert history(state) == [("1.0.0", "verified", None), ("2.0.0", "failed", None),
                              ("1.0.0", "failed", 2)]


def test_a_rollout_that_fails_is_a_failed_rollback_with_its_reason(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    bad = released(driver, "2.0.0", Status.FAILED)
    state.broken_versions.add("1.0.0")
    result = restore_to(driver, replacing=bad)
    assert not result.ok
    assert result.detail == "library-app: PodCrashed: 1.0.0 exits at start"


def test_a_bug_is_a_failed_rollback_that_says_so(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    bad = released(driver, "2.0.0", Status.FAILED)
    state.faults["wait_rollout"] = KeyError("availableReplicas")
    states: list[State] = []
    result = restore_to(driver, replacing=bad, states=states)
    assert not result.ok
    assert result.detail == "internal error: KeyError: 'availableReplicas'"
    assert states[-1] is State.ROLLBACK_FAILED


def test_a_lost_lock_is_raised_for_the_caller_to_stop_on(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    bad = released(driver, "2.0.0", Status.FAILED)
    state.lock = Lock(holder="run-other", expires="later")
    with pytest.raises(Preempted, match="now held by run run-other"):
        restore_to(driver, replacing=bad)
    assert state.applied == ["1.0.0", "2.0.0"]  # nothing written under someone else's lock


def test_a_ledger_changed_underneath_is_read_again_once(state: FakeCluster) -> None:
    driver = FakeDriver(CLUSTER, state)
    released(driver, "1.0.0", Status.VERIFIED)
    bad = released(driver, "2.0.0", Status.FAILED)
    state.faults["update_record"] = Conflict("revision 3 changed since it was read")
    result = restore_to(driver, replacing=bad)
    assert result.ok
    assert history(state)[-1] == ("1.0.0", "verified", 2)
    assert state.reads == 1
