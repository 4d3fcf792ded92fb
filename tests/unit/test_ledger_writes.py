"""Ledger writes through a driver: new revisions, and status changes that never overwrite a
concurrent writer blindly (a deploy and an emergency rollback may write the same record)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeCluster, FakeDriver
from wavegate.config.app import Release
from wavegate.config.fleet import Cluster
from wavegate.decide.ledger import Counts, Record, Status
from wavegate.drivers.base import Lock
from wavegate.engine import ledger_writes
from wavegate.errors import Conflict, Preempted

APP = "library-app"
RUN = "run-1"


def release(version: str) -> Release:
    return Release(app=APP, version=version, manifests=(), checks="checks: []\n")


class RacingDriver(FakeDriver):
    """A fake cluster where another writer updates a record just before each of our writes
    lands, `races` times: what an emergency rollback does to a deploy's record."""

    def __init__(self, state: FakeCluster, *, races: int) -> None:
        super().__init__(Cluster(name=state.name, region="r", driver="local",
                                 namespace="library"), state)
        self.races, self.conflicts = races, 0

    def update_record(self, record: Record, *, holder: str) -> Record:
        if self.races:
            self.races -= 1
            current, stored = self.state.records[record.revision]
            other = current.updated(checks=Counts(passed=7),
                                    resource_version=str(int(current.resource_version or 0) + 1))
            self.state.records[record.revision] = (other, stored)
        try:
            return super().update_record(record, holder=holder)
        except Conflict:
            self.conflicts += 1
            raise


@pytest.fixture
def state() -> Iterator[FakeCluster]:
    cluster = FakeCluster("prod-0", lock=Lock(holder=RUN, expires="2030-01-01T00:00:00Z"))
    yield cluster
    cluster.stop()


def stored(state: FakeCluster) -> dict[int, tuple[str, str]]:
    return {revision: (record.version, record.status.value)
            for revision, (record, _) in sorted(state.records.items())}


def test_a_new_revision_is_applying_numbered_after_the_last_and_names_the_run(state):
    driver = RacingDriver(state, races=0)
    first = ledger_writes.open_revision(driver, release("1.0.0"), run_id=RUN, by="alice")
    ledger_writes.mark(driver, APP, first.revision, holder=RUN, status=Status.VERIFIED)
    second = ledger_writes.open_revision(driver, release("1.1.0"), run_id=RUN, by="alice")
    assert (first.revision, second.revision) == (1, 2)
    assert (second.status, second.run_id, second.by) == (Status.APPLYING, RUN, "alice")
    assert stored(state) == {1: ("1.0.0", "verified"), 2: ("1.1.0", "applying")}
    assert state.records[1][0].finished_at is not None  # a final status is stamped


def test_unfinished_revisions_are_superseded_by_the_next_one(state):
    driver = RacingDriver(state, races=0)
    killed = ledger_writes.open_revision(driver, release("1.0.0"), run_id=RUN, by="ci")
    ledger_writes.mark(driver, APP, killed.revision, holder=RUN, status=Status.INTERRUPTED)
    ledger_writes.open_revision(driver, release("1.0.0"), run_id=RUN, by="ci")
    assert stored(state) == {1: ("1.0.0", "superseded"), 2: ("1.0.0", "applying")}


def test_a_status_change_that_meets_a_concurrent_write_rereads_and_keeps_both(state):
    driver = RacingDriver(state, races=0)
    opened = ledger_writes.open_revision(driver, release("2.0.0"), run_id=RUN, by="ci")
    driver.races = 2
    marked = ledger_writes.mark(driver, APP, opened.revision, holder=RUN, status=Status.FAILED)
    assert driver.conflicts == 2  # the compare-and-set really lost, twice
    assert marked.status is Status.FAILED
    assert state.records[1][0].checks == Counts(passed=7)  # the other writer's change survives
    assert stored(state) == {1: ("2.0.0", "failed")}


def test_a_record_that_keeps_changing_underneath_is_a_conflict_not_a_blind_write(state):
    driver = RacingDriver(state, races=0)
    opened = ledger_writes.open_revision(driver, release("2.0.0"), run_id=RUN, by="ci")
    driver.races = 10
    with pytest.raises(Conflict):
        ledger_writes.mark(driver, APP, opened.revision, holder=RUN, status=Status.FAILED)
    assert stored(state) == {1: ("2.0.0", "applying")}


def test_a_run_that_lost_its_lock_cannot_write_the_ledger(state):
    driver = RacingDriver(state, races=0)
    opened = ledger_writes.open_revision(driver, release("2.0.0"), run_id=RUN, by="ci")
    state.lock = Lock(holder="run-rollback", expires="2030-01-01T00:00:00Z")
    with pytest.raises(Preempted, match="run-rollback"):
        ledger_writes.mark(driver, APP, opened.revision, holder=RUN, status=Status.VERIFIED)
    assert stored(state) == {1: ("2.0.0", "applying")}
