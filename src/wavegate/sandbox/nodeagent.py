"""The node agent of one kube sandbox cluster: the scheduler and kubelet its control plane lacks.

`python -m wavegate.sandbox.nodeagent --kubeconfig K --context C --images-json J
--ingress-port P --state-dir D [--node N] [--python PY]` runs in the foreground until SIGTERM or
SIGINT, acting as the admin context C (it binds pods and writes pod status, which a deployer
may not). P 0 picks a free port; N defaults to `node-C`; `python` in an argv means PY, by
default the interpreter the agent runs on.

Owns, for its one cluster:
- the Node `node-<cluster>`, registered Ready (no heartbeats: no node lifecycle controller runs);
- scheduling: every Pod without a nodeName is bound to that node (a Binding, as kube-scheduler);
- running: each bound pod's first container as a local process through `localfleet.pods.Runner`,
  on its own loopback address, built as the local fleet builds its pods (`localfleet.podspec`:
  the argv from the images map, the env from the pod spec, ConfigMaps and Secrets read through
  the API);
- pod status, patched whenever it changes: phase, Ready/ContainersReady, podIP, and the
  container's state, restarts and last exit code, which Deployments roll out by;
- termination: a pod with a deletionTimestamp is stopped, then deleted with grace period 0
  (no kubelet here finishes graceful deletion); a process whose pod vanished is stopped;
- the ingress on 127.0.0.1:P to the ready pods of the ingress Service, endpoints computed here
  (the Endpoints API refuses loopback addresses, so no endpoint controller runs);
- D/agent.json (`{"pid", "ingress", "node"}`) while it serves; D/pods/ holds the pod logs.

Must not decide rollouts (the Deployment and ReplicaSet controllers do), nor talk to any API
server but its own. Pure helpers (`status_patch`, `ingress_service`)
are apart from the I/O: `Mirror` (list+watch of one kind) and `Agent` (the loop that acts).

Threads: the main thread owns the Runner (start/stop/tick: PR_SET_PDEATHSIG ties pods to the
thread that forked them) and every write to the API; a daemon thread per watched kind keeps its
Mirror current and wakes the main thread. Exit codes: 0 after a signal, 1 when it cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client import ApiException

from wavegate import filestore
from wavegate.drivers import kubewatch
from wavegate.localfleet import objects, pods, podspec
from wavegate.localfleet import status as pod_status
from wavegate.localfleet.ingress import Ingress

__all__ = [
    "Agent",
    "ContainerView",
    "Mirror",
    "Settings",
    "container_of",
    "ingress_service",
    "main",
    "node_body",
    "pod_key",
    "register",
    "status_patch",
]

log = logging.getLogger("wavegate.sandbox.nodeagent")  # not __main__ under -m

Json = dict[str, Any]

TIMEOUT = 10.0  # seconds for every API call: the Python client would wait forever without one
WATCH_SECONDS = 30  # the server ends each watch after this; the client reads a little longer
RETRY_SECONDS = 1.0  # after a failed list/watch, or before starting a pod that could not start
TICK_SECONDS = 0.1
REGISTER_SECONDS = 30.0  # how long the agent waits for its API server at start
MERGE_PATCH = "application/merge-patch+json"
# Errors an API call can end in without it being a bug here: refused, reset, timed out, or an
# answer with an error status. Each is logged and the step is tried again on a later tick.
API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


# --- pure helpers: a pod in, what to run or report out -----------------------------------


def pod_key(pod: Mapping[str, Any]) -> str:
    """`namespace.name`: the Runner's name for the pod, and its log file's."""
    return f"{pod['metadata']['namespace']}.{pod['metadata']['name']}"


def container_of(pod: Mapping[str, Any]) -> objects.Container:
    """The pod's first container, read exactly as the local fleet reads a Deployment's.

    A pod spec is what a Deployment's template holds, so `parse_deployment` of a one-pod
    wrapper does it (and its errors, `SpecError`, say the same things); other containers of
    the pod are not run.
    """
    spec = dict(pod["spec"])
    spec["containers"] = spec["containers"][:1]
    labels = pod["metadata"].get("labels") or {}
    wrapper = {
        "kind": "Deployment",
        "metadata": {"name": pod["metadata"]["name"]},
        "spec": {"selector": {}, "template": {"metadata": {"labels": labels}, "spec": spec}},
    }
    return objects.parse_deployment(objects.Manifest.from_dict("Pod", wrapper)).container


@dataclass(frozen=True)
class ContainerView:
    """What the agent knows of a pod's container: the input of its status."""

    name: str
    image: str
    started_at: str  # RFC 3339, the pod's first start; "" before it
    process: pods.PodStatus | None  # None: not started (see `problem`)
    problem: tuple[str, str] | None = None  # (reason, message) that keeps it from starting
    run_started_at: str = ""  # the current run's start
    ready_since: str = ""  # when the Ready condition took its current value


def status_patch(view: ContainerView) -> Json:
    """The pod's status as a JSON merge patch.

    Lists are replaced whole by a merge patch, so `conditions` and `containerStatuses` are
    complete (PodScheduled included, or the patch would drop it) and a container state never
    keeps a stale `running` beside a new `waiting`.
    """
    process = view.process
    ready = process is not None and process.ready
    status: Json = {
        "phase": "Running" if view.started_at else "Pending",
        "hostIP": "127.0.0.1",
        "conditions": pod_status.pod_conditions(view.name, ready, view.ready_since),
        "containerStatuses": [
            pod_status.container_status(
                name=view.name, image=view.image, process=process, problem=view.problem,
                started_at=view.run_started_at or view.started_at,
            )  # no termination message: a pod's log never reaches the API (it may hold secrets)
        ],
    }
    if view.started_at:
        status["startTime"] = view.started_at
    if process is not None and process.host:
        status["podIP"] = process.host
        status["podIPs"] = [{"ip": process.host}]
    return {"status": status}


def ingress_service(services: Iterable[Mapping[str, Any]]) -> tuple[objects.Service | None, str]:
    """The Service the ingress serves, or None and why.

    The one annotated `wavegate.dev/ingress: "true"` (the first by namespace and name if
    several are), else the only Service that selects pods (the `kubernetes` Service does not).
    """
    parsed: list[objects.Service] = []
    unusable: list[str] = []  # why a Service could not be parsed: the 503's detail, if none fits
    for body in sorted(services, key=_namespaced_name):
        manifest = objects.Manifest.from_dict(f"Service.{_namespaced_name(body)}", body)
        try:
            parsed.append(objects.parse_service(manifest))
        except objects.SpecError as e:
            unusable.append(f"Service {manifest.namespace}/{manifest.name}: {e}")
    annotated = [s for s in parsed if s.ingress]
    selecting = [s for s in parsed if s.selector]
    if annotated or len(selecting) == 1:
        return (annotated or selecting)[0], ""
    if selecting:
        return None, f'several Services and none annotated {objects.INGRESS_ANNOTATION}: "true"'
    return None, "; ".join(unusable) or "no Service selects pods"


def _namespaced_name(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace', '')}.{metadata.get('name', '')}"


def now() -> str:
    """The time as the API writes it: RFC 3339, UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the mirror of one kind: list, then watch, list again on 410 Gone ---------------------


class Mirror:
    """The objects of one kind in every namespace, as raw JSON, kept current on a thread.

    Raw JSON rather than client models: the helpers above read manifests as dicts, and the
    models would re-validate every object of every event. The list-then-watch loop is
    `kubewatch.ListWatch`, the Kubernetes driver's own.
    """

    def __init__(self, kind: str, list_all: Callable[..., Any], on_change: Callable[[], None]):
        self.kind = kind
        self._list_all = list_all  # e.g. CoreV1Api.list_pod_for_all_namespaces
        self._on_change = on_change
        self._objects: dict[str, Json] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()  # set once the first list is in

    def snapshot(self) -> list[Json]:
        with self._lock:
            return list(self._objects.values())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            follower = kubewatch.ListWatch(list_=self._list, watch=self._open,
                                           on_sync=self._synced, on_event=self._changed,
                                           stopped=stop)
            try:
                follower.run()
            except (*API_ERRORS, kubewatch.Failed) as e:
                log.warning("%s list/watch failed: %s", self.kind, _short(e))
                stop.wait(RETRY_SECONDS)
            except Exception:  # a bug here must not leave the agent blind for good
                log.exception("%s list/watch failed", self.kind)
                stop.wait(RETRY_SECONDS)

    def _list(self) -> Json:
        return _body(self._list_all(_request_timeout=TIMEOUT, _preload_content=False))

    def _open(self, version: str) -> Any:
        try:
            return self._list_all(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(TIMEOUT, WATCH_SECONDS + TIMEOUT),
                _preload_content=False,
            )
        except ApiException as e:  # usually an ERROR event in the stream; sometimes the status
            if e.status == 410:
                raise kubewatch.Gone() from e
            raise

    def _synced(self, items: list[Json]) -> None:
        with self._lock:
            self._objects = {_namespaced_name(item): item for item in items}
        self.synced.set()
        self._on_change()

    def _changed(self, kind: str, body: Json) -> None:
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(_namespaced_name(body), None)
            else:
                self._objects[_namespaced_name(body)] = body
        self._on_change()


# --- the agent ---------------------------------------------------------------------------


@dataclass
class _Running:
    """A pod this agent started: which pod object it was, and what its status rests on."""

    uid: str
    container: objects.Container
    started_at: str  # the pod's first start
    run_started_at: str = ""  # the current run's start: a restart moves it
    restarts: int = 0
    ready: bool = False
    ready_since: str = ""

    def note(self, process: pods.PodStatus) -> None:
        """Move the timestamps the status shows when a restart or a readiness change happened."""
        if process.restarts != self.restarts or not self.run_started_at:
            self.restarts, self.run_started_at = process.restarts, now()
        if process.ready != self.ready or not self.ready_since:
            self.ready, self.ready_since = process.ready, now()


@dataclass(frozen=True)
class _Problem:
    """Why a pod could not start, and when to try again."""

    uid: str
    reason: str
    message: str
    retry_at: float  # time.monotonic()
    since: str  # when this problem was first seen


@dataclass(frozen=True)
class Settings:
    node: str
    images: Mapping[str, Sequence[str]]
    python: str
    state_dir: Path


class Agent:
    """One round of `tick` reconciles every pod; `run` loops until told to stop."""

    def __init__(
        self,
        core: client.CoreV1Api,
        settings: Settings,
        *,
        runner: pods.Runner,
        ingress: Ingress,
        pods_mirror: Mirror,
        services_mirror: Mirror,
    ) -> None:
        self._core = core
        self._settings = settings
        self._runner = runner
        self._ingress = ingress
        self._pods = pods_mirror
        self._services = services_mirror
        self._running: dict[str, _Running] = {}
        self._problems: dict[str, _Problem] = {}
        self._stopping = False  # a pod's process is stopping: the Runner has a step to take
        self._reported: dict[str, tuple[str, Json]] = {}  # key -> uid, last status patched
        self._bound: set[str] = set()  # uids bound, until the watch shows it
        self._deleted: set[str] = set()  # uids deleted, until the watch shows it

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        while not stop.is_set():
            wake.clear()
            try:
                self.tick()
            except Exception:  # one bad round must not take the node down
                log.exception("control loop round failed")
            wake.wait(TICK_SECONDS)

    def tick(self) -> None:
        self._runner.tick()
        current = {pod_key(pod): pod for pod in self._pods.snapshot()}
        self._stopping = False
        for key, pod in sorted(current.items()):
            self._reconcile(key, pod)
        self._stop_vanished(current)
        self._report(current)
        self._route(current)
        if self._stopping:  # out of the ingress now: its SIGTERM need not wait a tick
            self._runner.tick()

    def close(self) -> None:
        self._ingress.set_backends([], detail="the node agent is stopping")
        self._runner.close()

    # -- one pod ---------------------------------------------------------------------------

    def _reconcile(self, key: str, pod: Json) -> None:
        node, uid = pod["spec"].get("nodeName"), pod["metadata"]["uid"]
        if node not in (None, self._settings.node):
            return
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate(key, pod)
        elif node is None:
            self._bind(pod)
        elif pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            running = self._running.get(key)
            if running is None and self._due(key, uid):
                self._start(key, pod)
            elif running is not None and running.uid != uid:
                self._runner.stop(key)  # the same name, a new pod: start it once this one is gone

    def _bind(self, pod: Json) -> None:
        metadata = pod["metadata"]
        if metadata["uid"] in self._bound:
            return
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": metadata["name"], "uid": metadata["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self._settings.node},
        }
        # _preload_content=False: the answer is a Status, which the client fails to read as
        # the V1Binding it expects (a ValueError, or a pydantic ValidationError in v37).
        done = self._call(
            f"bind {metadata['namespace']}/{metadata['name']}",
            self._core.create_namespaced_pod_binding,
            metadata["name"],
            metadata["namespace"],
            body,
        )
        if done:
            self._bound.add(metadata["uid"])

    def _due(self, key: str, uid: str) -> bool:
        """Whether to try starting the pod now: not after a failure until its retry is due."""
        problem = self._problems.get(key)
        return problem is None or problem.uid != uid or time.monotonic() >= problem.retry_at

    def _start(self, key: str, pod: Json) -> None:
        uid = pod["metadata"]["uid"]
        try:
            container = container_of(pod)
        except objects.SpecError as e:  # the pod spec never changes: no retry
            self._problem(key, uid, podspec.CONFIG_ERROR, str(e), retry=float("inf"))
            return
        try:
            settings = self._settings
            spec = podspec.build(
                key,
                container,
                argv=podspec.command(container, settings.images, settings.python),
                env=self._env(pod, container),
                cwd=settings.state_dir,
            )
        except podspec.CannotStart as e:
            self._problem(key, uid, e.reason, e.message, retry=RETRY_SECONDS)
            return
        self._problems.pop(key, None)
        log.info("pod %s: starting %s", key, " ".join(spec.argv))
        self._runner.start(spec)
        self._running[key] = _Running(uid, container, now())

    def _problem(self, key: str, uid: str, reason: str, message: str, *, retry: float) -> None:
        known = self._problems.get(key)
        if known is None or (known.uid, known.reason, known.message) != (uid, reason, message):
            log.warning("pod %s cannot start: %s: %s", key, reason, message)
            since = now()
        else:
            since = known.since
        self._problems[key] = _Problem(uid, reason, message, time.monotonic() + retry, since)

    def _env(self, pod: Json, container: objects.Container) -> dict[str, str]:
        """The container's env, with PYTHONPATH reaching this wavegate's folder."""
        own = str(Path(__file__).resolve().parents[2])
        try:
            return podspec.environment(container, pod["metadata"]["namespace"], self._lookup,
                                       pythonpath=[own])
        except API_ERRORS as e:  # a ConfigMap or Secret could not be read: tried again later
            raise podspec.CannotStart(podspec.CONFIG_ERROR, _short(e)) from e

    def _lookup(self, kind: str, namespace: str, name: str) -> objects.Manifest | None:
        """A ConfigMap or Secret read through the API; None when it does not exist."""
        read = (
            self._core.read_namespaced_config_map
            if kind == "ConfigMap"
            else self._core.read_namespaced_secret
        )
        try:
            response = read(name, namespace, _request_timeout=TIMEOUT, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return objects.Manifest.from_dict(f"{kind}.{namespace}.{name}", _body(response))

    def _terminate(self, key: str, pod: Json) -> None:
        """Stop the pod's process; once it is gone, delete the pod for good."""
        metadata = pod["metadata"]
        running = self._running.get(key)
        if (running is not None and running.uid == metadata["uid"]
                and self._runner.status(key) is not None):  # its process has not ended yet
            self._runner.stop(key)
            self._stopping = True
            return
        if metadata["uid"] in self._deleted:
            return
        log.info("pod %s: deleting (grace period 0)", key)
        done = self._call(
            f"delete {metadata['namespace']}/{metadata['name']}",
            self._core.delete_namespaced_pod,
            metadata["name"],
            metadata["namespace"],
            grace_period_seconds=0,
            # In the body too: a DeleteOptions body makes the server ignore the query's grace
            # period. The uid precondition spares a new pod that reuses the name.
            body={"gracePeriodSeconds": 0, "preconditions": {"uid": metadata["uid"]}},
        )
        if done:
            self._deleted.add(metadata["uid"])

    def _stop_vanished(self, current: Mapping[str, Json]) -> None:
        """Stop processes whose pod is gone; forget what the Runner and the watch are done with."""
        statuses = self._runner.statuses()
        for key, running in list(self._running.items()):
            pod = current.get(key)
            if pod is None or pod["metadata"]["uid"] != running.uid:
                self._runner.stop(key)
            if key not in statuses:
                del self._running[key]
        uids = {pod["metadata"]["uid"] for pod in current.values()}
        bound = {p["metadata"]["uid"] for p in current.values() if p["spec"].get("nodeName")}
        self._bound &= uids - bound
        self._deleted &= uids
        for key in self._problems.keys() - current.keys():
            del self._problems[key]
        for key in self._reported.keys() - current.keys():
            del self._reported[key]

    # -- status and routing ----------------------------------------------------------------

    def _report(self, current: Mapping[str, Json]) -> None:
        statuses = self._runner.statuses()
        for key, pod in sorted(current.items()):
            metadata, uid = pod["metadata"], pod["metadata"]["uid"]
            if pod["spec"].get("nodeName") != self._settings.node or metadata.get(
                "deletionTimestamp"
            ):
                continue
            view = self._observe(key, pod, statuses.get(key))
            if view is None:
                continue
            body = status_patch(view)
            if self._reported.get(key) == (uid, body):
                continue
            done = self._call(
                f"status of {metadata['namespace']}/{metadata['name']}",
                self._core.patch_namespaced_pod_status,
                metadata["name"],
                metadata["namespace"],
                body,
                _content_type=MERGE_PATCH,
            )
            if done:
                self._reported[key] = (uid, body)

    def _observe(self, key: str, pod: Json, process: pods.PodStatus | None) -> ContainerView | None:
        """What the status of POD rests on now; None when there is nothing to say yet."""
        uid, first = pod["metadata"]["uid"], pod["spec"]["containers"][0]
        name, image = first["name"], first.get("image", "")
        running, problem = self._running.get(key), self._problems.get(key)
        if running is not None and running.uid == uid and process is not None:
            running.note(process)
            return ContainerView(
                name, image, running.started_at, process,
                run_started_at=running.run_started_at, ready_since=running.ready_since,
            )  # fmt: skip
        if problem is not None and problem.uid == uid:
            return ContainerView(
                name, image, "", None, (problem.reason, problem.message), ready_since=problem.since
            )
        return None

    def _route(self, current: Mapping[str, Json]) -> None:
        service, detail = ingress_service(self._services.snapshot())
        if service is None:
            self._ingress.set_backends([], detail=detail)
            return
        self._ingress.set_backends(pod_status.endpoints(service, self._backends(current)))

    def _backends(self, current: Mapping[str, Json]) -> Iterator[pod_status.Backend]:
        statuses = self._runner.statuses()
        for key, running in sorted(self._running.items(), key=lambda item: item[1].started_at):
            pod, process = current.get(key), statuses.get(key)
            if pod is None or process is None or pod["metadata"]["uid"] != running.uid:
                continue
            labels = pod["metadata"].get("labels") or {}
            yield pod_status.Backend(pod["metadata"]["namespace"], labels, running.container,
                                     process)

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """One API write; False (logged) when it failed and should be tried again."""
        try:
            method(*args, **kwargs, _request_timeout=TIMEOUT, _preload_content=False)
        except ApiException as e:
            if e.status in (404, 409):  # gone, or already done: nothing left to do
                return True
            log.warning("%s: %s", what, _short(e))
            return False
        except API_ERRORS as e:
            log.warning("%s: %s", what, _short(e))
            return False
        return True


def _body(response: Any) -> Json:
    """The JSON of an answer read with `_preload_content=False`.

    Raw JSON, not the client's models: the helpers here read manifests as dicts, and the
    models of client v37 are pydantic, which re-validates (and can refuse) what the server sent.
    """
    body: Json = json.loads(response.data)
    return body


def _short(error: BaseException, limit: int = 300) -> str:
    """An error cut short: API bodies can be long, and a Secret's body must never be logged."""
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return str(error)[:limit]


# --- the node ----------------------------------------------------------------------------


def node_body(name: str) -> Json:
    """A Node that reports Ready, so nothing that looks at nodes complains about this one."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "wavegate node agent is posting ready status",
                    "lastHeartbeatTime": now(),
                    "lastTransitionTime": now(),
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "capacity": {"pods": "110"},
            "allocatable": {"pods": "110"},
        },
    }


def register(core: client.CoreV1Api, name: str, deadline: float) -> None:
    """Create the Node, or mark the one a previous agent left Ready again.

    Retried until DEADLINE: the agent may start while its API server is still coming up.
    """
    while True:
        try:
            _create_or_refresh_node(core, node_body(name))
            return
        except API_ERRORS as e:
            if time.monotonic() > deadline:
                raise
            log.info("node %s: API server not ready (%s); retrying", name, _short(e))
            time.sleep(RETRY_SECONDS)


def _create_or_refresh_node(core: client.CoreV1Api, body: Json) -> None:
    try:
        # The client coerces a dict into its V1Node model; its annotations say model only.
        core.create_node(body, _request_timeout=TIMEOUT, _preload_content=False)  # type: ignore[arg-type]
    except ApiException as e:
        if e.status != 409:
            raise
        core.patch_node_status(
            body["metadata"]["name"], {"status": body["status"]}, _content_type=MERGE_PATCH,
            _request_timeout=TIMEOUT, _preload_content=False,
        )  # fmt: skip


# --- the process -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retries are logged by us
    try:
        images = _images(args.images_json)
    except ValueError as e:
        log.error("--images-json: %s", e)
        return 1
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    node = args.node or f"node-{args.context}"
    settings = Settings(node, images, args.python, state_dir)
    return _serve(args.kubeconfig, args.context, settings, args.ingress_port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wavegate.sandbox.nodeagent")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--context", required=True, help="an admin context of the cluster")
    parser.add_argument(
        "--images-json",
        required=True,
        help='image name -> argv, e.g. {"app": ["python", "-m", "app"]}',
    )
    parser.add_argument("--ingress-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node", help="the Node's name (default: node-CONTEXT)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="what `python` in an argv means (default: this interpreter)",
    )
    return parser


def _images(text: str) -> dict[str, tuple[str, ...]]:
    raw = json.loads(text)
    if not isinstance(raw, dict) or not all(
        isinstance(argv, list) and all(isinstance(a, str) for a in argv) for argv in raw.values()
    ):
        raise ValueError("expected a JSON object of image name -> list of strings")
    return {str(name): tuple(argv) for name, argv in raw.items()}


def _serve(kubeconfig: Path, context: str, settings: Settings, ingress_port: int) -> int:
    stop, wake = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        ingress = Ingress(ingress_port)
    except OSError as e:
        log.error("cannot listen on 127.0.0.1:%d for the ingress: %s", ingress_port, e)
        return 1
    try:
        agent = _start(kubeconfig, context, settings, ingress, stop, wake)
    except (*API_ERRORS, config.ConfigException) as e:
        log.error("cannot start: %s", _short(e))
        ingress.close()
        return 1
    state = settings.state_dir / "agent.json"
    try:
        filestore.write_json(state, {"pid": os.getpid(), "ingress": ingress.url,
                                     "node": settings.node})
        log.info("node %s: agent %d up, ingress %s", settings.node, os.getpid(), ingress.url)
        agent.run(stop, wake)
    finally:
        stop.set()
        agent.close()
        ingress.close()
        filestore.remove(state)
        log.info("node %s: agent stopped", settings.node)
    return 0


def _start(
    kubeconfig: Path,
    context: str,
    settings: Settings,
    ingress: Ingress,
    stop: threading.Event,
    wake: threading.Event,
) -> Agent:
    """Register the node, start the mirrors and wait for their first lists; the Agent."""

    def api() -> client.CoreV1Api:  # one client per thread: a watch holds its connection
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(kubeconfig), context=context
        )
        return client.CoreV1Api(api_client)

    core = api()
    register(core, settings.node, time.monotonic() + REGISTER_SECONDS)
    mirrors = [
        Mirror("Pod", api().list_pod_for_all_namespaces, wake.set),
        Mirror("Service", api().list_service_for_all_namespaces, wake.set),
    ]
    for mirror in mirrors:
        name = f"mirror-{mirror.kind.lower()}"
        threading.Thread(target=mirror.run, args=(stop,), name=name, daemon=True).start()
    deadline = time.monotonic() + REGISTER_SECONDS
    for mirror in mirrors:
        if not mirror.synced.wait(max(0.0, deadline - time.monotonic())):
            raise urllib3.exceptions.TimeoutError(f"could not list {mirror.kind}s")
    ingress.start()
    runner = pods.Runner(
        settings.state_dir / "pods", is_drained=ingress.is_drained, on_change=wake.set
    )
    return Agent(
        core,
        settings,
        runner=runner,
        ingress=ingress,
        pods_mirror=mirrors[0],
        services_mirror=mirrors[1],
    )


if __name__ == "__main__":
    sys.exit(main())
