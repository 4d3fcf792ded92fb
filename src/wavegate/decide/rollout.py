"""What happens next in a run: a pure function of the plan, what was observed, and the time.

The runner owns all I/O; it asks `decide` what to do (deploy, a first verification round, a
bake or watch round, a rollback), does it, folds what it saw back into `Observed` with the
small `with_*` functions, and asks again. Nothing here sleeps, reads a
clock or touches a cluster, so a two-hour bake is a table row in the tests.

Per cluster: pending -> applying -> rolling-out -> verifying -> baking -> verified,
or -> failed -> rolling-back -> rolled-back | rollback-failed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from wavegate.config.fleet import Policy, Wave
from wavegate.decide.verdict import Outcome


class State(StrEnum):
    PENDING = "pending"
    APPLYING = "applying"
    ROLLING_OUT = "rolling-out"
    VERIFYING = "verifying"
    BAKING = "baking"
    VERIFIED = "verified"
    FAILED = "failed"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    ROLLBACK_FAILED = "rollback-failed"
    INTERRUPTED = "interrupted"


IN_FLIGHT = frozenset({State.APPLYING, State.ROLLING_OUT, State.VERIFYING, State.ROLLING_BACK})
# States a runner task is working in: a stop or a failure waits for them to settle. A verifying
# cluster is not among them: its rounds are scheduled here, one at a time, like bake rounds.
WORKING = frozenset({State.APPLYING, State.ROLLING_OUT, State.ROLLING_BACK})
# States whose check rounds count: a round that reports after a cluster failed or is being
# rolled back must not overwrite that.
JUDGED = frozenset({State.VERIFYING, State.BAKING, State.VERIFIED})
VERIFY_RETRY = 1.0  # between first-verification rounds that errored, capped by check_interval


class Ending(StrEnum):
    SUCCEEDED = "succeeded"      # every check passed
    ROLLED_BACK = "rolled-back"  # the release failed and every changed cluster went back
    NEEDS_HUMAN = "needs-human"  # a rollback failed, or the policy is halt
    INTERRUPTED = "interrupted"  # stopped by a signal at a safe point
    PREEMPTED = "preempted"      # an emergency rollback took the lock
    PAUSED = "paused"            # at an approval gate or outside the deploy windows
    ABORTED = "aborted"          # `wavegate abort`: treated as a failure of the whole run


@dataclass(frozen=True)
class ClusterStatus:
    state: State = State.PENDING
    consecutive_errors: int = 0
    last_check_at: float | None = None
    reason: str | None = None
    changed: bool = False  # this run has written to the cluster (it must be rolled back too)


@dataclass(frozen=True)
class Observed:
    clusters: Mapping[str, ClusterStatus]
    bake_started: Mapping[str, float] = field(default_factory=dict)
    watch_started: float | None = None
    rollback_done: bool = False
    stop: Ending | None = None  # set by a signal (INTERRUPTED) or a lost lock (PREEMPTED)
    window_open: bool = True  # inside the deploy windows (or told to ignore them)
    # Clusters an interrupt rolled back because they were not verified yet: not failures.
    unwound: frozenset[str] = frozenset()
    # Clusters rolled back but not proved by the target's own checks (stand-ins, or the
    # rollout alone): back on the last-known-good, yet a human should look (exit 3).
    unproven: frozenset[str] = frozenset()

    @classmethod
    def start(cls, waves: tuple[Wave, ...]) -> Observed:
        return cls({name: ClusterStatus() for wave in waves for name in wave.clusters})


@dataclass(frozen=True)
class Decision:
    deploy: tuple[str, ...] = ()
    check: tuple[str, ...] = ()
    start_bake: str | None = None
    wave_verified: str | None = None
    start_watch: bool = False
    rollback: tuple[tuple[str, ...], ...] = ()
    finish: Ending | None = None
    paused_at: str | None = None  # the wave a PAUSED run would start next
    abort: bool = False  # fail every cluster the run changed, then apply the failure policy
    unwind: tuple[str, ...] = ()  # interrupted before verified: back to last-known-good
    wake_at: float | None = None  # look again then, or when a task reports


@dataclass(frozen=True)
class Plan:
    waves: tuple[Wave, ...]
    policy: Policy
    approved: frozenset[str] = frozenset()  # gated waves that may start (--auto-approve: all)


def decide(plan: Plan, seen: Observed, now: float) -> Decision:
    working = any(status.state in WORKING for status in seen.clusters.values())
    failed = _failed(seen)  # once: at 1,000 clusters each look is a thousand
    if working and (seen.stop or failed):
        return Decision()  # let running steps reach a safe point first
    if seen.stop is Ending.PREEMPTED:
        return Decision(finish=seen.stop)  # whoever took the lock owns the clusters now
    if seen.stop is Ending.ABORTED:
        return Decision(abort=True)
    if failed:
        return _on_failure(plan, seen)  # an interrupt does not skip a rollback already due
    if seen.stop is Ending.INTERRUPTED and plan.policy.on_failure != "halt":
        unwind = _unverified(seen)
        if unwind:
            return Decision(unwind=unwind)
    if seen.stop is not None:
        return Decision(finish=seen.stop)
    wave = next((w for w in plan.waves if not _all(seen, w.clusters, State.VERIFIED)), None)
    if wave is None:
        return _watch(plan, seen, now)
    return _advance(plan, wave, seen, now)


def _advance(plan: Plan, wave: Wave, seen: Observed, now: float) -> Decision:
    states = [seen.clusters[name].state for name in wave.clusters]
    if all(state is State.PENDING for state in states):
        gated = wave.name in plan.policy.approval and wave.name not in plan.approved
        if gated or not seen.window_open:
            return Decision(finish=Ending.PAUSED, paused_at=wave.name)
    if not all(state in (State.BAKING, State.VERIFIED) for state in states):
        return _roll_out(plan.policy, wave, seen, now)
    started = seen.bake_started.get(wave.name)
    if started is None:
        return Decision(start_bake=wave.name, wake_at=now)
    if wave.bake <= 0:
        return Decision(wave_verified=wave.name)
    return _bake(plan.policy, wave, started, seen, now)


def _roll_out(policy: Policy, wave: Wave, seen: Observed, now: float) -> Decision:
    """Deploy into free slots, and send a first-verification round to every rolled-out
    cluster that is due (at once, then again after an error)."""
    busy = sum(1 for name in wave.clusters if seen.clusters[name].state in IN_FLIGHT)
    pending = [n for n in wave.clusters if seen.clusters[n].state is State.PENDING]
    verifying = [n for n in wave.clusters if seen.clusters[n].state is State.VERIFYING]
    retries = {n: _next_verification(policy, seen.clusters[n]) for n in verifying}
    due = tuple(n for n, at in retries.items() if now >= at)
    later = [at for at in retries.values() if at > now]
    return Decision(deploy=tuple(pending[: max(0, wave.max_parallel - busy)]), check=due,
                    wake_at=min(later) if later and not due else None)


def _next_verification(policy: Policy, status: ClusterStatus) -> float:
    if status.last_check_at is None:
        return float("-inf")  # rolled out just now: verify at once
    return status.last_check_at + retry_pause(policy)


def retry_pause(policy: Policy) -> float:
    """How long a verification waits after a round that errored (a flapping endpoint)."""
    return min(policy.check_interval, VERIFY_RETRY)


def _bake(policy: Policy, wave: Wave, started: float, seen: Observed, now: float) -> Decision:
    end = started + wave.bake
    due = _due(policy, wave.clusters, seen, now, end)
    if now >= end and not due and _settled(seen, wave.clusters):
        return Decision(wave_verified=wave.name)
    return Decision(check=due, wake_at=_next_look(policy, wave.clusters, seen, end))


def _watch(plan: Plan, seen: Observed, now: float) -> Decision:
    if plan.policy.watch <= 0:
        return Decision(finish=Ending.SUCCEEDED)
    if seen.watch_started is None:
        return Decision(start_watch=True, wake_at=now)
    clusters = tuple(seen.clusters)
    end = seen.watch_started + plan.policy.watch
    due = _due(plan.policy, clusters, seen, now, end)
    if now >= end and not due and _settled(seen, clusters):
        return Decision(finish=Ending.SUCCEEDED)
    return Decision(check=due, wake_at=_next_look(plan.policy, clusters, seen, end))


def _due(policy: Policy, clusters: tuple[str, ...], seen: Observed, now: float,
         end: float) -> tuple[str, ...]:
    """Clusters whose next check is due: every interval, and once more when the period ends."""
    return tuple(name for name in clusters
                 if seen.clusters[name].last_check_at is None
                 or now >= _next_check(policy, seen.clusters[name], end))


def _next_check(policy: Policy, status: ClusterStatus, end: float) -> float:
    """Every interval, once more at the end; past the end only while errors are unresolved
    (a period whose last round errored has not passed)."""
    last = status.last_check_at or 0.0
    if status.consecutive_errors > 0:
        return last + policy.check_interval
    if last >= end:
        return float("inf")
    return min(last + policy.check_interval, end)


def _next_look(policy: Policy, clusters: tuple[str, ...], seen: Observed, end: float) -> float:
    times = [_next_check(policy, seen.clusters[n], end) for n in clusters]
    return min([t for t in times if t != float("inf")], default=end)


def _settled(seen: Observed, clusters: tuple[str, ...]) -> bool:
    return all(seen.clusters[name].consecutive_errors == 0 for name in clusters)


def _on_failure(plan: Plan, seen: Observed) -> Decision:
    order = rollback_order(plan, seen)
    if seen.rollback_done or plan.policy.on_failure == "halt" or not order:
        return Decision(finish=_ending_after_failure(plan, seen))
    return Decision(rollback=order)


def rollback_order(plan: Plan, seen: Observed) -> tuple[tuple[str, ...], ...]:
    """Groups to roll back, one after the other, each in parallel.

    rollback-release: every cluster this run changed, the failing wave first, then the earlier
    waves newest first. rollback-failed: only the failed clusters. Untouched ones never.
    """
    failed = [n for n, s in seen.clusters.items() if s.state is State.FAILED]
    if plan.policy.on_failure == "rollback-failed":
        return (tuple(failed),)
    def due(name: str) -> bool:
        status = seen.clusters[name]
        touched = status.changed or status.state is not State.PENDING
        return touched and status.state is not State.ROLLED_BACK

    changed = [w for w in reversed(plan.waves) if any(due(n) for n in w.clusters)]
    # The failing wave first (during a watch it need not be the newest), then the rest.
    changed.sort(key=lambda w: not any(n in failed for n in w.clusters))
    return tuple(tuple(n for n in w.clusters if due(n)) for w in changed)


def _ending_after_failure(plan: Plan, seen: Observed) -> Ending:
    states = {status.state for status in seen.clusters.values()}
    if plan.policy.on_failure == "halt" or State.ROLLBACK_FAILED in states or seen.unproven:
        return Ending.NEEDS_HUMAN
    return Ending.ROLLED_BACK


_FAILURES = frozenset((State.FAILED, State.ROLLBACK_FAILED, State.ROLLED_BACK))


def _failed(seen: Observed) -> bool:
    return any(s.state in _FAILURES and n not in seen.unwound for n, s in seen.clusters.items())


def _unverified(seen: Observed) -> tuple[str, ...]:
    """What an interrupt leaves that no check has passed yet: a verification in progress, or
    a step the stop cut short (a cluster whose bake started passed its first verification
    and stays, like a verified one; `resume` bakes it again)."""
    return tuple(name for name, status in seen.clusters.items()
                 if status.state in (State.VERIFYING, State.INTERRUPTED)
                 and name not in seen.unwound)


def _all(seen: Observed, clusters: tuple[str, ...], state: State) -> bool:
    return all(seen.clusters[name].state is state for name in clusters)


# Folding observations back in: small pure updates the runner applies.

def with_state(seen: Observed, cluster: str, state: State, reason: str | None = None) -> Observed:
    current = seen.clusters[cluster]
    status = dataclasses.replace(current, state=state, reason=reason or current.reason,
                                 changed=current.changed or state is not State.PENDING)
    return dataclasses.replace(seen, clusters={**seen.clusters, cluster: status})


def with_round(seen: Observed, cluster: str, outcome: Outcome, policy: Policy, now: float,
               detail: str | None = None) -> Observed:
    """A check round's outcome: a fail fails at once; errors fail once there are too many."""
    status = after_round(seen.clusters[cluster], outcome, policy, now, detail)
    return dataclasses.replace(seen, clusters={**seen.clusters, cluster: status})


def after_round(status: ClusterStatus, outcome: Outcome, policy: Policy, now: float,
                detail: str | None = None) -> ClusterStatus:
    """A round judged: a first verification that passes starts the cluster's bake."""
    if status.state not in JUDGED:
        return status
    if outcome is Outcome.PASS:
        state = State.BAKING if status.state is State.VERIFYING else status.state
        return dataclasses.replace(status, state=state, consecutive_errors=0, last_check_at=now)
    if outcome is Outcome.FAIL:
        return dataclasses.replace(status, state=State.FAILED, last_check_at=now, reason=detail)
    errors = status.consecutive_errors + 1
    if errors >= policy.max_check_errors:
        return dataclasses.replace(
            status, state=State.FAILED, consecutive_errors=errors, last_check_at=now,
            reason=f"{errors} consecutive check errors (fail safe): {detail}")
    return dataclasses.replace(status, consecutive_errors=errors, last_check_at=now)


def with_unwound(seen: Observed, clusters: tuple[str, ...]) -> Observed:
    return dataclasses.replace(seen, unwound=seen.unwound | frozenset(clusters))


def with_bake_started(seen: Observed, wave: str, now: float) -> Observed:
    return dataclasses.replace(seen, bake_started={**seen.bake_started, wave: now})


def with_wave_verified(seen: Observed, wave: Wave) -> Observed:
    for name in wave.clusters:
        seen = with_state(seen, name, State.VERIFIED)
    return seen
