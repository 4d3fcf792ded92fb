"""The status files of a local cluster (`CLUSTER_DIR/status/*.json`), as pure functions.

Owns the shape the driver reads: for a Deployment `observedGeneration`, the replica counts,
one `Progressing` condition and its pods; for a Service its endpoints (`endpoints`, the
ingress's backends under both agents); for a kind the agent
does not run `{"supported": false, "message": ...}`. Must not do I/O: the agent writes what
these return, and only when it changed.

The pods are Kubernetes-shaped (`metadata.name`, the `pod-template-hash` label, `status` with
`phase`, `podIP`, conditions and `containerStatuses`: `state.waiting.reason`,
`lastState.terminated` with the end of the log as its `message`, `restartCount`), so the
driver judges them with the Kubernetes driver's own rules (`decide.workloads`). A pod the
agent could not start shows as Pending, its container waiting with the reason
(`podspec.IMAGE_NOT_MAPPED`, `podspec.CONFIG_ERROR`). `pod_conditions` and
`container_status` are the kube sandbox's node agent's too.

Progressing, like Kubernetes' (plus reasons of the local fleet's own, status "False"), a
summary for a reader of the file; the driver does not judge by it:
- `NewReplicaSetAvailable` (True): exactly `replicas` pods, all of the current template, ready;
- `ReplicaSetUpdated` (True): a rollout is under way;
- `PodCrashed`: a pod of the current template exited and is not ready again;
- a reason a pod cannot start (`ErrImageNeverPull`, `CreateContainerConfigError`);
- `AgentStopped`: written once as the agent exits cleanly: no pod runs any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wavegate.localfleet import objects, pods

__all__ = [
    "TEMPLATE_HASH_LABEL",
    "Backend",
    "OwnedPod",
    "Problem",
    "container_status",
    "deployment_status",
    "endpoints",
    "pod_conditions",
    "service_status",
    "stopped_status",
    "unsupported_status",
]

MESSAGE_CHARS = 600
TEMPLATE_HASH_LABEL = "pod-template-hash"  # as Kubernetes labels a ReplicaSet's pods


@dataclass(frozen=True)
class Problem:
    """Why a Deployment cannot progress: a `Progressing=False` reason and its message."""

    reason: str
    message: str


@dataclass(frozen=True)
class OwnedPod:
    template_hash: str
    status: pods.PodStatus
    container: str = ""  # the container's name and image, as its status shows them
    image: str = ""


def deployment_status(
    *,
    name: str,
    generation: int,
    replicas: int,
    template_hash: str,
    owned: Sequence[OwnedPod],
    problem: Problem | None = None,
    container: str = "",
    image: str = "",
) -> dict[str, Any]:
    """`container` and `image`: the template's, for the pod that `problem` keeps from starting."""
    live = [p for p in owned if not p.status.terminating]
    updated = [p for p in live if p.template_hash == template_hash]
    pending = [_pending(name, template_hash, container, image, problem)] if problem else []
    return {
        "observedGeneration": generation,
        "replicas": len(live),
        "updatedReplicas": len(updated),
        "readyReplicas": sum(1 for p in live if p.status.ready),
        "availableReplicas": sum(1 for p in updated if p.status.ready),
        "conditions": [_progressing(name, replicas, template_hash, live, updated, problem)],
        "pods": [*(_pod(p) for p in live), *pending],
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
    return _bounded(f"{head}: {tail}" if tail else head)


def _condition(status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": "Progressing", "status": status, "reason": reason, "message": message}


def _pod(pod: OwnedPod) -> dict[str, Any]:
    process = pod.status
    tail = _bounded(process.last_error.strip())
    return {
        "metadata": {"name": process.name, "labels": {TEMPLATE_HASH_LABEL: pod.template_hash}},
        "status": {
            "phase": "Running",
            "podIP": process.host,
            "conditions": pod_conditions(pod.container, process.ready),
            "containerStatuses": [
                container_status(name=pod.container, image=pod.image, process=process,
                                 termination_message=tail)
            ],
        },
    }


def _pending(
    name: str, template_hash: str, container: str, image: str, problem: Problem
) -> dict[str, Any]:
    """The pod the agent would run and cannot: Pending, its container waiting with the reason."""
    return {
        "metadata": {
            "name": f"{name}-{template_hash}-pending",
            "labels": {TEMPLATE_HASH_LABEL: template_hash},
        },
        "status": {
            "phase": "Pending",
            "conditions": pod_conditions(container, False),
            "containerStatuses": [
                container_status(name=container, image=image, process=None,
                                 problem=(problem.reason, _bounded(problem.message)))
            ],
        },
    }


def pod_conditions(container: str, ready: bool, since: str = "") -> list[dict[str, Any]]:
    """A pod's conditions; `since`, when known, is when Ready took its current value."""
    readiness: dict[str, Any] = {
        "status": "True" if ready else "False",
        "lastTransitionTime": since or None,
    }
    if not ready:
        readiness["reason"] = "ContainersNotReady"
        readiness["message"] = f"containers with unready status: [{container}]"
    return [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", **readiness},
        {"type": "Ready", **readiness},
    ]


def container_status(
    *,
    name: str,
    image: str,
    process: pods.PodStatus | None,
    problem: tuple[str, str] | None = None,
    started_at: str = "",
    termination_message: str = "",
) -> dict[str, Any]:
    """A containerStatus as a kubelet reports it, for a pod run as PROCESS (None: not started,
    `problem` says why). `termination_message` is what `lastState.terminated.message` shows:
    the local fleet puts the end of the log there (like `FallbackToLogsOnError`)."""
    running = process is not None and process.running
    status: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": process is not None and process.ready,
        "started": running,
        "restartCount": process.restarts if process is not None else 0,
        "state": _state(name, process, problem, started_at),
        "lastState": {},
    }
    if process is not None and running:
        status["containerID"] = f"process://{process.pid}"
    if process is not None and process.last_exit_code is not None:
        code = process.last_exit_code
        terminated: dict[str, Any] = {"exitCode": code, "reason": "Error" if code else "Completed"}
        if termination_message:
            terminated["message"] = termination_message
        status["lastState"] = {"terminated": terminated}
    return status


def _state(
    name: str, process: pods.PodStatus | None, problem: tuple[str, str] | None, started_at: str
) -> dict[str, Any]:
    if process is not None and process.running:
        return {"running": {"startedAt": started_at} if started_at else {}}
    if problem is not None:
        reason, message = problem
        return {"waiting": {"reason": reason, "message": message}}
    if process is not None and process.last_exit_code is not None:
        message = f"back-off restarting failed container {name}"
        return {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
    return {"waiting": {"reason": "ContainerCreating"}}


def _bounded(message: str) -> str:
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 3] + "..."


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


@dataclass(frozen=True)
class Backend:
    """A pod the ingress could send to: where it runs, how it is labelled, whether it is ready."""

    namespace: str
    labels: Mapping[str, str]
    container: objects.Container
    process: pods.PodStatus


def endpoints(service: objects.Service, backends: Iterable[Backend]) -> list[str]:
    """`host:port` of the ready, running pods SERVICE selects, targetPort by number or name:
    what both agents point their ingress at."""
    found = []
    for backend in backends:
        process = backend.process
        if not process.ready or process.terminating or not process.host:
            continue
        endpoint = service.endpoint(namespace=backend.namespace, labels=backend.labels,
                                    container=backend.container, host=process.host)
        if endpoint is not None:
            found.append(endpoint)
    return found


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
