"""Rebuilding an unfinished run from the ledgers: each cluster's state, and what happens next."""

from __future__ import annotations

import pytest

from wavegate.config.fleet import Policy, Wave
from wavegate.decide.ledger import Record, Status
from wavegate.decide.rebuild import cluster_state, observed_from_ledgers
from wavegate.decide.rollout import Ending, Plan, State, decide

RUN = "run-7"


def record(revision: int, version: str, status: Status, run_id: str = RUN,
           rollback_of: int | None = None) -> Record:
    return Record(app="library-app", cluster="prod-0", revision=revision, version=version,
                  status=status, run_id=run_id, by="t", started_at=f"2026-11-29T00:00:0{revision}",
                  rollback_of=rollback_of)


BEFORE = record(1, "1.0.0", Status.VERIFIED, run_id="run-1")


@pytest.mark.parametrize(("records", "state", "revision"), [
    ([BEFORE], State.PENDING, None),                                        # never reached
    ([BEFORE, record(2, "1.1.0", Status.APPLYING)], State.PENDING, 2),        # killed mid-step
    ([BEFORE, record(2, "1.1.0", Status.INTERRUPTED)], State.PENDING, 2),
    ([BEFORE, record(2, "1.1.0", Status.VERIFIED)], State.VERIFIED, 2),
    ([BEFORE, record(2, "1.1.0", Status.FAILED)], State.FAILED, 2),
    ([BEFORE, record(2, "1.1.0", Status.FAILED),                             # rollback cut short
      record(3, "1.0.0", Status.APPLYING, rollback_of=2)], State.FAILED, 2),
    ([BEFORE, record(2, "1.1.0", Status.ROLLED_BACK),                        # rollback finished
      record(3, "1.0.0", Status.VERIFIED, rollback_of=2)], State.ROLLED_BACK, 2),
])
def test_cluster_state_from_its_ledger(records: list[Record], state: State,
                                       revision: int | None) -> None:
    status, mine = cluster_state(records, RUN)
    assert status.state is state
    assert (mine.revision if mine else None) == revision
    assert status.changed is (revision is not None)


WAVES = (Wave("canary", ("prod-0",), 1, 0.0), Wave("rest", ("prod-1",), 1, 0.0))
PLAN = Plan(WAVES, Policy(check_interval=1.0))


def test_a_run_killed_mid_canary_deploys_the_canary_again() -> None:
    seen, mine = observed_from_ledgers(
        WAVES, {"prod-0": [BEFORE, record(2, "1.1.0", Status.APPLYING)], "prod-1": []}, RUN)
    assert decide(PLAN, seen, 0.0).deploy == ("prod-0",)
    assert mine["prod-0"].revision == 2  # reused, not a new revision


def test_a_run_killed_mid_rollback_finishes_the_rollback_and_touches_nothing_new() -> None:
    seen, _ = observed_from_ledgers(WAVES, {
        "prod-0": [BEFORE, record(2, "1.1.0", Status.FAILED),
                   record(3, "1.0.0", Status.APPLYING, rollback_of=2)],
        "prod-1": []}, RUN)
    assert decide(PLAN, seen, 0.0).rollback == (("prod-0",),)


def test_a_run_whose_rollback_had_finished_just_ends() -> None:
    seen, _ = observed_from_ledgers(WAVES, {
        "prod-0": [BEFORE, record(2, "1.1.0", Status.ROLLED_BACK),
                   record(3, "1.0.0", Status.VERIFIED, rollback_of=2)],
        "prod-1": []}, RUN)
    decision = decide(PLAN, seen, 0.0)
    assert decision.rollback == ()
    assert decision.finish is Ending.ROLLED_BACK


def test_a_closed_window_pauses_before_the_next_wave_never_inside_one() -> None:
    from dataclasses import replace

    from wavegate.decide.rollout import ClusterStatus, Observed

    closed = Observed({"prod-0": ClusterStatus(State.VERIFIED), "prod-1": ClusterStatus()},
                      window_open=False)
    decision = decide(PLAN, closed, 0.0)
    assert decision.finish is Ending.PAUSED and decision.paused_at == "rest"
    mid_wave = replace(closed, clusters={"prod-0": ClusterStatus(State.BAKING),
                                         "prod-1": ClusterStatus()})
    assert decide(PLAN, mid_wave, 0.0).finish is None  # a started wave finishes its bake


def test_a_gated_wave_pauses_unless_approved() -> None:
    from wavegate.decide.rollout import ClusterStatus, Observed

    gated = Plan(WAVES, Policy(check_interval=1.0, approval=("rest",)))
    seen = Observed({"prod-0": ClusterStatus(State.VERIFIED), "prod-1": ClusterStatus()})
    assert decide(gated, seen, 0.0).paused_at == "rest"
    approved = Plan(WAVES, gated.policy, frozenset({"rest"}))
    assert decide(approved, seen, 0.0).deploy == ("prod-1",)
