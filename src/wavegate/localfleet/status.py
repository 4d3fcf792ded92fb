"""The status files of a local cluster (`CLUSTER_DIR/status/*.json`), as pure functions.

Owns the shape the driver reads: for a Deployment `observedGeneration`, the replica counts,
one `Progressing` condition and the pods; for a Service its endpoints; for a kind the agent
does not run `{"supported": false, "message": ...}`. Must not do I/O: the agent writes what
these return, and only when it changed.

Progressing, like Kubernetes' (plus reasons of the local fleet's own, status "False"):
- `NewReplicaSetAvailable` (True): exactly `replicas` pods, all of the current template, ready;
- `ReplicaSetUpdated` (True): a rollout is under way;
- `PodCrashed`: a pod of the current template exited and is not ready again;
- `ImageNotMapped`: agent.json maps no command to the image;
- `CreateContainerConfigError`: env names a ConfigMap, Secret or key that does not exist;
- `InvalidSpec`: the manifest cannot be run (the message says which field);
- `AgentStopped`: written once as the agent exits cleanly: no pod runs any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wavegate.localfleet import pods

__all__ = [
    "OwnedPod",
    "Problem",
    "deployment_status",
    "service_status",
    "stopped_status",
    "unsupported_status",
]

MESSAGE_CHARS = 600


@dataclass(frozen=True)
class Problem:
    """Why a Deployment cannot progress: a `Progressing=False` reason and its message."""

    reason: str
    message: str


@dataclass(frozen=True)
class OwnedPod:
    template_hash: str
    status: pods.PodStatus


def deployment_status(
    *,
    name: str,
    generation: int,
    replicas: int,
    template_hash: str,
    owned: Sequence[OwnedPod],
    problem: Problem | None = None,
) -> dict[str, Any]:
    live = [p for p in owned if not p.status.terminating]
    updated = [p for p in live if p.template_hash == template_hash]
    return {
        "observedGeneration": generation,
        "replicas": len(live),
        "updatedReplicas": len(updated),
        "readyReplicas": sum(1 for p in live if p.status.ready),
        "availableReplicas": sum(1 for p in updated if p.status.ready),
        "conditions": [_progressing(name, replicas, template_hash, live, updated, problem)],
        "pods": [_pod(p) for p in live],
    }


def _progressing(
    name: str,
    replicas: int,
    template_hash: str,
    live: list[OwnedPod],
    updated: list[OwnedPod],
    problem: Problem | None,
) -> dict[str, str]:
    if problem is not None:
        return _condition("False", problem.reason, problem.message)
    crashed = [p.status for p in updated if p.status.last_exit_code is not None]
    crashed = [s for s in crashed if not s.ready]
    if crashed:
        return _condition("False", "PodCrashed", _crash_message(crashed[0]))
    replica_set = f'ReplicaSet "{name}-{template_hash}"'
    available = sum(1 for p in updated if p.status.ready)
    if len(live) == len(updated) == available == replicas:
        return _condition(
            "True", "NewReplicaSetAvailable", f"{replica_set} has successfully progressed."
        )
    return _condition(
        "True",
        "ReplicaSetUpdated",
        f"{replica_set} is progressing: {len(updated)} updated of {replicas},"
        f" {available} available, {len(live) - len(updated)} old.",
    )


def _crash_message(pod: pods.PodStatus) -> str:
    head = f"pod {pod.name} exited with code {pod.last_exit_code} (restarts: {pod.restarts})"
    tail = pod.last_error.strip()
    message = f"{head}: {tail}" if tail else head
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 3] + "..."


def _condition(status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": "Progressing", "status": status, "reason": reason, "message": message}


def _pod(pod: OwnedPod) -> dict[str, Any]:
    return {
        "name": pod.status.name,
        "address": pod.status.address,
        "template_hash": pod.template_hash,
        "ready": pod.status.ready,
        "pid": pod.status.pid,
        "restarts": pod.status.restarts,
        "last_exit_code": pod.status.last_exit_code,
    }


def stopped_status(generation: int) -> dict[str, Any]:
    """A Deployment's status once the agent has exited: its pods are gone with it."""
    return {
        "observedGeneration": generation,
        "replicas": 0,
        "updatedReplicas": 0,
        "readyReplicas": 0,
        "availableReplicas": 0,
        "conditions": [_condition("False", "AgentStopped", "the cluster agent is not running")],
        "pods": [],
    }


def service_status(*, ingress: bool, endpoints: Sequence[str], message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"supported": True, "ingress": ingress, "endpoints": list(endpoints)}
    if message:
        status["message"] = message
    return status


def unsupported_status(kind: str) -> dict[str, Any]:
    return {
        "supported": False,
        "message": f"kind {kind} is stored but not run by the local fleet, which runs"
        " Deployments and Services (with ConfigMaps and Secrets as env)",
    }
