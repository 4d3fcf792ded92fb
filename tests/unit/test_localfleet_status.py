"""The status files the driver judges rollouts by, and the pure parts of the pod runner."""

from __future__ import annotations

import random

import pytest

from wavegate.localfleet import pods, status
from wavegate.localfleet.status import OwnedPod, Problem

NEW, OLD = "new", "old"


def pod(
    template: str,
    ready: bool = True,
    *,
    name: str = "p",
    exit_code: int | None = None,
    error: str = "",
    terminating: bool = False,
) -> OwnedPod:
    state = pods.PodStatus(
        name, "127.0.3.4", 8080, 42, ready, 1 if exit_code else 0, exit_code, error, terminating
    )
    return OwnedPod(template, state)


def progressing(owned: list[OwnedPod], problem: Problem | None = None) -> dict[str, str]:
    body = status.deployment_status(
        name="web", generation=7, replicas=2, template_hash=NEW, owned=owned, problem=problem
    )
    condition: dict[str, str] = body["conditions"][0]
    return condition


@pytest.mark.parametrize(
    ("owned", "want"),
    [
        ([pod(NEW), pod(NEW)], ("True", "NewReplicaSetAvailable")),
        ([pod(NEW), pod(NEW), pod(OLD, terminating=True)], ("True", "NewReplicaSetAvailable")),
        ([pod(NEW), pod(NEW, ready=False)], ("True", "ReplicaSetUpdated")),
        ([pod(NEW), pod(NEW), pod(OLD)], ("True", "ReplicaSetUpdated")),
        ([pod(OLD), pod(OLD)], ("True", "ReplicaSetUpdated")),
        ([pod(OLD), pod(OLD), pod(NEW, False, exit_code=1)], ("False", "PodCrashed")),
        ([pod(NEW), pod(NEW, True, exit_code=1)], ("True", "NewReplicaSetAvailable")),  # recovered
        ([pod(NEW), pod(NEW), pod(OLD, False, exit_code=1)], ("True", "ReplicaSetUpdated")),
    ],
)
def test_progressing(owned: list[OwnedPod], want: tuple[str, str]) -> None:
    condition = progressing(owned)
    assert (condition["status"], condition["reason"]) == want


def test_problem_wins_and_crash_message_is_bounded() -> None:
    assert (
        progressing([pod(NEW)], Problem("ImageNotMapped", "image x"))["reason"] == "ImageNotMapped"
    )
    crashed = pod(NEW, False, name="web-abc", exit_code=137, error="x" * 2000)
    message = progressing([crashed])["message"]
    assert message.startswith("pod web-abc exited with code 137")
    assert len(message) <= status.MESSAGE_CHARS


def test_counts_leave_terminating_pods_out() -> None:
    body = status.deployment_status(
        name="web",
        generation=3,
        replicas=2,
        template_hash=NEW,
        owned=[pod(NEW), pod(NEW, False), pod(OLD), pod(OLD, terminating=True)],
    )
    counts = {k: body[k] for k in ("replicas", "updatedReplicas", "readyReplicas")}
    assert counts == {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 2}
    assert body["availableReplicas"] == 1 and body["observedGeneration"] == 3
    assert len(body["pods"]) == 3
    assert set(body["pods"][0]) == {
        "name",
        "address",
        "template_hash",
        "ready",
        "pid",
        "restarts",
        "last_exit_code",
    }


@pytest.mark.parametrize(
    ("crashes", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (9, 5.0)]
)
def test_restart_backoff_doubles_to_a_cap(crashes: int, delay: float) -> None:
    assert pods.Backoff().delay(crashes) == delay


def test_address_pool_never_hands_out_127_0_0_1_or_an_address_twice() -> None:
    pool = pods.AddressPool(rng=random.Random(7), can_bind=lambda host, port: True)
    handed = [pool.acquire(8080) for _ in range(2000)]
    assert len(set(handed)) == len(handed)
    assert all(h.startswith("127.0.") and h != "127.0.0.1" for h in handed)
    assert all(0 < int(part) < 255 for h in handed for part in h.split(".")[2:])


def test_address_pool_gives_up_when_nothing_binds() -> None:
    pool = pods.AddressPool(attempts=10, can_bind=lambda host, port: False)
    with pytest.raises(OSError, match="no free loopback address for port 8080"):
        pool.acquire(8080)
