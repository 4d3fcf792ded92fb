"""The local fleet's rolling-update decision, case by case, against the Kubernetes controller."""

from __future__ import annotations

import pytest

from wavegate.localfleet import rolling
from wavegate.localfleet.rolling import Budget, Decision, PodView

NEW = "new"


def pods(spec: str) -> list[PodView]:
    """`"o+ o- n+ n-!2"`: o/n old or current template, +/- ready or not, !N restarts.

    Pods are named o1, o2, n1... in the order given, which is also their creation order."""
    made: list[PodView] = []
    counts = {"o": 0, "n": 0}
    for created, token in enumerate(spec.split(), start=1):
        kind, ready, restarts = token[0], token[1] == "+", int(token.partition("!")[2] or 0)
        counts[kind] += 1
        template = NEW if kind == "n" else "old"
        made.append(PodView(f"{kind}{counts[kind]}", template, ready, restarts, created))
    return made


# --- resolve: percentages and rounding ---------------------------------------------------

RESOLVE_CASES = [
    # replicas, maxSurge, maxUnavailable -> surge, unavailable
    pytest.param(
        3, None, None, 1, 0, id="defaults-3: 25% of 3 is 0.75, surge up, unavailable down"
    ),
    pytest.param(4, None, None, 1, 1, id="defaults-4"),
    pytest.param(10, "25%", "25%", 3, 2, id="25%-of-10"),
    pytest.param(10, "30%", "35%", 3, 3, id="30%-35%-of-10"),
    pytest.param(1, "50%", "50%", 1, 0, id="50%-of-1"),
    pytest.param(3, 1, 0, 1, 0, id="ints"),
    pytest.param(3, "2", "1", 2, 1, id="ints-as-strings"),
    pytest.param(3, 0, 0, 0, 1, id="both-zero: unavailable becomes 1"),
    pytest.param(3, "0%", "10%", 0, 1, id="both-zero-after-rounding"),
    pytest.param(0, None, None, 0, 1, id="zero-replicas"),
    pytest.param(5, "100%", 0, 5, 0, id="100%-surge"),
]


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "want_surge", "want_unavail"), RESOLVE_CASES
)
def test_resolve_rounds_like_kubernetes(
    replicas: int,
    surge: int | str | None,
    unavailable: int | str | None,
    want_surge: int,
    want_unavail: int,
) -> None:
    assert rolling.resolve(replicas, surge, unavailable) == Budget(
        replicas, want_surge, want_unavail
    )


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "message"),
    [
        (3, "lots", None, "maxSurge"),
        (3, None, "1.5%", "maxUnavailable"),
        (3, -1, None, "maxSurge must be >= 0"),
        (3, True, None, "maxSurge"),
        (-1, None, None, "replicas"),
    ],
)
def test_resolve_rejects_what_kubernetes_rejects(
    replicas: int, surge: object, unavailable: object, message: str
) -> None:
    with pytest.raises(rolling.SpecError, match=message):
        rolling.resolve(replicas, surge, unavailable)  # type: ignore[arg-type]


# --- decide ------------------------------------------------------------------------------

DECIDE_CASES = [
    # budget (replicas, surge, unavailable), pods now -> start, stop
    pytest.param((3, 1, 0), "", 3, (), id="fresh: start all"),
    pytest.param((3, 1, 0), "n+ n+ n+", 0, (), id="steady: nothing"),
    pytest.param((3, 1, 0), "n+ n-", 1, (), id="missing pod replaced"),
    pytest.param((5, 1, 0), "n+ n+ n+", 2, (), id="scale up ignores surge"),
    pytest.param(
        (3, 1, 0), "n+ n+ n- n+ n-", 0, ("n5", "n3"), id="scale down: unready first, newest first"
    ),
    pytest.param((2, 1, 0), "n+ n+!3 n+", 0, ("n2",), id="scale down: most restarts first"),
    pytest.param((0, 1, 0), "n+ n+", 0, ("n2", "n1"), id="scale to zero"),
    # maxSurge 1, maxUnavailable 0: the zero-downtime rollout, step by step
    pytest.param((3, 1, 0), "o+ o+ o+", 1, (), id="rollout 1: surge one new pod"),
    pytest.param((3, 1, 0), "o+ o+ o+ n-", 0, (), id="rollout 2: wait for it to be ready"),
    pytest.param((3, 1, 0), "o+ o+ o+ n+", 0, ("o3",), id="rollout 3: then stop the newest old"),
    pytest.param((3, 1, 0), "o+ o+ n+", 1, (), id="rollout 4: surge the next"),
    pytest.param((3, 1, 0), "o+ n+ n+ n+", 0, ("o1",), id="rollout 5: last old goes"),
    pytest.param((3, 1, 0), "o+ o+ o+ n-!5", 0, (), id="crashing new pod: old pods keep serving"),
    # maxSurge 0, maxUnavailable 1: replace in place
    pytest.param((3, 0, 1), "o+ o+ o+", 0, ("o3",), id="no surge: stop one old first"),
    pytest.param((3, 0, 1), "o+ o+", 1, (), id="no surge: then start one new"),
    pytest.param((3, 0, 1), "o+ o+ n-", 0, (), id="no surge: new one not ready, wait"),
    # defaults on 4 replicas (surge 1, unavailable 1): both at once
    pytest.param((4, 1, 1), "o+ o+ o+ o+", 1, ("o4",), id="defaults-4: start one, stop one"),
    pytest.param((10, 3, 2), "o+ " * 10, 3, ("o10", "o9"), id="25% of 10: 3 up, 2 down"),
    # unready old pods go first and cost no availability
    pytest.param((3, 1, 0), "o+ o- o+ n+", 0, ("o2",), id="unready old pod first"),
    pytest.param((3, 1, 1), "o- o- o+ n+", 0, ("o2", "o1"), id="all unready old pods at once"),
    pytest.param((3, 1, 0), "o- o- o-", 1, (), id="all old unready: surge, stop nothing yet"),
    pytest.param((3, 1, 0), "o- o- o- n+", 0, ("o3",), id="all old unready: one out per ready new"),
    pytest.param((3, 1, 0), "o+ o+ o+ x+", 0, ("x1",), id="two old templates are both old"),
    # rollback: the old template is current again
    pytest.param((3, 1, 0), "n+ n+ n+ o-!4", 0, ("o1",), id="rollback onto surviving pods"),
    pytest.param((3, 1, 0), "o+ o+ o+", 1, (), id="rollback after a finished rollout"),
    pytest.param((2, 1, 0), "n+ n+ n+ o+", 0, ("n3",), id="too many current pods: trim them first"),
    pytest.param((0, 1, 0), "o+ o+", 0, ("o2", "o1"), id="zero replicas: old pods go"),
]


def _with_other_template(spec: str) -> list[PodView]:
    made = pods(spec.replace("x", "o"))
    if "x" not in spec:
        return made
    # The last pod is of a third template: old too, from an earlier rollout.
    last = made[-1]
    return [*made[:-1], PodView("x1", "older", last.ready, last.restarts, last.created)]


@pytest.mark.parametrize(("budget", "now", "start", "stop"), DECIDE_CASES)
def test_decide(budget: tuple[int, int, int], now: str, start: int, stop: tuple[str, ...]) -> None:
    decision = rolling.decide(Budget(*budget), NEW, _with_other_template(now))
    assert decision == Decision(start, stop)


def test_decide_is_deterministic_whatever_the_input_order() -> None:
    current = pods("o+ o- o+ o+ n+ n-")
    assert rolling.decide(Budget(3, 2, 1), NEW, current) == rolling.decide(
        Budget(3, 2, 1), NEW, list(reversed(current))
    )


def test_a_rollout_converges_to_exactly_replicas_new_pods_without_losing_availability() -> None:
    """Play the decision against a world where started pods are ready on the next round."""
    budget = rolling.resolve(3, 1, 0)
    world = pods("o+ o+ o+")
    for round_ in range(20):
        world = [PodView(p.name, p.template_hash, True, 0, p.created) for p in world]
        decision = rolling.decide(budget, NEW, world)
        if decision.idle:
            break
        world = [p for p in world if p.name not in decision.stop]
        assert sum(p.ready for p in world) >= budget.replicas - budget.max_unavailable
        started = [
            PodView(f"n{round_}.{i}", NEW, False, 0, 100 + round_) for i in range(decision.start)
        ]
        world += started
        assert len(world) <= budget.replicas + budget.max_surge
    assert sorted(p.template_hash for p in world) == [NEW] * 3


RECREATE_CASES = [
    pytest.param("o+ o+ o-", 0, 0, ("o3", "o2", "o1"), id="stop every old pod"),
    pytest.param("", 2, 0, (), id="wait for terminating pods"),
    pytest.param("", 0, 3, (), id="then start the new ones"),
    pytest.param("n+ n-", 0, 1, (), id="and replace a missing one"),
]


@pytest.mark.parametrize(("now", "terminating", "start", "stop"), RECREATE_CASES)
def test_recreate(now: str, terminating: int, start: int, stop: tuple[str, ...]) -> None:
    budget = rolling.resolve(3, recreate=True)
    decision = rolling.decide(budget, NEW, pods(now), terminating=terminating)
    assert decision == Decision(start, stop)


def test_rank_for_stop_prefers_unready_then_restarts_then_newest() -> None:
    ranked = rolling.rank_for_stop(pods("o+ o+!2 o- o+ o-!1"))
    assert [p.name for p in ranked] == ["o5", "o3", "o2", "o4", "o1"]
