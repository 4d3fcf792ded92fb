"""Holding a run's locks across the fleet: what a second run, or an emergency rollback, meets.

The clusters are fake (tests/fakes.py): each keeps its lock in memory, and every write fences
on it exactly as the real drivers do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.fakes import FakeCluster, FakeDriver
from wavegate.config.fleet import Cluster
from wavegate.drivers.base import Lock
from wavegate.engine.locks import Locks
from wavegate.errors import EXIT_LOCKED, LockHeld, Preempted

APP = "library-app"
NAMES = ("prod-0", "prod-1", "prod-2")


@pytest.fixture
def states() -> Iterator[dict[str, FakeCluster]]:
    clusters = {name: FakeCluster(name) for name in NAMES}
    yield clusters
    for state in clusters.values():
        state.stop()


def drivers(states: dict[str, FakeCluster]) -> dict[str, FakeDriver]:
    return {name: FakeDriver(Cluster(name=name, region="r", driver="local",
                                     namespace="library"), state)
            for name, state in states.items()}


def holders(states: dict[str, FakeCluster]) -> dict[str, str | None]:
    return {name: state.lock.holder if state.lock else None for name, state in states.items()}


def test_a_run_holds_every_cluster_while_it_lives_and_lets_go_after(states):
    with Locks(drivers(states), app=APP, holder="run-a"):
        assert holders(states) == dict.fromkeys(NAMES, "run-a")
    assert holders(states) == dict.fromkeys(NAMES, None)


def test_a_held_lock_names_its_holder_exits_4_and_leaves_nothing_locked_by_the_loser(states):
    states["prod-1"].lock = Lock(holder="run-first", expires="2030-01-01T00:00:00Z")
    with pytest.raises(LockHeld) as refused, Locks(drivers(states), app=APP, holder="run-b"):
        pytest.fail("the second run must not start")
    assert refused.value.exit_code == EXIT_LOCKED == 4
    assert "run-first" in str(refused.value) and "prod-1" in str(refused.value)
    # prod-0 was taken before prod-1 refused: it is given back; the first run keeps prod-1.
    assert holders(states) == {"prod-0": None, "prod-1": "run-first", "prod-2": None}


def test_an_emergency_rollback_takes_the_locks_by_force(states):
    for state in states.values():
        state.lock = Lock(holder="run-deploy", expires="2030-01-01T00:00:00Z")
    with Locks(drivers(states), app=APP, holder="run-rollback", force=True):
        assert holders(states) == dict.fromkeys(NAMES, "run-rollback")


def test_a_paused_run_keeps_its_locks_when_asked(states):
    with Locks(drivers(states), app=APP, holder="run-a") as locks:
        locks.keep = True
    assert holders(states) == dict.fromkeys(NAMES, "run-a")


def test_a_run_that_loses_a_lock_learns_it_at_renewal_and_who_took_it(states):
    lost: list[Preempted] = []
    told = threading.Event()

    def on_lost(error: Preempted) -> None:
        lost.append(error)
        told.set()

    with Locks(drivers(states), app=APP, holder="run-a", ttl=0.03, on_lost=on_lost):
        states["prod-2"].lock = Lock(holder="run-rollback", expires="2030-01-01T00:00:00Z")
        assert told.wait(timeout=30), "the renewal never noticed the lost lock"
    assert [error.cluster for error in lost] == ["prod-2"]
    assert lost[0].exit_code == EXIT_LOCKED
    assert "run-rollback" in str(lost[0])
    # Leaving releases only what the run still holds: the rollback keeps prod-2.
    assert holders(states) == {"prod-0": None, "prod-1": None, "prod-2": "run-rollback"}
