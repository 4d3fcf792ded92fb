"""Whether a workload has rolled out, and whether one of its new pods is crashing.

`judge` reads a Deployment, StatefulSet or DaemonSet as the API server returns it (a dict) and
says done, failed, or still waiting (with how far it got). Done means the controller has seen
the latest spec (observedGeneration), every replica runs the new template and is available, and
the old ones are gone. A Deployment whose Progressing condition says ProgressDeadlineExceeded
has failed; so has a StatefulSet or DaemonSet whose strategy holds pods on the old template
(OnDelete, a partition) and a DaemonSet that no node runs: waiting would pass checks that
judged old pods, or nothing, on the new release's behalf.

`pod_problem` says whether a pod is crashing (CrashLoopBackOff, or a container that
exited and was restarted) or cannot start as specified (a fatal waiting reason): judged only
for pods of the new template (`is_current`), so an old crashing replica does not fail the
rollout that replaces it. `old_pods_serving` says why checks must wait a moment more though a
Deployment reads done: its old pods are stopping but may still get traffic. Both drivers
judge by these rules: the local fleet's agent writes its Deployments' status and pods in the
same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Object = Mapping[str, Any]
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
DAEMONSET_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
# Seconds a stopping pod may still get traffic: how long a Service's endpoints take to drop it.
ENDPOINTS_SETTLE = 2.0
# Waiting reasons no wait will cure: the pod cannot start as specified.
FATAL_WAITING = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "InvalidImageName",
                           "ErrImageNeverPull"})


@dataclass(frozen=True)
class Verdict:
    done: bool
    progress: str  # "1 of 3 available": what a timeout message shows
    failure: str | None = None


def judge(kind: str, workload: Object) -> Verdict:
    if kind == "Deployment":
        return _deployment(workload)
    if kind == "StatefulSet":
        return _stateful_set(workload)
    if kind == "DaemonSet":
        return _daemon_set(workload)
    raise ValueError(f"{kind} is not a workload wavegate waits for")


def observed(workload: Object) -> bool:
    """Whether the controller has seen the workload's latest spec."""
    generation = _int(workload.get("metadata"), "generation")
    return _int(workload.get("status"), "observedGeneration") >= generation


def _deployment(workload: Object) -> Verdict:
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    desired = int(spec.get("replicas", 1))
    updated, available = _int(status, "updatedReplicas"), _int(status, "availableReplicas")
    replicas = _int(status, "replicas")
    progress = f"{available} of {desired} available"
    if not observed(workload):
        return Verdict(False, f"{progress}, new spec not yet seen by the controller")
    for condition in status.get("conditions") or ():
        if (condition.get("type") == "Progressing"
                and condition.get("reason") == "ProgressDeadlineExceeded"):
            return Verdict(False, progress, f"ProgressDeadlineExceeded: {condition.get('message')}")
    if updated < desired:
        return Verdict(False, f"{progress}, {updated} of {desired} updated")
    if replicas > updated:
        return Verdict(False, f"{progress}, {replicas - updated} old replicas still running")
    return Verdict(available == desired == replicas, progress)


def _stateful_set(workload: Object) -> Verdict:
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    desired = int(spec.get("replicas", 1))
    # availableReplicas appeared in v1.22; v1.20 reports readyReplicas only.
    ready = _int(status, "availableReplicas" if "availableReplicas" in status
                 else "readyReplicas")
    updated = _int(status, "updatedReplicas")
    progress = f"{ready} of {desired} available"
    if not observed(workload):
        return Verdict(False, f"{progress}, new spec not yet seen by the controller")
    held = _held_back(spec, status, desired=desired, updated=updated)
    if held:
        return Verdict(False, f"{progress}, {updated} of {desired} updated", held)
    if ready < desired or _int(status, "replicas") != desired:
        return Verdict(False, progress)
    if updated < desired or status.get("updateRevision") != status.get("currentRevision"):
        return Verdict(False, f"{progress}, {updated} of {desired} updated")
    return Verdict(True, progress)


def _held_back(spec: Object, status: Object, *, desired: int, updated: int) -> str | None:
    """Why a StatefulSet's update will never reach every pod by waiting: its strategy holds
    pods on the old template, and the checks would judge those on the new release's behalf."""
    if status.get("updateRevision") == status.get("currentRevision") and updated >= desired:
        return None  # nothing to roll: created just now, or applied unchanged
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return (f"updateStrategy OnDelete: pods are replaced only when deleted, so "
                f"{desired - updated} of {desired} still run the old template; wavegate "
                "verifies only RollingUpdate")
    partition = _int(strategy.get("rollingUpdate"), "partition")
    if partition > 0:
        kept = min(partition, desired)
        return (f"rollingUpdate.partition {partition} holds {kept} of {desired} pods on the "
                "old template; wavegate verifies only a full rollout (partition 0)")
    return None


def _daemon_set(workload: Object) -> Verdict:
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    desired = _int(status, "desiredNumberScheduled")
    updated, available = _int(status, "updatedNumberScheduled"), _int(status, "numberAvailable")
    progress = f"{available} of {desired} available"
    if not observed(workload):
        return Verdict(False, f"{progress}, new spec not yet seen by the controller")
    if desired == 0:
        return Verdict(False, progress, "no node runs it (0 pods scheduled): the checks would "
                                        "judge nothing of the new release")
    if updated < desired and (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return Verdict(False, f"{progress}, {updated} updated",
                       f"updateStrategy OnDelete: pods are replaced only when deleted, so "
                       f"{desired - updated} of {desired} still run the old template; wavegate "
                       "verifies only RollingUpdate")
    done = updated >= desired and available >= desired and not _int(status, "numberUnavailable")
    return Verdict(done, f"{progress}, {updated} updated")


def old_pods_serving(kind: str, workload: Object, pods: Iterable[Object],
                     stopping_for: Mapping[str, float]) -> str | None:
    """Why a Deployment judged done may still send traffic to its old release, or None.

    A ReplicaSet stops counting a pod the moment its deletion begins, so a Deployment reads
    rolled out while its old pods stop; the Service's endpoints (kube-proxy on every node) drop
    them a moment later. Checks run before then could judge an old pod on the new release's
    behalf, so the wait goes on while more pods run than the Deployment wants (an old one not
    yet seen stopping) or one seen stopping for less than `ENDPOINTS_SETTLE` seconds is still
    there. Only pods of its own ReplicaSets count (another Deployment's selector may pick them
    up too). STOPPING_FOR is, by pod uid, how long each has been seen stopping.
    """
    if kind != "Deployment":
        return None  # StatefulSets and DaemonSets replace a pod only once the old one is gone
    desired = int((workload.get("spec") or {}).get("replicas", 1))
    pods = [pod for pod in pods if _owned_by(pod, (workload.get("metadata") or {}).get("name"))]
    running = sum(1 for pod in pods if not is_stopping(pod)
                  and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
    if running > desired:
        return f"{running - desired} old pods not yet stopping"
    stopping = sum(1 for pod in pods if is_stopping(pod)
                   and stopping_for.get(_uid(pod), 0.0) < ENDPOINTS_SETTLE)
    return f"{stopping} old pods stopping" if stopping else None


def _owned_by(pod: Object, deployment: str | None) -> bool:
    """Whether POD belongs to one of DEPLOYMENT's ReplicaSets (named `<deployment>-<hash>`):
    another workload's selector may pick it up too."""
    controller = owner(pod)
    return (controller is not None and controller[0] == "ReplicaSet"
            and controller[1].rpartition("-")[0] == deployment)


def is_stopping(pod: Object) -> bool:
    """Whether the pod's deletion has begun (its containers are being stopped)."""
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _uid(pod: Object) -> str:
    return str((pod.get("metadata") or {}).get("uid"))


def pod_problem(pod: Object) -> str | None:
    """Why a pod will not become ready by waiting, or None."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name")
    for container in [*(status.get("initContainerStatuses") or ()),
                      *(status.get("containerStatuses") or ())]:
        state = container.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        last = (container.get("lastState") or {}).get("terminated")
        restarts = _int(container, "restartCount")
        if last and (restarts > 0 or waiting in FATAL_WAITING):
            why = f", {waiting}" if waiting else ""
            again = f", restarted {restarts} time{'s' if restarts != 1 else ''}" if restarts else ""
            # A termination message (the log's end, with FallbackToLogsOnError) says why.
            said = f": {last['message'].strip()}" if str(last.get("message") or "").strip() else ""
            return (f"pod {name}: container {container.get('name')} exited with code "
                    f"{last.get('exitCode')} ({last.get('reason') or 'terminated'}{why}){again}"
                    f"{said}")
        if waiting in FATAL_WAITING:
            message = (state.get("waiting") or {}).get("message")
            detail = f": {message}" if message else ""
            return f"pod {name}: container {container.get('name')} is {waiting}{detail}"
    return None


def pod_waiting(pod: Object) -> str | None:
    """Why a pod is not running yet, when it says (what a timeout message adds as a hint)."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name")
    for container in [*(status.get("initContainerStatuses") or ()),
                      *(status.get("containerStatuses") or ())]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            message = f": {waiting['message']}" if waiting.get("message") else ""
            return f"pod {name}: {waiting['reason']}{message}"
    for condition in status.get("conditions") or ():
        if condition.get("status") == "False" and condition.get("reason"):
            message = f": {condition['message']}" if condition.get("message") else ""
            return f"pod {name}: {condition['reason']}{message}"
    return None


def is_current(kind: str, workload: Object, pod: Object, *,
               replica_set_revision: str | None = None) -> bool:
    """Whether `pod` runs the workload's current template.

    A Deployment's pods belong to ReplicaSets: the caller looks up the revision annotation of
    the pod's ReplicaSet (`owner`) and passes it. Unknown means no (wait for the timeout rather
    than fail a good rollout on an old pod).
    """
    labels = (pod.get("metadata") or {}).get("labels") or {}
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    if kind == "Deployment":
        wanted = annotations.get(REVISION_ANNOTATION)
        return wanted is not None and replica_set_revision == wanted
    if kind == "StatefulSet":
        revision = (workload.get("status") or {}).get("updateRevision")
        return revision is not None and labels.get("controller-revision-hash") == revision
    if kind == "DaemonSet":
        generation = annotations.get(DAEMONSET_GENERATION_ANNOTATION)
        return generation is not None and labels.get("pod-template-generation") == generation
    return False


def owner(pod: Object) -> tuple[str, str] | None:
    """(kind, name) of the pod's controller."""
    for reference in (pod.get("metadata") or {}).get("ownerReferences") or ():
        if reference.get("controller"):
            return str(reference.get("kind")), str(reference.get("name"))
    return None


def label_selector(selector: Object) -> str:
    """A LabelSelector (matchLabels, matchExpressions) as the `labelSelector` query string."""
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression["key"], expression["operator"]
        values = ",".join(expression.get("values") or ())
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[operator])
    return ",".join(terms)


def _int(mapping: Any, key: str) -> int:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
