"""What a run does next, as a pure function of (plan, observed, now).

Single decisions are table rows; whole runs are simulated by feeding each decision back the way
the runner does (deploys finish and verify at once, checks pass unless a case says otherwise)
and jumping the clock to `decision.wake_at`, so the production fleet's 2-hour canary bake and
2-hour watch run in milliseconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from wavegate.config.fleet import Policy, Wave
from wavegate.decide import rollout
from wavegate.decide.rollout import (
    ClusterStatus,
    Decision,
    Ending,
    Observed,
    Plan,
    State,
    after_round,
    decide,
    rollback_order,
    with_bake_started,
    with_round,
    with_state,
    with_wave_verified,
)
from wavegate.decide.verdict import Outcome

P, APPLYING, ROLLING_OUT, VERIFYING = (State.PENDING, State.APPLYING, State.ROLLING_OUT,
                                       State.VERIFYING)
BAKING, VERIFIED, FAILED = State.BAKING, State.VERIFIED, State.FAILED
ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED = (State.ROLLING_BACK, State.ROLLED_BACK,
                                              State.ROLLBACK_FAILED)
PASS, FAIL, ERROR = Outcome.PASS, Outcome.FAIL, Outcome.ERROR
INTERRUPTED = State.INTERRUPTED

# clusters/production.yaml, as loaded (see test_fleet): the incident's fleet.
CANARY = Wave("canary", ("prod-0",), max_parallel=1, bake=7200.0)
REGIONS = Wave("regions", ("prod-2", "prod-3", "prod-4"), max_parallel=3, bake=3600.0)
REST = Wave("rest", ("prod-1", "prod-5"), max_parallel=2, bake=1800.0)
WAVES = (CANARY, REGIONS, REST)
POLICY = Policy(check_interval=30.0, max_check_errors=3, watch=0.0)
PLAN = Plan(WAVES, POLICY)


def plan(*, waves: tuple[Wave, ...] = WAVES, **policy: object) -> Plan:
    return Plan(waves, dataclasses.replace(POLICY, **policy))


def observed(states: Mapping[str, State] | None = None, *, waves: tuple[Wave, ...] = WAVES,
             **changes: object) -> Observed:
    seen = Observed.start(waves)
    for name, state in (states or {}).items():
        seen = with_state(seen, name, state)
    return dataclasses.replace(seen, **changes)


def wave_states(wave: Wave, *states: State) -> dict[str, State]:
    return dict(zip(wave.clusters, states, strict=True))


# --- deploying ------------------------------------------------------------------------------------

def test_the_first_decision_deploys_the_canary_only() -> None:
    assert decide(PLAN, Observed.start(WAVES), 0.0) == Decision(deploy=("prod-0",))


def test_the_next_wave_starts_only_when_the_one_before_is_verified() -> None:
    baking = observed({"prod-0": BAKING}, bake_started={"canary": 0.0})
    assert decide(PLAN, baking, 10.0).deploy == ()
    verified = observed({"prod-0": VERIFIED})
    assert decide(PLAN, verified, 10.0) == Decision(deploy=("prod-2", "prod-3", "prod-4"))
    all_but_rest = observed({name: VERIFIED for w in (CANARY, REGIONS) for name in w.clusters})
    assert decide(PLAN, all_but_rest, 10.0) == Decision(deploy=("prod-1", "prod-5"))


WIDE = Wave("wide", ("a", "b", "c", "d"), max_parallel=2, bake=60.0)


@pytest.mark.parametrize(("states", "deploy"), [
    pytest.param((P, P, P, P), ("a", "b"), id="all-pending: two at a time"),
    pytest.param((APPLYING, P, P, P), ("b",), id="one-busy: one more"),
    pytest.param((APPLYING, ROLLING_OUT, P, P), (), id="two-busy: none"),
    pytest.param((VERIFYING, APPLYING, P, P), (), id="verifying-counts-as-busy"),
    pytest.param((BAKING, ROLLING_OUT, P, P), ("c",), id="baking-frees-a-slot"),
    pytest.param((BAKING, BAKING, P, P), ("c", "d"), id="both-baking: next two"),
    pytest.param((BAKING, BAKING, BAKING, APPLYING), (), id="last-one-busy: wait"),
])
def test_max_parallel_bounds_deploys_within_a_wave(
    states: tuple[State, ...], deploy: tuple[str, ...],
) -> None:
    seen = observed(wave_states(WIDE, *states), waves=(WIDE,))
    assert decide(plan(waves=(WIDE,)), seen, 5.0).deploy == deploy


@pytest.mark.parametrize(("states", "expected"), [
    pytest.param((BAKING, BAKING, VERIFYING), Decision(check=("prod-4",)),
                 id="one-still-verifying: verify it"),
    pytest.param((BAKING, ROLLING_OUT, BAKING), Decision(), id="one-rolling-out: wait"),
    pytest.param((BAKING, BAKING, BAKING),
                 Decision(start_bake="regions", wake_at=7300.0), id="all-baking: bake starts"),
])
def test_a_wave_bake_starts_when_all_its_clusters_are_baking(
    states: tuple[State, ...], expected: Decision,
) -> None:
    seen = observed({"prod-0": VERIFIED, **wave_states(REGIONS, *states)})
    assert decide(PLAN, seen, 7300.0) == expected


# --- baking: checks every interval and once more at the end ------------------------------------

SHORT = Wave("short", ("c",), max_parallel=1, bake=100.0)  # 100 s: not a multiple of 30 s


@pytest.mark.parametrize(("last", "now", "expected"), [
    pytest.param(None, 0.0, Decision(check=("c",), wake_at=30.0), id="never-checked: due now"),
    pytest.param(0.0, 10.0, Decision(wake_at=30.0), id="before-the-interval"),
    pytest.param(0.0, 30.0, Decision(check=("c",), wake_at=30.0), id="at-the-interval"),
    pytest.param(30.0, 45.0, Decision(wake_at=60.0), id="next-interval"),
    pytest.param(90.0, 95.0, Decision(wake_at=100.0), id="next-look-is-bake-end-not-120"),
    pytest.param(90.0, 100.0, Decision(check=("c",), wake_at=100.0),
                 id="bake-end: a final check"),
    pytest.param(90.0, 150.0, Decision(check=("c",), wake_at=100.0),
                 id="woke-late: still a final check first"),
    pytest.param(100.0, 100.0, Decision(wave_verified="short"),
                 id="final-check-done: verified"),
    pytest.param(100.5, 160.0, Decision(wave_verified="short"), id="final-check-done-late"),
])
def test_checks_come_due_every_interval_and_once_more_at_bake_end(
    last: float | None, now: float, expected: Decision,
) -> None:
    seen = observed({"c": BAKING}, waves=(SHORT,), bake_started={"short": 0.0})
    seen = dataclasses.replace(seen, clusters={"c": ClusterStatus(BAKING, last_check_at=last)})
    assert decide(plan(waves=(SHORT,)), seen, now) == expected


def test_only_the_clusters_that_are_due_are_checked() -> None:
    seen = observed(wave_states(REGIONS, BAKING, BAKING, BAKING) | {"prod-0": VERIFIED},
                    bake_started={"regions": 0.0})
    last = {"prod-2": 0.0, "prod-3": 20.0, "prod-4": 5.0}
    seen = dataclasses.replace(seen, clusters={
        **seen.clusters, **{n: ClusterStatus(BAKING, last_check_at=t) for n, t in last.items()}})
    assert decide(PLAN, seen, 36.0) == Decision(check=("prod-2", "prod-4"), wake_at=30.0)
    assert decide(PLAN, seen, 25.0) == Decision(wake_at=30.0)


def test_a_wave_without_bake_is_verified_as_soon_as_its_bake_starts() -> None:
    instant = Wave("instant", ("c",), max_parallel=1, bake=0.0)
    p = plan(waves=(instant,))
    seen = observed({"c": BAKING}, waves=(instant,))
    assert decide(p, seen, 5.0) == Decision(start_bake="instant", wake_at=5.0)
    started = with_bake_started(seen, "instant", 5.0)
    assert decide(p, started, 5.0) == Decision(wave_verified="instant")
    verified = with_wave_verified(started, instant)
    assert decide(p, verified, 5.0) == Decision(finish=Ending.SUCCEEDED)


# --- first verification: scheduled here like bake rounds ------------------------------------------

def verifying(errors: int = 0, last: float | None = None) -> ClusterStatus:
    return ClusterStatus(VERIFYING, consecutive_errors=errors, last_check_at=last, changed=True)


@pytest.mark.parametrize(("status", "now", "expected"), [
    pytest.param(verifying(), 5.0, Decision(check=("prod-0",)), id="rolled-out: verify at once"),
    pytest.param(verifying(1, 5.0), 5.5, Decision(wake_at=6.0),
                 id="errored: wait the retry pause"),
    pytest.param(verifying(1, 5.0), 6.0, Decision(check=("prod-0",)),
                 id="errored: retry after the pause"),
])
def test_first_verification_rounds_are_decided(status: ClusterStatus, now: float,
                                               expected: Decision) -> None:
    seen = dataclasses.replace(observed(), clusters={**observed().clusters, "prod-0": status})
    assert decide(PLAN, seen, now) == expected


def test_the_retry_pause_is_capped_by_the_check_interval() -> None:
    p = plan(check_interval=0.25)
    seen = dataclasses.replace(observed(), clusters={**observed().clusters,
                                                     "prod-0": verifying(1, 5.0)})
    assert decide(p, seen, 5.1) == Decision(wake_at=5.25)


@pytest.mark.parametrize(("outcome", "state"), [
    pytest.param(PASS, BAKING, id="pass: baking"),
    pytest.param(FAIL, FAILED, id="fail: failed"),
    pytest.param(ERROR, VERIFYING, id="error: verify again"),
])
def test_a_first_verification_round_moves_the_cluster_on(outcome: Outcome, state: State) -> None:
    assert after_round(verifying(), outcome, POLICY, 7.0, "why").state is state


@pytest.mark.parametrize("state", [ROLLING_BACK, ROLLED_BACK, FAILED, P])
def test_a_round_reported_late_does_not_change_a_cluster_that_moved_on(state: State) -> None:
    status = ClusterStatus(state, changed=True)
    assert after_round(status, FAIL, POLICY, 7.0, "late") == status


def test_a_stop_while_verifying_rolls_the_cluster_back_without_waiting_for_a_pass() -> None:
    seen = observed({"prod-0": VERIFYING}, stop=Ending.INTERRUPTED)
    assert decide(PLAN, seen, 5.0) == Decision(unwind=("prod-0",))
    unwound = with_state(rollout.with_unwound(seen, ("prod-0",)), "prod-0", ROLLED_BACK)
    assert decide(PLAN, unwound, 6.0) == Decision(finish=Ending.INTERRUPTED)


def test_a_failure_rolls_back_a_sibling_still_verifying() -> None:
    seen = observed({"prod-0": VERIFIED, "prod-2": FAILED, "prod-3": VERIFYING, "prod-4": P})
    assert decide(PLAN, seen, 5.0) == Decision(rollback=(("prod-2", "prod-3"), ("prod-0",)))


# --- rounds: a fail fails at once, errors fail safe --------------------------------------------

@pytest.mark.parametrize(("outcomes", "state", "errors", "reason"), [
    pytest.param([PASS], BAKING, 0, None, id="pass"),
    pytest.param([ERROR], BAKING, 1, None, id="one-error: keep going"),
    pytest.param([ERROR, ERROR], BAKING, 2, None, id="two-errors: keep going"),
    pytest.param([ERROR, ERROR, ERROR], FAILED, 3,
                 "3 consecutive check errors (fail safe): detail-3", id="three-errors: failed"),
    pytest.param([ERROR, ERROR, PASS, ERROR, ERROR], BAKING, 2, None,
                 id="a-pass-resets-the-count"),
    pytest.param([FAIL], FAILED, 0, "detail-1", id="a-fail-fails-at-once"),
    pytest.param([ERROR, FAIL], FAILED, 1, "detail-2", id="a-fail-after-an-error"),
])
def test_after_round(outcomes: list[Outcome], state: State, errors: int,
                     reason: str | None) -> None:
    status = ClusterStatus(BAKING)
    for number, outcome in enumerate(outcomes, start=1):
        status = after_round(status, outcome, POLICY, float(number * 30), f"detail-{number}")
    assert (status.state, status.consecutive_errors, status.reason) == (state, errors, reason)
    assert status.last_check_at == len(outcomes) * 30.0


def test_max_check_errors_one_fails_on_the_first_error() -> None:
    status = after_round(ClusterStatus(BAKING), ERROR, dataclasses.replace(
        POLICY, max_check_errors=1), 1.0, "timeout")
    assert status.state is FAILED


def test_with_round_changes_only_its_cluster() -> None:
    seen = observed(wave_states(REGIONS, BAKING, BAKING, BAKING))
    after = with_round(seen, "prod-3", FAIL, POLICY, 42.0, "leak")
    assert after.clusters["prod-3"] == ClusterStatus(FAILED, 0, 42.0, "leak", changed=True)
    assert after.clusters["prod-2"] == seen.clusters["prod-2"]
    assert seen.clusters["prod-3"].state is BAKING  # the input is not changed


# --- failure ------------------------------------------------------------------------------------

REGIONS_FAILED = {"prod-0": VERIFIED, "prod-2": BAKING, "prod-3": FAILED, "prod-4": BAKING}


@pytest.mark.parametrize("states", [
    pytest.param({"prod-0": VERIFIED, "prod-2": FAILED, "prod-3": ROLLING_OUT, "prod-4": BAKING},
                 id="rolling-out"),
    pytest.param({"prod-0": VERIFIED, "prod-2": FAILED, "prod-3": APPLYING, "prod-4": VERIFYING},
                 id="applying-and-verifying"),
    pytest.param({"prod-0": ROLLING_BACK, "prod-2": FAILED}, id="rolling-back"),
])
def test_after_a_failure_in_flight_clusters_settle_first(states: dict[str, State]) -> None:
    assert decide(PLAN, observed(states), 100.0) == Decision()


ORDER = [
    pytest.param("rollback-release", REGIONS_FAILED,
                 (("prod-2", "prod-3", "prod-4"), ("prod-0",)),
                 id="release: failing wave, then earlier ones; rest untouched"),
    pytest.param("rollback-release",
                 {"prod-0": VERIFIED, "prod-2": FAILED, "prod-3": P, "prod-4": P},
                 (("prod-2",), ("prod-0",)), id="release: pending clusters of the wave untouched"),
    pytest.param("rollback-release", {"prod-0": FAILED}, (("prod-0",),),
                 id="release: canary fails, five clusters never touched"),
    pytest.param("rollback-release",
                 {n: VERIFIED for n in ("prod-1", "prod-2", "prod-3", "prod-4", "prod-5")}
                 | {"prod-0": FAILED},
                 (("prod-0",), ("prod-1", "prod-5"), ("prod-2", "prod-3", "prod-4")),
                 id="release: failure during watch, failing wave first then newest first"),
    pytest.param("rollback-failed", REGIONS_FAILED, (("prod-3",),),
                 id="failed: only the failed cluster"),
    pytest.param("rollback-failed",
                 {"prod-0": VERIFIED, "prod-2": FAILED, "prod-3": BAKING, "prod-4": FAILED},
                 (("prod-2", "prod-4"),), id="failed: every failed cluster, one group"),
]


@pytest.mark.parametrize(("on_failure", "states", "order"), ORDER)
def test_rollback_order(on_failure: str, states: dict[str, State],
                        order: tuple[tuple[str, ...], ...]) -> None:
    p, seen = plan(on_failure=on_failure), observed(states)
    assert rollback_order(p, seen) == order
    assert decide(p, seen, 100.0) == Decision(rollback=order)


def test_halt_finishes_needs_human_without_rollback() -> None:
    assert decide(plan(on_failure="halt"), observed(REGIONS_FAILED), 100.0) == Decision(
        finish=Ending.NEEDS_HUMAN)


@pytest.mark.parametrize(("on_failure", "states", "ending"), [
    pytest.param("rollback-release",
                 {"prod-0": ROLLED_BACK, "prod-2": ROLLED_BACK, "prod-3": ROLLED_BACK,
                  "prod-4": ROLLED_BACK}, Ending.ROLLED_BACK, id="all-back"),
    pytest.param("rollback-release",
                 {"prod-0": ROLLED_BACK, "prod-2": ROLLED_BACK, "prod-3": ROLLBACK_FAILED,
                  "prod-4": ROLLED_BACK}, Ending.NEEDS_HUMAN, id="one-rollback-failed"),
    pytest.param("rollback-failed",
                 {"prod-0": VERIFIED, "prod-2": BAKING, "prod-3": ROLLED_BACK,
                  "prod-4": BAKING}, Ending.ROLLED_BACK, id="rollback-failed-policy"),
])
def test_after_rollback_the_run_finishes(on_failure: str, states: dict[str, State],
                                         ending: Ending) -> None:
    seen = observed(states, rollback_done=True)
    assert decide(plan(on_failure=on_failure), seen, 100.0) == Decision(finish=ending)



def test_a_rollback_not_proved_by_its_own_checks_needs_a_human() -> None:
    back = {"prod-0": ROLLED_BACK, "prod-2": ROLLED_BACK, "prod-3": ROLLED_BACK,
            "prod-4": ROLLED_BACK}
    seen = dataclasses.replace(observed(back, rollback_done=True), unproven=frozenset({"prod-3"}))
    assert decide(plan(), seen, 100.0) == Decision(finish=Ending.NEEDS_HUMAN)

# --- stop (signals, lost locks) ------------------------------------------------------------------

@pytest.mark.parametrize("stop", [Ending.INTERRUPTED, Ending.PREEMPTED])
def test_a_stop_finishes_after_in_flight_steps_settle(stop: Ending) -> None:
    busy = observed({"prod-0": VERIFIED, "prod-2": APPLYING, "prod-3": BAKING}, stop=stop)
    assert decide(PLAN, busy, 100.0) == Decision()
    settled = with_state(busy, "prod-2", BAKING)
    assert decide(PLAN, settled, 100.0) == Decision(finish=stop)


@pytest.mark.parametrize(("states", "unwind"), [
    pytest.param({"prod-0": INTERRUPTED}, ("prod-0",), id="apply cut short"),
    pytest.param({"prod-0": VERIFIED, "prod-2": VERIFYING, "prod-3": INTERRUPTED,
                  "prod-4": BAKING}, ("prod-2", "prod-3"), id="verified and baking stay"),
    pytest.param({"prod-0": BAKING, "prod-2": P}, (), id="nothing unverified"),
])
def test_an_interrupt_rolls_back_only_what_is_not_verified(
        states: dict[str, State], unwind: tuple[str, ...]) -> None:
    seen = observed(states, stop=Ending.INTERRUPTED, bake_started={"canary": 0.0})
    expected = Decision(unwind=unwind) if unwind else Decision(finish=Ending.INTERRUPTED)
    assert decide(PLAN, seen, 100.0) == expected


def test_an_interrupt_under_halt_leaves_the_unverified_for_resume() -> None:
    seen = observed({"prod-0": VERIFYING}, stop=Ending.INTERRUPTED)
    assert decide(plan(on_failure="halt"), seen, 5.0) == Decision(finish=Ending.INTERRUPTED)


def test_an_unwound_cluster_is_not_a_failure_of_the_release() -> None:
    seen = observed({"prod-0": VERIFIED, "prod-2": ROLLBACK_FAILED}, stop=Ending.INTERRUPTED)
    unwound = rollout.with_unwound(seen, ("prod-2",))
    assert decide(PLAN, unwound, 5.0) == Decision(finish=Ending.INTERRUPTED)
    assert decide(PLAN, seen, 5.0).rollback  # not unwound: a failure, and its policy


def test_a_stop_during_a_bake_finishes_at_once() -> None:
    seen = observed({"prod-0": BAKING}, bake_started={"canary": 0.0}, stop=Ending.INTERRUPTED)
    assert decide(PLAN, seen, 100.0) == Decision(finish=Ending.INTERRUPTED)


# --- whole runs, simulated -----------------------------------------------------------------------

Checker = Callable[[str, float], Outcome]


def always_pass(_cluster: str, _now: float) -> Outcome:
    return PASS


@dataclass
class Run:
    ending: Ending | None = None
    now: float = 0.0
    decisions: int = 0
    deploys: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    verified: list[tuple[float, str]] = field(default_factory=list)
    rounds: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)  # first-verification rounds
    rollbacks: tuple[tuple[str, ...], ...] = ()
    watch_started: float | None = None
    seen: Observed | None = None


def simulate(p: Plan, check: Checker = always_pass, *, rollback_fails: frozenset[str] = frozenset(),
             limit: int = 100_000) -> Run:
    """Feed decisions back as the runner does: every step succeeds at once unless told."""
    run, seen = Run(rounds={}), Observed.start(p.waves)
    for _ in range(limit):
        decision = decide(p, seen, run.now)
        run.decisions += 1
        if decision.finish is not None:
            run.ending, run.seen = decision.finish, seen
            return run
        if decision.deploy:
            run.deploys.append((run.now, decision.deploy))
        for name in decision.deploy:  # applied and rolled out; decide asks to verify it
            seen = with_state(seen, name, VERIFYING)
        if decision.start_bake is not None:
            seen = with_bake_started(seen, decision.start_bake, run.now)
        for name in decision.check:
            counter = run.first if seen.clusters[name].state is VERIFYING else run.rounds
            counter[name] = counter.get(name, 0) + 1
            seen = with_round(seen, name, check(name, run.now), p.policy, run.now, "round")
        if decision.wave_verified is not None:
            run.verified.append((run.now, decision.wave_verified))
            seen = with_wave_verified(seen, next(w for w in p.waves
                                                 if w.name == decision.wave_verified))
        if decision.start_watch:
            run.watch_started = run.now
            seen = dataclasses.replace(seen, watch_started=run.now)
        if decision.rollback:
            run.rollbacks = decision.rollback
            for name in (n for group in decision.rollback for n in group):
                seen = with_state(seen, name,
                                  ROLLBACK_FAILED if name in rollback_fails else ROLLED_BACK)
            seen = dataclasses.replace(seen, rollback_done=True)
        if decision.wake_at is not None and decision.wake_at > run.now:
            run.now = decision.wake_at
        elif decision == Decision():
            raise AssertionError(f"stuck at {run.now}: nothing to do and no time to wake")
    raise AssertionError("the run did not finish")


def test_production_rollout_with_its_2h_canary_bake_runs_in_milliseconds() -> None:
    started = time.perf_counter()
    run = simulate(PLAN)
    assert time.perf_counter() - started < 1.0
    assert run.ending is Ending.SUCCEEDED
    assert run.deploys == [(0.0, ("prod-0",)), (7200.0, ("prod-2", "prod-3", "prod-4")),
                           (10800.0, ("prod-1", "prod-5"))]
    assert run.verified == [(7200.0, "canary"), (10800.0, "regions"), (12600.0, "rest")]
    # One round every 30 s of each bake, the last one at the bake's end, after one first
    # verification round per cluster.
    assert run.rounds == {"prod-0": 240, "prod-2": 120, "prod-3": 120, "prod-4": 120,
                          "prod-1": 60, "prod-5": 60}
    assert run.first == dict.fromkeys(run.rounds, 1)
    assert run.decisions < 2000


def test_watch_keeps_checking_every_cluster_then_succeeds() -> None:
    run = simulate(plan(watch=7200.0))
    assert run.ending is Ending.SUCCEEDED
    assert run.watch_started == 12600.0
    assert run.now == 12600.0 + 7200.0
    # 2 h / 30 s = 240 watch rounds each. Clusters whose last check is older than an interval
    # (the canary and the regions) are checked the moment the watch starts: one more.
    bake = {"prod-0": 240, "prod-2": 120, "prod-3": 120, "prod-4": 120, "prod-1": 60,
            "prod-5": 60}
    watch = {"prod-0": 241, "prod-2": 241, "prod-3": 241, "prod-4": 241, "prod-1": 240,
             "prod-5": 240}
    assert run.rounds == {name: bake[name] + watch[name] for name in bake}


def test_the_watch_starts_after_the_last_wave_is_verified() -> None:
    everything = {name: VERIFIED for wave in WAVES for name in wave.clusters}
    p = plan(watch=600.0)
    assert decide(p, observed(everything), 50.0) == Decision(start_watch=True, wake_at=50.0)
    assert decide(PLAN, observed(everything), 50.0) == Decision(finish=Ending.SUCCEEDED)


def test_a_failure_during_watch_rolls_back_every_cluster() -> None:
    def leak_later(cluster: str, now: float) -> Outcome:
        return FAIL if cluster == "prod-4" and now >= 12600.0 + 3600.0 else PASS

    run = simulate(plan(watch=7200.0), leak_later)
    assert run.rollbacks == (("prod-2", "prod-3", "prod-4"), ("prod-1", "prod-5"), ("prod-0",))
    assert run.ending is Ending.ROLLED_BACK
    assert run.now == 12600.0 + 3600.0


def test_the_incident_replayed_a_canary_failure_never_touches_the_other_five() -> None:
    def regression(cluster: str, now: float) -> Outcome:
        return FAIL if now >= 600.0 else PASS

    run = simulate(PLAN, regression)
    assert run.deploys == [(0.0, ("prod-0",))]
    assert run.rollbacks == (("prod-0",),)
    assert run.ending is Ending.ROLLED_BACK
    assert run.now == 600.0  # acted on at the first failing round, not at bake end
    assert run.seen is not None
    assert {n for n, s in run.seen.clusters.items() if s.state is P} == {
        "prod-1", "prod-2", "prod-3", "prod-4", "prod-5"}


@pytest.mark.parametrize(("errors_from", "ending", "rounds"), [
    pytest.param(None, Ending.SUCCEEDED, 240, id="no-errors"),
    pytest.param((300.0, 330.0), Ending.SUCCEEDED, 240, id="two-errors-then-pass: keep going"),
    pytest.param((300.0, 360.0), Ending.ROLLED_BACK, 12, id="three-errors: fail safe"),
])
def test_errors_below_max_keep_going_reaching_it_fails(
    errors_from: tuple[float, float] | None, ending: Ending, rounds: int,
) -> None:
    def flaky(_cluster: str, now: float) -> Outcome:
        if errors_from and errors_from[0] <= now <= errors_from[1]:
            return ERROR
        return PASS

    run = simulate(plan(waves=(CANARY,)), flaky)
    assert run.ending is ending
    assert run.rounds["prod-0"] == rounds


def test_a_failed_rollback_ends_needing_a_human() -> None:
    def fail_in_regions(cluster: str, now: float) -> Outcome:
        return FAIL if cluster == "prod-3" and now > 7200.0 else PASS

    run = simulate(PLAN, fail_in_regions, rollback_fails=frozenset({"prod-0"}))
    assert run.rollbacks == (("prod-2", "prod-3", "prod-4"), ("prod-0",))
    assert run.ending is Ending.NEEDS_HUMAN


@pytest.mark.parametrize("period", ["bake", "watch"])
def test_a_final_round_that_errored_is_not_counted_as_passed(period: str) -> None:
    p = plan(waves=(CANARY,), watch=600.0 if period == "watch" else 0.0)
    end = 7200.0 + (600.0 if period == "watch" else 0.0)

    def unreachable_at_the_end(_cluster: str, now: float) -> Outcome:
        return ERROR if now == end else PASS

    run = simulate(p, unreachable_at_the_end)
    # Either judged again after the error (and passing), or not a success.
    assert run.ending is not Ending.SUCCEEDED or run.now > end


def test_observed_start_lists_every_cluster_pending() -> None:
    seen = Observed.start(WAVES)
    assert list(seen.clusters) == ["prod-0", "prod-2", "prod-3", "prod-4", "prod-1", "prod-5"]
    assert {s.state for s in seen.clusters.values()} == {P}
    assert (seen.bake_started, seen.watch_started, seen.rollback_done, seen.stop) == (
        {}, None, False, None)


def test_in_flight_state_set() -> None:
    assert {APPLYING, ROLLING_OUT, VERIFYING, ROLLING_BACK} == rollout.IN_FLIGHT
