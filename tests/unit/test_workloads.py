"""When a workload has rolled out, failed, or is still on its way: the judgement `kubectl
rollout status` makes, as tables of the statuses controllers really write. And which pods
count: a crashing pod of the new template fails the rollout at once, an old one does not."""

from __future__ import annotations

from typing import Any

import pytest

from wavegate.decide import workloads as rollout


def deployment(*, generation: int = 2, observed: int = 2, desired: int = 3, replicas: int = 3,
               updated: int = 3, available: int = 3, revision: str = "5",
               conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "web", "generation": generation,
                         "annotations": {"deployment.kubernetes.io/revision": revision}},
            "spec": {"replicas": desired},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "availableReplicas": available,
                       "conditions": conditions or []}}


DEADLINE = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "web-5d4f" has timed out progressing.'}


@pytest.mark.parametrize(("workload", "done", "failure", "progress"), [
    pytest.param(deployment(), True, None, "3 of 3 available", id="rolled-out"),
    pytest.param(deployment(observed=1), False, None,
                 "3 of 3 available, new spec not yet seen by the controller", id="not-observed"),
    pytest.param(deployment(updated=1, available=3, replicas=4), False, None,
                 "3 of 3 available, 1 of 3 updated", id="updating"),
    pytest.param(deployment(updated=3, replicas=4, available=3), False, None,
                 "3 of 3 available, 1 old replicas still running", id="old-pod-terminating"),
    pytest.param(deployment(available=2), False, None, "2 of 3 available", id="not-available"),
    pytest.param(deployment(available=0, updated=1, replicas=1, conditions=[DEADLINE]), False,
                 'ProgressDeadlineExceeded: ReplicaSet "web-5d4f" has timed out progressing.',
                 "0 of 3 available", id="deadline-exceeded"),
    pytest.param(deployment(observed=1, available=0, conditions=[DEADLINE]), False, None,
                 "0 of 3 available, new spec not yet seen by the controller",
                 id="old-deadline-of-an-older-generation-is-not-judged"),
    pytest.param(deployment(desired=0, replicas=0, updated=0, available=0), True, None,
                 "0 of 0 available", id="scaled-to-zero"),
    pytest.param({"metadata": {"generation": 1}, "spec": {}, "status": {}}, False, None,
                 "0 of 1 available, new spec not yet seen by the controller",
                 id="fresh-no-status"),
])
def test_deployment(workload: dict[str, Any], done: bool, failure: str | None,
                    progress: str) -> None:
    assert rollout.judge("Deployment", workload) == rollout.Verdict(done, progress, failure)


def stateful_set(*, ready: int = 3, updated: int = 3, current: str = "r2", update: str = "r2",
                 partition: int | None = None, on_delete: bool = False) -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": "OnDelete"} if on_delete else {"type": "RollingUpdate"}
    if partition is not None:
        strategy["rollingUpdate"] = {"partition": partition}
    return {"metadata": {"generation": 4}, "spec": {"replicas": 3, "updateStrategy": strategy},
            "status": {"observedGeneration": 4, "replicas": 3, "readyReplicas": ready,
                       "updatedReplicas": updated, "currentRevision": current,
                       "updateRevision": update}}


ON_DELETE = ("updateStrategy OnDelete: pods are replaced only when deleted, so 3 of 3 still "
             "run the old template; wavegate verifies only RollingUpdate")


@pytest.mark.parametrize(("workload", "done", "failure"), [
    pytest.param(stateful_set(), True, None, id="rolled-out"),
    pytest.param(stateful_set(ready=2), False, None, id="not-ready"),
    pytest.param(stateful_set(updated=2, current="r1"), False, None,
                 id="revision-still-moving"),
    pytest.param(stateful_set(updated=3, current="r1"), False, None,
                 id="updated-but-revision-not-yet-current"),
    pytest.param(stateful_set(updated=1, current="r1", partition=2), False,
                 "rollingUpdate.partition 2 holds 2 of 3 pods on the old template; wavegate "
                 "verifies only a full rollout (partition 0)", id="partition-holds-pods-back"),
    pytest.param(stateful_set(updated=0, current="r1", partition=5), False,
                 "rollingUpdate.partition 5 holds 3 of 3 pods on the old template; wavegate "
                 "verifies only a full rollout (partition 0)", id="partition-holds-all"),
    pytest.param(stateful_set(partition=2), True, None, id="partition-nothing-to-roll"),
    pytest.param(stateful_set(partition=0, updated=1, current="r1"), False, None,
                 id="partition-zero-rolls"),
    pytest.param(stateful_set(updated=0, current="r1", on_delete=True), False, ON_DELETE,
                 id="on-delete-with-old-pods"),
    pytest.param(stateful_set(on_delete=True), True, None, id="on-delete-nothing-to-roll"),
])
def test_stateful_set(workload: dict[str, Any], done: bool, failure: str | None) -> None:
    verdict = rollout.judge("StatefulSet", workload)
    assert (verdict.done, verdict.failure) == (done, failure)


def test_stateful_set_prefers_available_replicas_where_the_server_has_them() -> None:
    workload = stateful_set()
    workload["status"]["availableReplicas"] = 1  # v1.22+: ready but not yet minReadySeconds
    assert rollout.judge("StatefulSet", workload) == rollout.Verdict(False, "1 of 3 available")


NOTHING_SCHEDULED = ("no node runs it (0 pods scheduled): the checks would judge nothing of the "
                     "new release")


@pytest.mark.parametrize(("status", "strategy", "done", "failure"), [
    pytest.param({"desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                  "numberAvailable": 2}, None, True, None, id="rolled-out"),
    pytest.param({"desiredNumberScheduled": 2, "updatedNumberScheduled": 1,
                  "numberAvailable": 2}, None, False, None, id="updating"),
    pytest.param({"desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                  "numberAvailable": 2, "numberUnavailable": 1}, None, False, None,
                 id="an-updated-pod-not-yet-available"),
    pytest.param({"desiredNumberScheduled": 0}, None, False, NOTHING_SCHEDULED, id="no-nodes"),
    pytest.param({"desiredNumberScheduled": 2, "updatedNumberScheduled": 0,
                  "numberAvailable": 2}, "OnDelete", False,
                 "updateStrategy OnDelete: pods are replaced only when deleted, so 2 of 2 still "
                 "run the old template; wavegate verifies only RollingUpdate", id="on-delete"),
    pytest.param({"desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                  "numberAvailable": 2}, "OnDelete", True, None, id="on-delete-all-new"),
])
def test_daemon_set(status: dict[str, Any], strategy: str | None, done: bool,
                    failure: str | None) -> None:
    workload: dict[str, Any] = {"metadata": {"generation": 1},
                                "status": {"observedGeneration": 1, **status}}
    if strategy:
        workload["spec"] = {"updateStrategy": {"type": strategy}}
    verdict = rollout.judge("DaemonSet", workload)
    assert (verdict.done, verdict.failure) == (done, failure)


def test_only_workloads_are_judged() -> None:
    with pytest.raises(ValueError, match="not a workload"):
        rollout.judge("ConfigMap", {})


def pod(*, state: dict[str, Any] | None = None, last: dict[str, Any] | None = None,
        restarts: int = 0, init: bool = False) -> dict[str, Any]:
    status = {"name": "app", "restartCount": restarts, "state": state or {"running": {}},
              "lastState": last or {}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "web-5d4f-x2x"}, "status": {key: [status]}}


@pytest.mark.parametrize(("given", "problem"), [
    pytest.param(pod(), None, id="running"),
    pytest.param(pod(state={"waiting": {"reason": "ContainerCreating"}}), None, id="creating"),
    pytest.param(pod(state={"waiting": {"reason": "ErrImagePull"}}), None,
                 id="image-pull-may-recover"),
    pytest.param(pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, restarts=3,
                     last={"terminated": {"exitCode": 1, "reason": "Error"}}),
                 "pod web-5d4f-x2x: container app exited with code 1 (Error, CrashLoopBackOff), "
                 "restarted 3 times", id="crash-loop"),
    pytest.param(pod(state={"running": {}}, restarts=1,
                     last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
                 "pod web-5d4f-x2x: container app exited with code 137 (OOMKilled), "
                 "restarted 1 time", id="restarted-once-and-running-again"),
    pytest.param(pod(state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}),
                 "pod web-5d4f-x2x: container app is CrashLoopBackOff: back-off",
                 id="crash-loop-without-last-state"),
    pytest.param(pod(state={"waiting": {"reason": "CrashLoopBackOff"}},
                     last={"terminated": {"exitCode": 1, "reason": "Error"}}),
                 "pod web-5d4f-x2x: container app exited with code 1 (Error, CrashLoopBackOff)",
                 id="first-crash-before-the-restart-count-moves"),
    pytest.param(pod(state={"waiting": {"reason": "CreateContainerConfigError",
                                        "message": 'secret "tokens" not found'}}),
                 'pod web-5d4f-x2x: container app is CreateContainerConfigError: secret '
                 '"tokens" not found', id="config-error"),
    pytest.param(pod(state={"waiting": {"reason": "CrashLoopBackOff"}}, restarts=2, init=True,
                     last={"terminated": {"exitCode": 2}}),
                 "pod web-5d4f-x2x: container app exited with code 2 (terminated, "
                 "CrashLoopBackOff), restarted 2 times", id="init-container"),
    pytest.param({"metadata": {"name": "p"}}, None, id="no-status-yet"),
])
def test_pod_problem(given: dict[str, Any], problem: str | None) -> None:
    assert rollout.pod_problem(given) == problem


def test_a_deployments_pod_is_current_when_its_replica_set_has_the_deployments_revision() -> None:
    workload = deployment(revision="5")
    assert rollout.is_current("Deployment", workload, pod(), replica_set_revision="5")
    assert not rollout.is_current("Deployment", workload, pod(), replica_set_revision="4")
    assert not rollout.is_current("Deployment", workload, pod(), replica_set_revision=None)


def test_a_stateful_sets_pod_is_current_at_the_update_revision() -> None:
    workload = stateful_set(update="web-7c9")
    new, old = pod(), pod()
    new["metadata"]["labels"] = {"controller-revision-hash": "web-7c9"}
    old["metadata"]["labels"] = {"controller-revision-hash": "web-6b8"}
    assert rollout.is_current("StatefulSet", workload, new)
    assert not rollout.is_current("StatefulSet", workload, old)


def test_a_daemon_sets_pod_is_current_at_the_template_generation() -> None:
    workload = {"metadata": {"annotations": {
        "deprecated.daemonset.template.generation": "3"}}, "status": {}}
    new, old = pod(), pod()
    new["metadata"]["labels"] = {"pod-template-generation": "3"}
    old["metadata"]["labels"] = {"pod-template-generation": "2"}
    assert rollout.is_current("DaemonSet", workload, new)
    assert not rollout.is_current("DaemonSet", workload, old)


def test_owner_is_the_controller_reference() -> None:
    given = pod()
    given["metadata"]["ownerReferences"] = [
        {"kind": "Other", "name": "o"},
        {"kind": "ReplicaSet", "name": "web-5d4f", "controller": True}]
    assert rollout.owner(given) == ("ReplicaSet", "web-5d4f")
    assert rollout.owner(pod()) is None


@pytest.mark.parametrize(("selector", "query"), [
    ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]},
                           {"key": "env", "operator": "NotIn", "values": ["dev"]},
                           {"key": "app", "operator": "Exists"},
                           {"key": "legacy", "operator": "DoesNotExist"}]},
     "tier in (web,api),env notin (dev),app,!legacy"),
    ({}, ""),
])
def test_label_selector(selector: dict[str, Any], query: str) -> None:
    assert rollout.label_selector(selector) == query


@pytest.mark.parametrize(("given", "hint"), [
    pytest.param(pod(state={"waiting": {"reason": "ErrImagePull", "message": "no such image"}}),
                 "pod web-5d4f-x2x: ErrImagePull: no such image", id="waiting"),
    pytest.param({"metadata": {"name": "p"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available"}]}},
                 "pod p: Unschedulable: 0/3 nodes are available", id="unschedulable"),
    pytest.param(pod(), None, id="running"),
    pytest.param({"metadata": {"name": "p"}}, None, id="nothing-said"),
])
def test_pod_waiting(given: dict[str, Any], hint: str | None) -> None:
    assert rollout.pod_waiting(given) == hint


def replica(uid: str, *, stopping: bool = False, phase: str = "Running",
            replica_set: str = "web-5d4f") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"{replica_set}-{uid}", "uid": uid, "ownerReferences": [
        {"kind": "ReplicaSet", "name": replica_set, "controller": True}]}
    if stopping:
        metadata["deletionTimestamp"] = "2026-12-03T10:00:30Z"
    return {"metadata": metadata, "status": {"phase": phase}}


NEW = [replica("n1"), replica("n2"), replica("n3")]


@pytest.mark.parametrize(("pods", "stopping_for", "serving"), [
    pytest.param(NEW, {}, None, id="only-the-new-pods"),
    pytest.param([*NEW, replica("o1", stopping=True)], {"o1": 0.3}, "1 old pods stopping",
                 id="old-pod-just-began-stopping"),
    pytest.param([*NEW, replica("o1", stopping=True)], {"o1": rollout.ENDPOINTS_SETTLE}, None,
                 id="old-pod-stopping-long-enough-to-have-left-the-endpoints"),
    pytest.param([*NEW, replica("o1")], {}, "1 old pods not yet stopping",
                 id="old-pods-deletion-not-seen-yet"),
    pytest.param([*NEW, replica("o1", phase="Succeeded")], {}, None, id="finished-pod"),
    pytest.param([*NEW, replica("l1", replica_set="web-canary-7c9b")], {}, None,
                 id="another-deployments-pod-its-selector-picks-up-too"),
])
def test_a_deployment_read_done_waits_while_its_old_pods_may_still_get_traffic(
        pods: list[dict[str, Any]], stopping_for: dict[str, float], serving: str | None) -> None:
    assert rollout.old_pods_serving("Deployment", deployment(), pods, stopping_for) == serving


def test_only_a_deployment_reads_done_while_old_pods_stop() -> None:
    stopping = [*NEW, replica("o1", stopping=True)]
    assert rollout.old_pods_serving("StatefulSet", stateful_set(), stopping, {}) is None
