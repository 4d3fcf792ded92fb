"""The status files the driver judges rollouts by, and the pure parts of the pod runner."""

from __future__ import annotations

import random
from typing import Any

import pytest

from wavegate.decide import workloads
from wavegate.localfleet import pods, podspec, status
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
    pid: int | None = 42,
    restarts: int | None = None,
) -> OwnedPod:
    restarts = (1 if exit_code else 0) if restarts is None else restarts
    state = pods.PodStatus(
        name, "127.0.3.4", 8080, pid, ready, restarts, exit_code, error, terminating
    )
    return OwnedPod(template, state, "app", "library-app:2.0.0")


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
        progressing([pod(NEW)], Problem(podspec.IMAGE_NOT_MAPPED, "x"))["reason"]
        == "ErrImageNeverPull"
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


def pods_of(owned: list[OwnedPod], problem: Problem | None = None) -> list[dict[str, Any]]:
    body = status.deployment_status(
        name="web", generation=7, replicas=2, template_hash=NEW, owned=owned, problem=problem,
        container="app", image="nginx:1.25",
    )  # fmt: skip
    listed: list[dict[str, Any]] = body["pods"]
    return listed


@pytest.mark.parametrize(
    ("owned", "problem", "state", "last", "restarts", "judged"),
    [
        pytest.param([pod(NEW, name="web-new-a")], None, {"running": {}}, {}, 0, None,
                     id="running"),
        pytest.param([pod(NEW, False, name="web-new-a", pid=None, exit_code=1, restarts=0,
                          error="Traceback\nValueError: no DATABASE_URL")],
                     None, {"waiting": {"reason": "CrashLoopBackOff",
                                        "message": "back-off restarting failed container app"}},
                     {"terminated": {"exitCode": 1, "reason": "Error",
                                     "message": "Traceback\nValueError: no DATABASE_URL"}}, 0,
                     "pod web-new-a: container app exited with code 1 (Error, CrashLoopBackOff):"
                     " Traceback\nValueError: no DATABASE_URL", id="crashed-waiting-to-restart"),
        pytest.param([pod(NEW, False, name="web-new-a", exit_code=137, restarts=2)], None,
                     {"running": {}}, {"terminated": {"exitCode": 137, "reason": "Error"}}, 2,
                     "pod web-new-a: container app exited with code 137 (Error), restarted 2 "
                     "times", id="restarted"),
        pytest.param([], Problem(podspec.IMAGE_NOT_MAPPED, "image 'nginx:1.25' has no command"),
                     {"waiting": {"reason": "ErrImageNeverPull",
                                  "message": "image 'nginx:1.25' has no command"}}, {}, 0,
                     "pod web-new-pending: container app is ErrImageNeverPull: image "
                     "'nginx:1.25' has no command", id="image-not-mapped"),
        pytest.param([], Problem(podspec.CONFIG_ERROR, "ConfigMap library/x not found"),
                     {"waiting": {"reason": "CreateContainerConfigError",
                                  "message": "ConfigMap library/x not found"}}, {}, 0,
                     "pod web-new-pending: container app is CreateContainerConfigError: "
                     "ConfigMap library/x not found", id="config-error"),
    ],
)
def test_pods_are_kubernetes_shaped_and_judged_by_the_kubernetes_rules(
    owned: list[OwnedPod], problem: Problem | None, state: dict[str, Any],
    last: dict[str, Any], restarts: int, judged: str | None,
) -> None:
    (listed,) = pods_of(owned, problem)
    assert listed["metadata"]["labels"] == {"pod-template-hash": NEW}
    (container,) = listed["status"]["containerStatuses"]
    assert container["name"] == "app"
    assert (container["state"], container["lastState"], container["restartCount"]) == (
        state, last, restarts)
    assert workloads.pod_problem(listed) == judged


def test_a_running_pod_shows_its_address_process_and_readiness() -> None:
    (listed,) = pods_of([pod(NEW, name="web-new-a")])
    assert listed["metadata"]["name"] == "web-new-a"
    assert (listed["status"]["phase"], listed["status"]["podIP"]) == ("Running", "127.0.3.4")
    assert listed["status"]["containerStatuses"][0]["containerID"] == "process://42"
    ready = {c["type"]: c["status"] for c in listed["status"]["conditions"]}["Ready"]
    assert ready == "True"
    (pending,) = pods_of([], Problem(podspec.IMAGE_NOT_MAPPED, "x"))
    assert pending["status"]["phase"] == "Pending" and "podIP" not in pending["status"]


def test_a_termination_message_is_bounded() -> None:
    (listed,) = pods_of([pod(NEW, False, pid=None, exit_code=1, error="x" * 2000)])
    message = listed["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"]
    assert len(message) == status.MESSAGE_CHARS and message.endswith("...")


@pytest.mark.parametrize(
    ("crashes", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (9, 5.0)]
)
def test_restart_backoff_doubles_to_a_cap(crashes: int, delay: float) -> None:
    assert pods.Backoff().delay(crashes) == delay


def test_address_pool_never_hands_out_127_0_0_1_or_an_address_twice() -> None:
    pool = pods.AddressPool(rng=random.Random(7), can_bind=lambda host, port: True)
    handed = [pool.acquire(8080) for _ in range(500)]
    assert len(set(handed)) == len(handed)
    assert all(h.startswith("127.0.") and h != "127.0.0.1" for h in handed)
    assert all(0 < int(part) < 255 for h in handed for part in h.split(".")[2:])
    for host in handed:
        pool.release(host)


def test_two_agents_pools_never_hand_out_the_same_address_before_a_pod_binds_it() -> None:
    """Two pools that draw the same addresses in the same order (two clusters' agents on one
    machine, unlucky): nothing is bound yet, so only the machine-wide claim tells them apart."""
    first = pods.AddressPool(rng=random.Random(11), can_bind=lambda host, port: True)
    second = pods.AddressPool(rng=random.Random(11), can_bind=lambda host, port: True)
    mine = [first.acquire(8080) for _ in range(20)]
    theirs = [second.acquire(8080) for _ in range(20)]
    assert not set(mine) & set(theirs)
    first.release(mine[0])
    again = pods.AddressPool(rng=random.Random(11), can_bind=lambda host, port: True)
    assert again.acquire(8080) == mine[0]  # released: free for anyone
    again.release(mine[0])
    for pool, hosts in ((first, mine[1:]), (second, theirs)):
        for host in hosts:
            pool.release(host)


def test_address_pool_gives_up_when_nothing_binds() -> None:
    pool = pods.AddressPool(attempts=10, can_bind=lambda host, port: False)
    with pytest.raises(OSError, match="no free loopback address for port 8080"):
        pool.acquire(8080)
