"""The rolling-update decision of the local fleet, as the Kubernetes deployment controller makes it.

Owns one pure function, `decide`: given the desired replica count, the resolved surge and
unavailability budgets and the pods that exist now, which pods to start (of the current
template) and which to stop. It also owns `resolve`, which turns a Deployment's
`maxSurge`/`maxUnavailable` (int or percent) into those budgets with Kubernetes' rounding.

Must not do I/O, read clocks or know about processes: the agent calls `decide` on every tick
with what it observed and carries out the answer, so calling it again with the same pods gives
the same answer (it is idempotent, which is what makes a crash or restart of the agent harmless).

Semantics follow `pkg/controller/deployment/rolling.go`, with pods in place of ReplicaSets:
- scale up the current template while all pods <= replicas + maxSurge;
- scale old pods down only while the ready pods stay >= replicas - maxUnavailable, counting
  the current template's unready pods as unavailable, and removing unready old pods first;
- end with exactly `replicas` pods of the current template.
`Recreate` stops every old pod and starts new ones once no pod is left terminating.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Budget", "Decision", "PodView", "SpecError", "decide", "rank_for_stop", "resolve"]

DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
_PERCENT = re.compile(r"(\d+)%")


class SpecError(ValueError):
    """A Deployment's rolling-update parameters cannot be understood."""


@dataclass(frozen=True)
class Budget:
    """What `decide` needs from a Deployment's spec, with the percentages already resolved."""

    replicas: int
    max_surge: int
    max_unavailable: int
    recreate: bool = False


@dataclass(frozen=True)
class PodView:
    """One non-terminating pod, as the decision sees it."""

    name: str
    template_hash: str
    ready: bool
    restarts: int = 0
    created: int = 0  # creation order: larger is newer


@dataclass(frozen=True)
class Decision:
    start: int  # pods of the current template to create
    stop: tuple[str, ...]  # pods to terminate, in the order given

    @property
    def idle(self) -> bool:
        return self.start == 0 and not self.stop


def resolve(
    replicas: int,
    max_surge: int | str | None = None,
    max_unavailable: int | str | None = None,
    *,
    recreate: bool = False,
) -> Budget:
    """Kubernetes' `ResolveFenceposts`: surge rounds up, unavailable down, 0 and 0 -> 0 and 1."""
    if replicas < 0:
        raise SpecError(f"replicas must be >= 0, got {replicas}")
    surge = _scaled(max_surge, DEFAULT_MAX_SURGE, replicas, round_up=True, field="maxSurge")
    unavailable = _scaled(
        max_unavailable, DEFAULT_MAX_UNAVAILABLE, replicas, round_up=False, field="maxUnavailable"
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return Budget(replicas, surge, unavailable, recreate)


def _scaled(
    value: int | str | None, default: str, total: int, *, round_up: bool, field: str
) -> int:
    value = default if value is None else value
    if isinstance(value, bool):  # bool is an int to Python, never to Kubernetes
        raise SpecError(f"{field}: expected an int or a percent, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"{field} must be >= 0, got {value}")
        return value
    match = _PERCENT.fullmatch(value.strip())
    if match is None:
        if value.strip().isdigit():  # Kubernetes' IntOrString accepts "1" as a string too
            return int(value.strip())
        raise SpecError(f"{field}: expected an int or a percent like '25%', got {value!r}")
    scaled = int(match[1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def decide(
    budget: Budget, current_hash: str, pods: Sequence[PodView], *, terminating: int = 0
) -> Decision:
    """Pods to start and stop now; `pods` are the non-terminating ones, `terminating` the rest."""
    new = [p for p in pods if p.template_hash == current_hash]
    old = [p for p in pods if p.template_hash != current_hash]
    if budget.recreate:
        return _recreate(budget, new, old, terminating)
    if len(new) > budget.replicas:
        # Too many of the current template (a scale-down, or a rollback onto surviving pods).
        return Decision(0, _names(rank_for_stop(new)[: len(new) - budget.replicas]))
    if not old:
        return Decision(budget.replicas - len(new), ())
    return Decision(_scale_up(budget, new, pods), _scale_down_old(budget, new, old, pods))


def _scale_up(budget: Budget, new: list[PodView], pods: Sequence[PodView]) -> int:
    room = budget.replicas + budget.max_surge - len(pods)
    return max(0, min(room, budget.replicas - len(new)))


def _scale_down_old(
    budget: Budget, new: list[PodView], old: list[PodView], pods: Sequence[PodView]
) -> tuple[str, ...]:
    min_available = budget.replicas - budget.max_unavailable
    new_unavailable = sum(1 for p in new if not p.ready)
    max_scaled_down = len(pods) - min_available - new_unavailable
    if max_scaled_down <= 0:
        return ()
    # Unready old pods serve nobody: removing them costs no availability.
    unready = rank_for_stop(p for p in old if not p.ready)[:max_scaled_down]
    ready_total = sum(1 for p in pods if p.ready)
    ready_old = rank_for_stop(p for p in old if p.ready)
    return _names(unready) + _names(ready_old[: max(0, ready_total - min_available)])


def _recreate(budget: Budget, new: list[PodView], old: list[PodView], terminating: int) -> Decision:
    if old:
        return Decision(0, _names(rank_for_stop(old)))
    if terminating:
        return Decision(0, ())
    if len(new) > budget.replicas:
        return Decision(0, _names(rank_for_stop(new)[: len(new) - budget.replicas]))
    return Decision(budget.replicas - len(new), ())


def rank_for_stop(pods: Iterable[PodView]) -> list[PodView]:
    """Kubernetes' `ActivePods` order: unready first, then most restarts, then newest."""
    return sorted(pods, key=lambda p: (p.ready, -p.restarts, -p.created, p.name))


def _names(pods: Iterable[PodView]) -> tuple[str, ...]:
    return tuple(p.name for p in pods)
