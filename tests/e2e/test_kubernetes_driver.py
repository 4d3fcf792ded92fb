"""The Kubernetes driver against real API servers (the kube sandbox, v1.20.2).

What a release engineer relies on: a release is applied whole or not at all, what it dropped
is pruned, applying it again changes nothing; the ledger reads back, refuses a stale update and
a release too big for a Secret; one run holds an app's lock, a forced takeover fences the old
holder out of every write; rollouts are judged by watches and fail fast with the reason; the
restricted deployer with manifests/rbac/deployer.yaml can do all of it, and without the role
is refused with the verb and resource named; and no token reaches an error or a log.

Most tests share one control plane without pods (no node agent: pods stay Pending, which is
what the failure tests want); the last ones share a kube fleet whose node agent runs pods, so a
rollout really completes.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from structlog.testing import capture_logs

from tests.e2e.conftest import TIMEOUT, admin_client, sandbox_binaries
from tests.waits import eventually
from wavegate.clock import SystemClock
from wavegate.config import fleet
from wavegate.config.app import APP_LABEL, MANAGED_BY, App, Release
from wavegate.config.fleet import Cluster
from wavegate.decide.ledger import Record, Status
from wavegate.drivers.kubernetes import KubernetesDriver
from wavegate.engine import deploy, rollback
from wavegate.engine import session as runs
from wavegate.errors import (
    EXIT_LOCKED,
    EXIT_NEEDS_HUMAN,
    Conflict,
    DriverError,
    LockHeld,
    Preempted,
    RolloutFailed,
)
from wavegate.sandbox import controlplane, kubefleet

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEPLOYER_RBAC = ROOT / "manifests" / "rbac" / "deployer.yaml"
APP = "shop"
_namespaces = itertools.count(1)

Make = Callable[..., KubernetesDriver]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.Sandbox]:
    directory = tmp_path_factory.mktemp("sandbox")
    started = controlplane.up(clusters=["a"], dir=directory, bin_dir=sandbox_binaries())
    yield started
    controlplane.down(directory)


@pytest.fixture(scope="module")
def admin(sandbox: controlplane.Sandbox) -> Iterator[client.ApiClient]:
    with admin_client(sandbox.kubeconfig, "a") as api:
        yield api


@pytest.fixture
def namespace(admin: client.ApiClient) -> str:
    """A namespace of its own for each test: the app, its ledger and its lock live there."""
    name = f"t{next(_namespaces)}"
    client.CoreV1Api(admin).create_namespace({"metadata": {"name": name}},
                                             _request_timeout=TIMEOUT)
    return name


@pytest.fixture
def make(sandbox: controlplane.Sandbox, namespace: str) -> Iterator[Make]:
    """Drivers for the test's namespace (admin context unless told), closed afterwards."""
    made: list[KubernetesDriver] = []

    def driver(context: str = "a", *, kubeconfig: Path | None = None,
               ns: str | None = None) -> KubernetesDriver:
        cluster = Cluster(name="a", region="local", driver="kubernetes",
                          namespace=ns or namespace, context=context, endpoint="http://127.0.0.1:9",
                          kubeconfig=kubeconfig or sandbox.kubeconfig)
        made.append(KubernetesDriver(cluster))
        return made[-1]

    yield driver
    for each in made:
        each.close()


# --- helpers -----------------------------------------------------------------------------


def release(version: str, namespace: str, *, replicas: int = 0, extra: bool = False,
            deadline: int | None = None) -> Release:
    """A Deployment, Service and ConfigMap as App.render labels them, out of apply order, and
    with ports without `protocol` (which v1.20 server-side apply refuses unless defaulted)."""
    def metadata(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace,
                "labels": {APP_LABEL: APP, MANAGED_BY: "wavegate"}}

    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata("web"),
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "web", "image": f"library-app:{version}",
                      "ports": [{"containerPort": 8080}]}]}}}}
    if deadline is not None:
        deployment["spec"]["progressDeadlineSeconds"] = deadline
    manifests = [
        deployment,
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata("web"),
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata("web"),
         "data": {"VERSION": version}},
    ]
    if extra:
        manifests.append({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": metadata("web-extra"), "data": {"x": "1"}})
    return Release(app=APP, version=version, manifests=tuple(manifests), checks="checks: []\n")


def record(revision: int, version: str = "1.0.0", run_id: str = "run-1") -> Record:
    return Record(app=APP, cluster="a", revision=revision, version=version,
                  status=Status.APPLYING, run_id=run_id, by="e2e",
                  started_at="2025-01-01T00:00:00.000+00:00")


def names(admin: client.ApiClient, kind: str, namespace: str) -> list[str]:
    """Names of the app's objects of KIND, as admin sees them."""
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    lists = {"ConfigMap": core.list_namespaced_config_map, "Service": core.list_namespaced_service,
             "Secret": core.list_namespaced_secret,
             "Deployment": apps.list_namespaced_deployment}
    found = lists[kind](namespace, label_selector=f"{APP_LABEL}={APP}", _request_timeout=TIMEOUT)
    return sorted(item.metadata.name for item in found.items)


def versions(admin: client.ApiClient, namespace: str) -> dict[str, str]:
    """What a write by wavegate would change, per app object: unchanged means nothing was written.

    The resourceVersion for the ConfigMap and Service, which only wavegate writes. The
    Deployment's status is the controller's to write while pods come up, which moves its
    resourceVersion too, so there it is the spec's generation and when wavegate last wrote.
    """
    core, apps = client.CoreV1Api(admin), client.AppsV1Api(admin)
    config_map = core.read_namespaced_config_map("web", namespace, _request_timeout=TIMEOUT)
    service = core.read_namespaced_service("web", namespace, _request_timeout=TIMEOUT)
    deployment = apps.read_namespaced_deployment("web", namespace, _request_timeout=TIMEOUT)
    ours = [f.time for f in deployment.metadata.managed_fields if f.manager == "wavegate"]
    return {"ConfigMap": config_map.metadata.resource_version,
            "Service": service.metadata.resource_version,
            "Deployment": f"generation {deployment.metadata.generation}, written {ours}"}


def grant(admin: client.ApiClient, namespace: str, rbac: Path | str = DEPLOYER_RBAC) -> None:
    """Apply an RBAC file to NAMESPACE as admin, the way `kubectl apply -n` plus kustomize do."""
    text = rbac.read_text() if isinstance(rbac, Path) else rbac
    core, rbac_api = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    create = {"ServiceAccount": core.create_namespaced_service_account,
              "Role": rbac_api.create_namespaced_role,
              "RoleBinding": rbac_api.create_namespaced_role_binding}
    for document in yaml.safe_load_all(text):
        for subject in document.get("subjects") or ():
            if subject["kind"] == "ServiceAccount":
                subject["namespace"] = namespace
        create[document["kind"]](namespace, document, _request_timeout=TIMEOUT)
    eventually(lambda: _authorized(admin, namespace) or None, every=0.05)


def _authorized(admin: client.ApiClient, namespace: str) -> bool:
    """RBAC takes effect through the API server's informer: wait for it."""
    review = {"spec": {"user": "deployer", "resourceAttributes": {
        "namespace": namespace, "verb": "get", "group": "coordination.k8s.io",
        "resource": "leases"}}}
    answer = client.AuthorizationV1Api(admin).create_subject_access_review(
        review, _request_timeout=TIMEOUT)
    return bool(answer.status.allowed)


def tokens(sandbox: controlplane.Sandbox) -> tuple[str, str]:
    return sandbox.admin_token, sandbox.deployer_token


# --- apply and prune ---------------------------------------------------------------------


def test_apply_prunes_what_a_release_dropped_and_reapplying_changes_nothing(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    driver = make()
    driver.connect()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    first = release("1.0.0", namespace, extra=True)
    driver.create_record(record(1), first, holder="run-1")
    driver.apply(first, holder="run-1")
    driver.wait_rollout(first, timeout=30)
    assert names(admin, "ConfigMap", namespace) == ["web", "web-extra"]
    assert names(admin, "Service", namespace) == ["web"]
    assert names(admin, "Deployment", namespace) == ["web"]
    service = client.CoreV1Api(admin).read_namespaced_service("web", namespace,
                                                              _request_timeout=TIMEOUT)
    assert service.spec.ports[0].protocol == "TCP"
    assert {f.manager for f in service.metadata.managed_fields} == {"wavegate"}

    second = release("1.0.1", namespace)
    driver.create_record(record(2, "1.0.1"), second, holder="run-1")
    driver.api.calls.clear()
    driver.api.requests.clear()
    started = time.monotonic()
    driver.apply(second, holder="run-1")
    took = time.monotonic() - started
    calls = dict(driver.api.calls)
    assert names(admin, "ConfigMap", namespace) == ["web"]  # web-extra pruned
    data = client.CoreV1Api(admin).read_namespaced_config_map("web", namespace,
                                                              _request_timeout=TIMEOUT).data
    assert data == {"VERSION": "1.0.1"}
    # 1 HPA list + 2 dry-runs (not the ConfigMap's: applied first, its own apply refused
    # would leave nothing applied either) + 3 applies + 1 prune list (the one kind and
    # namespace the inventories leave behind) + the one object pruned. The ledger is the one
    # create_record listed (and wrote since); the fences before each write are the lease as
    # last confirmed, or one renewal (a compare-and-set) once that look is older than its
    # trust window.
    leases = driver.api.requests.pop("update leases.coordination.k8s.io", 0)
    assert dict(driver.api.requests) == {
        "list horizontalpodautoscalers.autoscaling": 1, "apply deployments.apps": 2,
        "apply services": 2, "apply configmaps": 1, "list configmaps": 1,
        "delete configmaps": 1}
    assert leases <= 1

    before = versions(admin, namespace)
    driver.apply(second, holder="run-1")
    assert versions(admin, namespace) == before
    print(f"\napply of 3 objects with 1 pruned: {took * 1000:.0f} ms, calls {calls}")


def test_delete_removes_the_app_but_keeps_its_ledger_and_lock(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    first = release("1.0.0", namespace, extra=True)
    driver.create_record(record(1), first, holder="run-1")
    driver.apply(first, holder="run-1")
    driver.delete(APP, holder="run-1")
    assert [names(admin, kind, namespace) for kind in ("ConfigMap", "Service", "Deployment")] == \
        [[], [], []]
    assert names(admin, "Secret", namespace) == ["wavegate.shop.v1"]
    assert [r.revision for r in driver.records(APP)] == [1]
    assert driver.read_lock(APP) is not None


# --- ledger ------------------------------------------------------------------------------


def test_the_ledger_reads_back_and_refuses_stale_or_duplicate_writes(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    first = release("1.0.0", namespace)
    assert driver.records(APP) == []
    created = driver.create_record(record(1), first, holder="run-1")
    assert created.resource_version
    with pytest.raises(Conflict, match="exists already"):
        driver.create_record(record(1), first, holder="run-1")

    verified = driver.update_record(created.updated(status=Status.VERIFIED), holder="run-1")
    with pytest.raises(Conflict, match="changed since it was read"):
        driver.update_record(created.updated(status=Status.FAILED), holder="run-1")
    driver.create_record(record(2, "1.0.1"), release("1.0.1", namespace), holder="run-1")

    assert [(r.revision, r.status, r.version) for r in driver.records(APP)] == [
        (1, Status.VERIFIED, "1.0.0"), (2, Status.APPLYING, "1.0.1")]
    assert driver.records(APP)[0] == verified
    assert driver.stored_release(verified) == first
    secret = client.CoreV1Api(admin).read_namespaced_secret("wavegate.shop.v1", namespace,
                                                            _request_timeout=TIMEOUT)
    assert secret.type == "wavegate.dev/release"
    assert secret.metadata.labels["wavegate.dev/status"] == "verified"
    # A deploy's prune never touches the ledger, though it carries the app's label.
    driver.apply(first, holder="run-1")
    assert names(admin, "Secret", namespace) == ["wavegate.shop.v1", "wavegate.shop.v2"]


def test_a_release_too_big_for_a_secret_is_refused_before_anything_is_written(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    noise = base64.b64encode(os.urandom(1100 * 1024)).decode()  # gzip cannot shrink it
    manifests = release("1.0.0", namespace).manifests + (
        {"apiVersion": "v1", "kind": "ConfigMap", "data": {"blob": noise},
         "metadata": {"name": "big", "namespace": namespace, "labels": {APP_LABEL: APP}}},)
    big = Release(app=APP, version="1.0.0", manifests=manifests, checks="")
    with pytest.raises(DriverError, match="1 MiB") as refused:
        driver.create_record(record(1), big, holder="run-1")
    assert refused.value.exit_code == EXIT_NEEDS_HUMAN
    assert "nothing was written" in str(refused.value)
    assert names(admin, "Secret", namespace) == []


# --- lock and fencing --------------------------------------------------------------------


def test_the_lock_is_held_taken_by_force_renewed_and_released(make: Make) -> None:
    first, second = make(), make()
    first.acquire_lock(APP, holder="run-1", ttl=30)
    first.acquire_lock(APP, holder="run-1", ttl=30)  # again: a renewal, not a conflict
    lock = first.read_lock(APP)
    assert lock is not None and lock.holder == "run-1"

    with pytest.raises(LockHeld) as held:
        second.acquire_lock(APP, holder="run-2", ttl=30)
    assert held.value.exit_code == EXIT_LOCKED
    assert str(held.value) == f"a: {APP} is locked by run run-1 until {lock.expires}"

    second.acquire_lock(APP, holder="run-2", ttl=30, force=True)
    with pytest.raises(Preempted, match="now held by run run-2"):
        first.renew_lock(APP, holder="run-1", ttl=30)
    second.renew_lock(APP, holder="run-2", ttl=60)
    first.release_lock(APP, holder="run-1")  # not its lock any more: left alone
    assert (second.read_lock(APP) or lock).holder == "run-2"
    second.release_lock(APP, holder="run-2")
    assert second.read_lock(APP) is None
    first.acquire_lock(APP, holder="run-3", ttl=30)
    assert (first.read_lock(APP) or lock).holder == "run-3"


def _lease_requests(driver: KubernetesDriver) -> dict[str, int]:
    """The driver's requests on Leases, by verb; verbs it never sent are left out."""
    return {verb: n for verb in ("patch", "get", "create", "update", "watch")
            if (n := driver.api.requests[f"{verb} leases.coordination.k8s.io"])}


def test_a_released_lock_is_taken_in_one_request_and_a_held_one_is_read_first(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    first, second, third = make(), make(), make()
    first.acquire_lock(APP, holder="run-1", ttl=30)  # no lease yet: the patch finds none
    assert _lease_requests(first) == {"patch": 1, "create": 1}
    first.release_lock(APP, holder="run-1")

    second.acquire_lock(APP, holder="run-2", ttl=30)
    assert _lease_requests(second) == {"patch": 1}  # no read, no compare-and-set after it
    stored = client.CoordinationV1Api(admin).read_namespaced_lease(
        f"wavegate-{APP}", namespace, _request_timeout=TIMEOUT)
    assert (stored.spec.holder_identity, stored.spec.lease_transitions) == ("run-2", 1)

    with pytest.raises(LockHeld, match="locked by run run-2"):
        third.acquire_lock(APP, holder="run-3", ttl=30)
    assert _lease_requests(third) == {"patch": 1, "get": 1}  # the test failed: read, judged
    second.renew_lock(APP, holder="run-2", ttl=30)  # the take left it ours, version and all
    assert _lease_requests(second) == {"patch": 1, "update": 1}


def test_of_two_runs_taking_a_released_lock_at_once_one_gets_it(make: Make) -> None:
    make().acquire_lock(APP, holder="run-0", ttl=30)
    make().release_lock(APP, holder="run-0")
    drivers = {f"run-{n}": make() for n in range(1, 5)}
    start = threading.Barrier(len(drivers))
    outcomes: dict[str, str] = {}

    def take(holder: str) -> None:
        start.wait()
        try:
            drivers[holder].acquire_lock(APP, holder=holder, ttl=30)
            outcomes[holder] = "took"
        except LockHeld:
            outcomes[holder] = "held"

    threads = [threading.Thread(target=take, args=(holder,)) for holder in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["held", "held", "held", "took"], outcomes
    winner = next(holder for holder, outcome in outcomes.items() if outcome == "took")
    assert getattr(make().read_lock(APP), "holder", None) == winner


def test_a_role_without_patch_on_leases_takes_the_lock_by_reading_it_first(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    rbac = DEPLOYER_RBAC.read_text()
    grant(admin, namespace, rbac.replace("create, update, patch, delete]",
                                         "create, update, delete]"))
    driver = make("a-deployer")
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    driver.release_lock(APP, holder="run-1")
    driver.acquire_lock(APP, holder="run-2", ttl=30)
    # One refused patch, then as before: a read and a write per take (create, then update).
    assert _lease_requests(driver) == {"patch": 1, "get": 2, "create": 1, "update": 2}
    assert getattr(driver.read_lock(APP), "holder", None) == "run-2"


def test_an_expired_lock_is_taken_only_by_force(make: Make) -> None:
    dead, second = make(), make()
    dead.acquire_lock(APP, holder="run-dead", ttl=1)
    time.sleep(1.2)
    with pytest.raises(LockHeld) as held:
        second.acquire_lock(APP, holder="run-2", ttl=30)
    assert "expired" in str(held.value) and "wavegate rollback" in str(held.value)
    second.acquire_lock(APP, holder="run-2", ttl=30, force=True)
    taken = second.read_lock(APP)
    assert taken is not None and taken.holder == "run-2"


def test_a_forced_takeover_fences_the_old_holder_out_of_every_write(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    old, rollback = make(), make()
    old.acquire_lock(APP, holder="run-old", ttl=30)
    first = release("1.0.0", namespace)
    created = old.create_record(record(1), first, holder="run-old")
    old.apply(first, holder="run-old")

    rollback.acquire_lock(APP, holder="run-rollback", ttl=30, force=True)
    writes = [
        lambda: old.apply(release("2.0.0", namespace), holder="run-old"),
        lambda: old.create_record(record(2), first, holder="run-old"),
        lambda: old.update_record(created.updated(status=Status.VERIFIED), holder="run-old"),
        lambda: old.delete(APP, holder="run-old"),
    ]
    for write in writes:
        with pytest.raises(Preempted, match="now held by run run-rollback") as stopped:
            write()
        assert stopped.value.exit_code == EXIT_LOCKED
    data = client.CoreV1Api(admin).read_namespaced_config_map("web", namespace,
                                                              _request_timeout=TIMEOUT).data
    assert data == {"VERSION": "1.0.0"}
    assert [(r.revision, r.status) for r in old.records(APP)] == [(1, Status.APPLYING)]


# --- rollout -----------------------------------------------------------------------------


def test_a_deployment_past_its_progress_deadline_fails_the_rollout(
        make: Make, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    stuck = release("1.0.0", namespace, replicas=1, deadline=1)  # no node: pods stay Pending
    driver.apply(stuck, holder="run-1")
    driver.api.calls.clear()
    started = time.monotonic()
    with pytest.raises(RolloutFailed, match="Deployment/web: ProgressDeadlineExceeded"):
        driver.wait_rollout(stuck, timeout=30)
    took = time.monotonic() - started
    print(f"\nProgressDeadlineExceeded (1 s) seen after {took:.2f}s, calls "
          f"{dict(driver.api.calls)}")
    assert took < 15
    assert driver.api.calls["WATCH"] == 2  # the Deployment and its pods: watched, not polled


def test_a_rollout_that_does_not_finish_in_time_says_how_far_it_got(
        make: Make, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    pending = release("1.0.0", namespace, replicas=2)
    driver.apply(pending, holder="run-1")
    started = time.monotonic()
    with pytest.raises(RolloutFailed) as failed:
        driver.wait_rollout(pending, timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 5
    assert str(failed.value) == "Deployment/web: not rolled out after 1.5s: 0 of 2 available"


def test_a_crashing_new_pod_fails_the_rollout_at_once(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    crashing = release("1.0.0", namespace, replicas=1, deadline=600)
    driver.apply(crashing, holder="run-1")
    reporter = threading.Thread(target=_report_crash, args=(admin, namespace), daemon=True)
    started = time.monotonic()
    reporter.start()
    with pytest.raises(RolloutFailed) as failed:
        driver.wait_rollout(crashing, timeout=60)
    took = time.monotonic() - started
    reporter.join(timeout=10)
    message = str(failed.value)
    assert message.startswith("Deployment/web: pod web-")
    assert message.endswith(": container web exited with code 3 (Error, CrashLoopBackOff), "
                            "restarted 2 times")
    assert took < 15


def _report_crash(admin: client.ApiClient, namespace: str) -> None:
    """What a node agent reports for a container that keeps exiting (none runs here)."""
    core = client.CoreV1Api(admin)

    def a_pod() -> str | None:
        pods = core.list_namespaced_pod(namespace, _request_timeout=TIMEOUT).items
        return pods[0].metadata.name if pods else None

    name = eventually(a_pod, every=0.05)
    time.sleep(0.3)  # let the watch see the pod Pending first: a crash is news, not history
    status = {"status": {"phase": "Running", "containerStatuses": [{
        "name": "web", "image": "library-app:1.0.0", "imageID": "", "ready": False,
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                                     "startedAt": "2025-01-01T00:00:00Z",
                                     "finishedAt": "2025-01-01T00:00:01Z"}}}]}}
    core.patch_namespaced_pod_status(name, namespace, status, _request_timeout=TIMEOUT,
                                     _content_type="application/merge-patch+json")


# --- a rollout wait and its lock ---------------------------------------------------------

def test_a_rollout_wait_follows_its_lease_with_one_watch_not_a_request_a_second(
        make: Make, namespace: str) -> None:
    driver = make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    pending = release("1.0.0", namespace, replicas=1)  # no node: never available
    driver.apply(pending, holder="run-1")
    driver.api.requests.clear()
    with pytest.raises(RolloutFailed, match="not rolled out after 4s"):
        driver.wait_rollout(pending, timeout=4, holder="run-1")
    # Four seconds of looks at the lock, each free while the watch shows no change.
    assert _lease_requests(driver) == {"watch": 1}


def test_a_lease_deleted_during_a_rollout_wait_is_taken_again_and_a_taken_one_stops_it(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    driver, rollback, observer = make(), make(), make()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    pending = release("1.0.0", namespace, replicas=1)
    driver.apply(pending, holder="run-1")
    driver.api.requests.clear()
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            driver.wait_rollout(pending, timeout=120, holder="run-1")
        except BaseException as error:  # the test asserts what it was
            raised.append(error)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    eventually(lambda: driver.api.requests["watch leases.coordination.k8s.io"] or None)
    client.CoordinationV1Api(admin).delete_namespaced_lease(f"wavegate-{APP}", namespace,
                                                            _request_timeout=TIMEOUT)
    eventually(lambda: getattr(observer.read_lock(APP), "holder", None) == "run-1" or None)
    rollback.acquire_lock(APP, holder="run-rollback", ttl=30, force=True)
    waiter.join(timeout=60)
    assert not waiter.is_alive(), "the wait went on under a lease taken by force"
    assert len(raised) == 1 and isinstance(raised[0], Preempted), raised
    assert "now held by run run-rollback" in str(raised[0])
    assert driver.api.requests["watch leases.coordination.k8s.io"] == 1  # one, all along


def test_without_watch_on_leases_a_rollout_wait_renews_its_lease_instead(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    rbac = DEPLOYER_RBAC.read_text()
    granted = "verbs: [get, list, watch, create, update, patch, delete]"
    assert granted in rbac
    grant(admin, namespace, rbac.replace(granted, "verbs: [get, create, update, patch, delete]"))
    driver = make("a-deployer")
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    pending = release("1.0.0", namespace, replicas=1)
    driver.apply(pending, holder="run-1")
    driver.api.requests.clear()
    with capture_logs() as logs, pytest.raises(RolloutFailed, match="not rolled out after 4s"):
        driver.wait_rollout(pending, timeout=4, holder="run-1")
    unavailable = [e for e in logs if e["event"] == "kube.lease_watch_unavailable"]
    assert len(unavailable) == 1, logs
    assert unavailable[0]["detail"] == ("a: forbidden: deployer cannot watch "
                                        f"leases.coordination.k8s.io in namespace {namespace}")
    requests = _lease_requests(driver)
    assert requests["watch"] == 1  # refused
    assert requests.get("update", 0) >= 1  # the lease renewed while the wait lasts, as before


# --- the restricted deployer -------------------------------------------------------------


def test_the_deployer_role_is_enough_for_a_whole_deploy(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    grant(admin, namespace)
    driver = make("a-deployer")
    driver.connect()
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    assert driver.records(APP) == []
    first = release("1.0.0", namespace, extra=True)
    created = driver.create_record(record(1), first, holder="run-1")
    driver.apply(first, holder="run-1")
    driver.wait_rollout(first, timeout=30)
    driver.update_record(created.updated(status=Status.VERIFIED), holder="run-1")
    second = release("1.0.1", namespace)
    driver.create_record(record(2, "1.0.1"), second, holder="run-1")
    driver.apply(second, holder="run-1")
    assert names(admin, "ConfigMap", namespace) == ["web"]
    assert driver.stored_release(driver.records(APP)[0]) == first
    driver.renew_lock(APP, holder="run-1", ttl=30)
    driver.delete(APP, holder="run-1")
    driver.release_lock(APP, holder="run-1")
    assert driver.read_lock(APP) is None
    assert names(admin, "Deployment", namespace) == []


def test_without_the_role_the_deployer_is_told_what_was_refused(
        make: Make, namespace: str) -> None:
    driver = make("a-deployer")
    driver.connect()  # /version answers anyone authenticated
    with pytest.raises(DriverError) as refused:
        driver.acquire_lock(APP, holder="run-1", ttl=30)
    assert refused.value.exit_code == EXIT_NEEDS_HUMAN
    assert str(refused.value) == ("a: forbidden: deployer cannot get leases.coordination.k8s.io "
                                  f"in namespace {namespace}")


PARTIAL_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: partial}
rules:
  - {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}
  - {apiGroups: [""], resources: [configmaps, services], verbs: [list, create, patch]}
  - {apiGroups: [""], resources: [secrets], verbs: [list]}
  - {apiGroups: [autoscaling], resources: [horizontalpodautoscalers], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: partial}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: partial}
subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: deployer}]
"""


def test_a_refusal_midway_leaves_nothing_half_applied(
        make: Make, admin: client.ApiClient, namespace: str) -> None:
    grant(admin, namespace, PARTIAL_ROLE)
    driver = make("a-deployer")
    driver.acquire_lock(APP, holder="run-1", ttl=30)
    with pytest.raises(DriverError) as refused:
        driver.apply(release("1.0.0", namespace), holder="run-1")
    assert str(refused.value) == ("a: forbidden: deployer cannot patch deployments.apps in "
                                  f"namespace {namespace}")
    # The ConfigMap and the Service come first and were allowed: still, neither was applied.
    assert names(admin, "ConfigMap", namespace) == names(admin, "Service", namespace) == []


# --- credentials and reachability ----------------------------------------------------------


def _exec_kubeconfig(sandbox: controlplane.Sandbox, folder: Path, *, good_after: int) -> Path:
    """A kubeconfig whose user's token comes from an exec plugin (as EKS, GKE and AKS do):
    a revoked token for the first GOOD_AFTER runs of the plugin, the admin token after."""
    plugin = folder / "plugin.py"
    counter, secret = folder / "runs", folder / "token"
    secret.write_text(sandbox.admin_token)
    plugin.write_text(
        "import json, pathlib, sys\n"
        f"counter = pathlib.Path({str(counter)!r})\n"
        "runs = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(runs))\n"
        f"token = pathlib.Path({str(secret)!r}).read_text() if runs > {good_after} "
        "else 'revoked-token-0123456789'\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',\n"
        "                  'kind': 'ExecCredential', 'status': {'token': token}}))\n")
    document = json.loads(sandbox.kubeconfig.read_text())
    document["users"].append({"name": "exec", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin)]}}})
    document["contexts"].append({"name": "a-exec", "context": {"cluster": "a", "user": "exec"}})
    path = folder / "kubeconfig"
    path.write_text(json.dumps(document))
    return path


def test_a_token_refused_with_401_is_reloaded_once(
        make: Make, sandbox: controlplane.Sandbox, tmp_path: Path) -> None:
    kubeconfig = _exec_kubeconfig(sandbox, tmp_path, good_after=1)
    driver = make("a-exec", kubeconfig=kubeconfig)
    with capture_logs() as logs:
        driver.connect()
        driver.acquire_lock(APP, holder="run-1", ttl=30)
    assert [e["event"] for e in logs].count("kube.reauthenticate") == 1
    assert (tmp_path / "runs").read_text() == "2"


def test_a_token_refused_after_the_reload_is_a_clear_error(
        make: Make, sandbox: controlplane.Sandbox, tmp_path: Path) -> None:
    kubeconfig = _exec_kubeconfig(sandbox, tmp_path, good_after=99)
    with pytest.raises(DriverError) as refused:
        make("a-exec", kubeconfig=kubeconfig).connect()
    assert str(refused.value) == ("a: get /version: unauthorized (401): the API server refused "
                                  "the kubeconfig's credentials, also after reloading them")
    assert "revoked-token" not in str(refused.value)


def test_an_unreachable_cluster_is_reported_within_seconds(
        make: Make, sandbox: controlplane.Sandbox, tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    document = json.loads(sandbox.kubeconfig.read_text())
    document["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(document))
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(DriverError) as down:
        make(kubeconfig=kubeconfig).connect()
    assert time.monotonic() - started < 10
    assert down.value.exit_code == EXIT_NEEDS_HUMAN
    assert str(down.value) == (f"a: get /version: API server unreachable: "
                               f"https://127.0.0.1:{port}: Connection refused")
    assert [e["attempt"] for e in logs if e["event"] == "kube.retry"] == [1, 2, 3, 4]


def test_no_token_reaches_an_error_message_or_a_log(
        make: Make, admin: client.ApiClient, sandbox: controlplane.Sandbox, namespace: str,
        tmp_path: Path) -> None:
    failures: list[BaseException] = []
    attempts: list[Callable[[], object]] = [
        lambda: make("a-deployer").acquire_lock(APP, holder="run-1", ttl=30),  # 403
        lambda: make(ns="no-such-namespace").acquire_lock(APP, holder="run-1", ttl=30),  # 404
        lambda: make("a-exec", kubeconfig=_exec_kubeconfig(sandbox, tmp_path,
                                                           good_after=99)).connect(),  # 401
        lambda: make().stored_release(record(7)),  # 404 of a ledger Secret
    ]
    with capture_logs() as logs:
        for attempt in attempts:
            with pytest.raises(DriverError) as failed:
                attempt()
            failures.append(failed.value)
    texts = [str(f) for f in failures] + [repr(entry) for entry in logs]
    for token in (*tokens(sandbox), "revoked-token-0123456789"):
        assert not [text for text in texts if token in text]
    assert all("\n" not in str(f) for f in failures)


# --- real pods: the kube fleet -------------------------------------------------------------


SOLO = """\
fleet: solo
defaults: {namespace: library, values: {replicas: 2}}
local:
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
  secrets: {library-tokens: {alice: {env: LIBRARY_TOKEN_ALICE}, bob: {env: LIBRARY_TOKEN_BOB},
                             carol: {env: LIBRARY_TOKEN_CAROL}}}
clusters: [{name: solo}]
waves: [{name: all, clusters: [solo]}]
"""
TOKENS = {"LIBRARY_TOKEN_ALICE": "alice-e2e", "LIBRARY_TOKEN_BOB": "bob-e2e",
          "LIBRARY_TOKEN_CAROL": "carol-e2e"}


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleet.Fleet]:
    """One cluster whose node agent runs pods, the deployer role from deployer.yaml; the
    fleet file generated for it (restricted context, ingress endpoint)."""
    sandbox_binaries()
    directory = tmp_path_factory.mktemp("kube")
    (directory / "in").mkdir()
    (directory / "in" / "fleet.yaml").write_text(SOLO)
    with pytest.MonkeyPatch.context() as env:
        for name, value in TOKENS.items():
            env.setenv(name, value)
        started = time.monotonic()
        kubefleet.up(fleet.load(directory / "in" / "fleet.yaml"), directory, rbac=DEPLOYER_RBAC)
        print(f"\nkube fleet of 1 cluster up in {time.monotonic() - started:.1f}s")
    try:
        yield fleet.load(directory / "fleet.yaml")
    finally:
        kubefleet.down(directory)


@pytest.fixture(scope="module")
def kube(solo: fleet.Fleet) -> fleet.Cluster:
    return solo.cluster("solo")


def _version(endpoint: str) -> str:
    response = httpx.get(f"{endpoint}/version", timeout=5, trust_env=False)
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


def _crashing(good: Release) -> Release:
    manifests = json.loads(json.dumps(good.manifests))
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            container = manifest["spec"]["template"]["spec"]["containers"][0]
            container["env"].append({"name": "LIBRARY_FAIL", "value": "crash"})
    return Release(app=good.app, version="1.2.0", manifests=tuple(manifests),
                   checks=good.checks)


def test_a_release_rolls_out_updates_and_a_crashing_one_is_caught(kube: fleet.Cluster) -> None:
    assert kube.context == "solo-deployer" and kube.endpoint is not None
    driver = KubernetesDriver(kube)
    app = App.from_folder(ROOT / "manifests" / "library-app")
    try:
        driver.connect()
        driver.acquire_lock("library-app", holder="run-1", ttl=60)
        timings: dict[str, float] = {}
        for version in ("1.0.0", "1.1.0"):
            driver.api.calls.clear()
            started = time.monotonic()
            rendered = app.render(kube, version)
            driver.apply(rendered, holder="run-1")
            driver.wait_rollout(rendered, timeout=60)
            timings[version] = time.monotonic() - started
            assert _version(kube.endpoint) == version
        calls = dict(driver.api.calls)

        started = time.monotonic()
        crashing = _crashing(rendered)
        driver.apply(crashing, holder="run-1")
        with pytest.raises(RolloutFailed) as failed:
            driver.wait_rollout(crashing, timeout=60)
        timings["crash caught"] = time.monotonic() - started
        assert " exited with code 1 " in str(failed.value)
        assert str(failed.value).startswith("Deployment/library-app: pod library-app-")
        assert {_version(kube.endpoint) for _ in range(4)} == {"1.1.0"}  # old pods serve on

        started = time.monotonic()
        driver.apply(rendered, holder="run-1")  # what a rollback re-applies
        driver.wait_rollout(rendered, timeout=60)
        timings["rolled back"] = time.monotonic() - started
        assert _version(kube.endpoint) == "1.1.0"
    finally:
        driver.release_lock("library-app", holder="run-1")
        driver.close()
    print("\n2-replica library-app: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
          + f"; calls of the 1.1.0 deploy {calls}")
    assert max(timings.values()) < 30


def test_an_unmapped_image_fails_at_once_and_a_timeout_says_why_a_new_pod_waits(
        kube: fleet.Cluster) -> None:
    driver = KubernetesDriver(kube)
    good = App.from_folder(ROOT / "manifests" / "library-app").render(kube, "1.1.0")

    def variant(version: str, change: Callable[[dict[str, Any]], None]) -> Release:
        manifests = json.loads(json.dumps(good.manifests))
        for manifest in manifests:
            if manifest["kind"] == "Deployment":
                change(manifest["spec"]["template"]["spec"]["containers"][0])
        return Release(app=good.app, version=version, manifests=tuple(manifests),
                       checks=good.checks)

    unmapped = variant("1.3.0", lambda c: c.update(image="no-such-image:1"))
    never_ready = variant("1.4.0", lambda c: c["readinessProbe"]["httpGet"].update(
        path="/no-such-path"))
    try:
        driver.acquire_lock("library-app", holder="run-2", ttl=60, force=True)
        driver.apply(unmapped, holder="run-2")
        with pytest.raises(RolloutFailed) as not_pulled:
            driver.wait_rollout(unmapped, timeout=120)  # not waited out: no wait cures it
        driver.apply(never_ready, holder="run-2")
        with pytest.raises(RolloutFailed) as timed_out:
            driver.wait_rollout(never_ready, timeout=3)
        driver.apply(good, holder="run-2")
        driver.wait_rollout(good, timeout=60)
    finally:
        driver.release_lock("library-app", holder="run-2")
        driver.close()
    assert "not rolled out after" not in str(not_pulled.value)
    assert " is ErrImageNeverPull: image 'no-such-image:1'" in str(not_pulled.value)
    assert str(timed_out.value).startswith("Deployment/library-app: not rolled out after 3s: ")
    assert ": ContainersNotReady: " in str(timed_out.value)


# --- API economy -------------------------------------------------------------------------


def test_a_deploy_and_a_rollback_stay_within_their_api_request_budgets(
        solo: fleet.Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine, as `deploy` and `rollback` run them: each operation lists the
    ledger once, reads no object it just applied, and fences its writes with the lease as its
    lock last confirmed it rather than a read before each one."""
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    app = App.from_folder(ROOT / "manifests" / "library-app")
    for version in ("1.0.0", "1.1.0"):
        prepared = deploy.prepare(solo, app, version, {})
        report = deploy.new_report(solo, app, version, runs.new_run_id())
        code = deploy.run(solo, prepared, run_id=report.run_id, by="e2e",
                          clock=SystemClock(), report=report)
        assert code == 0, report.message
    deployed = Counter(prepared.targets["solo"].driver.api.requests)

    run_id = runs.new_run_id()
    drivers = runs.drivers_for(solo, ["solo"])
    asked = rollback.Request(app="library-app", to_version="1.0.0", reason="e2e", run_id=run_id,
                             by="e2e")
    report = rollback.new_report("library-app", ["solo"], solo, run_id, "1.0.0")
    assert rollback.run(solo, drivers, asked, clock=SystemClock(), report=report) == 0
    rolled = Counter(drivers["solo"].api.requests)
    assert _version(str(solo.cluster("solo").endpoint)) == "1.0.0"
    print(f"\ndeploy {sum(deployed.values())} requests {dict(deployed)}"
          f"\nrollback {sum(rolled.values())} requests {dict(rolled)}")

    # Lease renewals grow with the time the lock is held, on a noisy machine too: the budgets
    # leave room for the release and the renewals a slow run makes. The rest is pinned: the
    # released lease taken by one PATCH (no read before it), the ledger listed once per
    # operation, no GET of an object the apply answered with, no dry run of the object
    # applied first, no list of pods before watching them, and a deploy's rollout wait
    # follows its lease with one WATCH (a rollback's has no holder).
    lease_writes = "update leases.coordination.k8s.io"
    common = {"patch leases.coordination.k8s.io": 1, "list secrets": 1,
              "create secrets": 1, "list horizontalpodautoscalers.autoscaling": 1,
              "apply configmaps": 1, "apply services": 2, "apply deployments.apps": 2,
              "watch pods": 1, "watch deployments.apps": 1}
    fixed_deploy = {kind: n for kind, n in deployed.items() if kind != lease_writes}
    fixed_rollback = {kind: n for kind, n in rolled.items() if kind != lease_writes}
    # A deploy confirms every cluster answers before it locks any (GET /version).
    assert fixed_deploy == {**common, "get /version": 1, "watch leases.coordination.k8s.io": 1,
                            "patch secrets": 1}, deployed
    # A rollback goes cluster by cluster: its lock's take is its first request, and its one
    # ledger list brings the release it goes back to. It marks two revisions (the new one
    # verified, the replaced one rolled-back).
    assert fixed_rollback == {**common, "patch secrets": 2}, rolled
    assert sum(fixed_deploy.values()) + 3 <= 20  # the release and up to two renewals
    # The release, and the fence's renewal of a rollback that outlasts the trust window.
    assert sum(fixed_rollback.values()) + 2 <= 15
