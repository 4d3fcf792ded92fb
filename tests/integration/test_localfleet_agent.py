"""The local fleet agent with real processes: library_app pods behind a real ingress on loopback.

What a release engineer would notice: a rollout that finishes, an update under traffic that
never fails a request, a crashing release that leaves the old pods serving, a rollback, and no
process left behind by `stop`, even when the agent itself was killed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.waits import eventually
from wavegate import filestore
from wavegate.localfleet import pods, supervisor
from wavegate.localfleet.ingress import Ingress

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"
IMAGES = {"library-app": ["python", "-m", "library_app", "--version", "${tag}"]}
DEPLOYMENT = "Deployment.library.library"


@dataclass
class Cluster:
    root: Path
    info: supervisor.AgentInfo
    pids: set[int] = field(default_factory=set)  # every process seen: none may survive `stop`

    def write(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        key = f"{manifest['kind']}.{meta['namespace']}.{meta['name']}"
        filestore.write_json(self.root / "objects" / f"{key}.json", manifest)

    def delete(self, key: str) -> None:
        (self.root / "objects" / f"{key}.json").unlink()

    def status(self, key: str = DEPLOYMENT) -> dict[str, Any] | None:
        body: dict[str, Any] | None = filestore.read_json(self.root / "status" / f"{key}.json",
                                                             missing_ok=True)
        for pod in (body or {}).get("pods", []):
            if pid_of(pod):
                self.pids.add(pid_of(pod))
        return body

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status()
            if last is not None and predicate(last):
                return last
            time.sleep(0.02)
        raise AssertionError(f"timed out; last status:\n{json.dumps(last, indent=2)}")

    def wait_progressing(
        self, generation: int, reason: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        def reached(status: dict[str, Any]) -> bool:
            condition = status["conditions"][0]
            return bool(
                status["observedGeneration"] == generation and condition["reason"] == reason
            )

        return self.wait(reached, timeout)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.info.ingress + path, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def pid_of(pod: dict[str, Any]) -> int:
    """The process a pod runs as (`containerID: process://PID`); 0 when it runs none."""
    container_id = pod["status"]["containerStatuses"][0].get("containerID", "")
    return int(container_id.removeprefix("process://") or 0)


def template_hash_of(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"]["pod-template-hash"])


def deployment(version: str, generation: int, **env: str) -> dict[str, Any]:
    container_env: list[dict[str, Any]] = [
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "library", "key": "greeting"}},
        },
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "library", "key": "password"}}},
    ]
    container_env += [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "library", "namespace": "library", "generation": generation},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "library"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "library"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": f"ghcr.io/example/library-app:{version}",
                            "env": container_env,
                            "envFrom": [{"configMapRef": {"name": "library"}, "prefix": "CFG_"}],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
        },
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "library",
        "namespace": "library",
        "annotations": {"wavegate.dev/ingress": "true"},
    },
    "spec": {"selector": {"app": "library"}, "ports": [{"port": 80, "targetPort": "http"}]},
}
CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "library", "namespace": "library"},
    "data": {"greeting": "hello"},
}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "library", "namespace": "library"},
    "data": {"password": base64.b64encode(b"s3cret").decode()},
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    root = tmp_path / "prod-0"
    info = supervisor.start(
        root, cluster="prod-0", images=IMAGES, python=sys.executable, pythonpath=[str(SRC)]
    )
    made = Cluster(root, info, {info.pid})
    try:
        yield made
    finally:
        supervisor.stop(root)
        assert_gone(made.pids)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def assert_gone(pids: set[int], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in pids if alive(p)]


class Traffic:
    """Requests through the ingress every 20 ms, recording each answer's status and version."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded, whatever happens to the test
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = self.cluster.get("/version")
                self.answers.append((status, str(body.get("version", body))))
            except OSError as e:
                self.answers.append((0, repr(e)))
            self._stop.wait(0.02)

    def failures(self) -> list[tuple[int, str]]:
        return [a for a in self.answers if a[0] != 200]


def test_rollout_update_crash_and_rollback_through_the_ingress(cluster: Cluster) -> None:
    for manifest in (CONFIG_MAP, SECRET, SERVICE):
        cluster.write(manifest)
    assert cluster.get("/version")[0] == 503  # no Deployment yet: nothing ready

    started = time.monotonic()
    cluster.write(deployment("1.0.0", 1))
    status = cluster.wait_progressing(1, "NewReplicaSetAvailable")
    first_rollout = time.monotonic() - started
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (3, 3, 3)
    assert len({p["status"]["podIP"] for p in status["pods"]}) == 3
    assert all(p["status"]["podIP"] != "127.0.0.1" for p in status["pods"])
    assert cluster.get("/version") == (200, {"version": "1.0.0"})
    assert pod_env(pid_of(status["pods"][0])) == {
        "GREETING": "hello",
        "PASSWORD": "s3cret",
        "CFG_greeting": "hello",
        "HOST": status["pods"][0]["status"]["podIP"],
        "PORT": "8080",
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(SRC),
    }

    with Traffic(cluster) as traffic:
        started = time.monotonic()
        cluster.write(deployment("2.0.0", 2))
        status = cluster.wait_progressing(2, "NewReplicaSetAvailable")
        update = time.monotonic() - started
        time.sleep(0.2)
    assert traffic.failures() == []
    versions = [version for _, version in traffic.answers]
    assert versions[0] == "1.0.0" and versions[-1] == "2.0.0"
    assert len({template_hash_of(p) for p in status["pods"]}) == 1

    with Traffic(cluster) as traffic:
        cluster.write(deployment("3.0.0", 3, LIBRARY_FAIL="crash"))
        status = cluster.wait_progressing(3, "PodCrashed")
        time.sleep(0.3)
    condition = status["conditions"][0]
    assert condition["status"] == "False"
    assert "exited with code 1" in condition["message"]
    assert "LIBRARY_FAIL=crash" in condition["message"]
    assert len(condition["message"]) <= 600
    containers = [p["status"]["containerStatuses"][0] for p in status["pods"]]
    crashed = [c for c in containers if c["lastState"]]  # the new pod; the old ones run on
    assert crashed and all(c["lastState"]["terminated"]["exitCode"] == 1 for c in crashed)
    assert "LIBRARY_FAIL=crash" in crashed[0]["lastState"]["terminated"]["message"]
    assert traffic.failures() == []
    assert {version for _, version in traffic.answers} == {"2.0.0"}  # the old pods kept serving

    with Traffic(cluster) as traffic:
        started = time.monotonic()
        cluster.write(deployment("1.0.0", 4))
        status = cluster.wait_progressing(4, "NewReplicaSetAvailable")
        rollback = time.monotonic() - started
        time.sleep(0.2)
    assert traffic.failures() == []
    assert traffic.answers[-1] == (200, "1.0.0")
    assert (status["replicas"], status["availableReplicas"]) == (3, 3)

    print(
        f"\n3-replica timings: first rollout {first_rollout:.2f}s, update under traffic"
        f" {update:.2f}s, rollback {rollback:.2f}s"
    )
    assert max(first_rollout, update, rollback) < 10


def pod_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if entry)


def test_kinds_it_does_not_run_are_reported_and_pruning_stops_pods(cluster: Cluster) -> None:
    cluster.write(CONFIG_MAP)
    cluster.write(SECRET)
    cluster.write(deployment("1.0.0", 1))
    plain_service = json.loads(json.dumps(SERVICE))
    del plain_service["metadata"]["annotations"]
    cluster.write(plain_service)
    ingress = {"kind": "Ingress", "metadata": {"name": "web", "namespace": "library"}}
    cluster.write(ingress)
    status = cluster.wait_progressing(1, "NewReplicaSetAvailable")
    assert cluster.get("/version") == (200, {"version": "1.0.0"})  # via the only Service
    unsupported = cluster.status("Ingress.library.web")
    assert unsupported is not None and unsupported["supported"] is False

    pids = {pid_of(p) for p in status["pods"]}
    cluster.delete(DEPLOYMENT)
    cluster.delete("Ingress.library.web")
    deadline = time.monotonic() + 10
    while cluster.status() is not None or cluster.status("Ingress.library.web") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert_gone(pids)


def test_unmapped_image_and_missing_config_map_say_why(cluster: Cluster) -> None:
    manifest = deployment("1.0.0", 1)
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.25"
    cluster.write(manifest)
    status = cluster.wait_progressing(1, "ErrImageNeverPull")
    assert "nginx:1.25" in status["conditions"][0]["message"]
    (pending,) = status["pods"]  # Pending, nothing runs: its container says why
    assert pending["status"]["phase"] == "Pending" and pid_of(pending) == 0
    waiting = pending["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImageNeverPull" and "nginx:1.25" in waiting["message"]

    cluster.write(deployment("1.0.0", 2))  # the ConfigMap and Secret are not there
    status = cluster.wait_progressing(2, "CreateContainerConfigError")
    assert "ConfigMap library/library not found" in status["conditions"][0]["message"]
    cluster.write(CONFIG_MAP)
    cluster.write(SECRET)
    cluster.wait_progressing(2, "NewReplicaSetAvailable")


def test_a_restarted_agent_brings_the_pods_back_and_a_killed_one_takes_them_down(
    cluster: Cluster,
) -> None:
    for manifest in (CONFIG_MAP, SECRET, SERVICE, deployment("2.0.0", 1)):
        cluster.write(manifest)
    before = cluster.wait_progressing(1, "NewReplicaSetAvailable")

    supervisor.stop(cluster.root)
    assert supervisor.is_running(cluster.root) is None
    assert_gone({pid_of(p) for p in before["pods"]} | {cluster.info.pid})
    assert cluster.wait_progressing(1, "AgentStopped")["pods"] == []

    cluster.info = supervisor.start(
        cluster.root, cluster="prod-0", images=IMAGES, python=sys.executable, pythonpath=[str(SRC)]
    )
    cluster.pids.add(cluster.info.pid)
    after = cluster.wait_progressing(1, "NewReplicaSetAvailable")
    assert cluster.get("/version") == (200, {"version": "2.0.0"})

    # SIGKILL: the agent cannot clean up; PR_SET_PDEATHSIG takes its pods down with it.
    os.kill(cluster.info.pid, signal.SIGKILL)
    assert_gone({pid_of(p) for p in after["pods"]})
    assert supervisor.is_running(cluster.root) is None
    supervisor.stop(cluster.root)  # cleans the stale state file
    assert not (cluster.root / "agent.state.json").exists()


def test_start_is_idempotent_and_refuses_another_config(cluster: Cluster) -> None:
    again = supervisor.start(
        cluster.root, cluster="prod-0", images=IMAGES, python=sys.executable, pythonpath=[str(SRC)]
    )
    assert again == cluster.info
    with pytest.raises(supervisor.AgentError, match="another configuration"):
        supervisor.start(cluster.root, cluster="prod-0", images={}, python=sys.executable)


# --- the pod runner on its own, with a stand-in workload ---------------------------------

STUBBORN = """
import signal, socket, os, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((os.environ["HOST"], int(os.environ["PORT"]))); s.listen()
time.sleep(60)
"""


def run_until(runner: pods.Runner, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, runner.statuses()
        runner.tick()
        time.sleep(0.02)


def test_runner_restarts_with_backoff_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    runner = pods.Runner(tmp_path, backoff=pods.Backoff(initial=0.1, cap=0.2), grace=0.5)
    try:
        crash = pods.PodSpec(
            "crasher",
            (sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"),
            {},
            port=9000,
        )
        runner.start(crash)
        run_until(runner, lambda: (runner.status("crasher") or crash_stub).restarts >= 2)
        crashed = runner.status("crasher")
        assert crashed is not None and crashed.last_exit_code == 3 and "boom" in crashed.last_error

        stubborn = runner.start(
            pods.PodSpec("stubborn", (sys.executable, "-c", STUBBORN), {}, 9000)
        )
        run_until(runner, lambda: bool((runner.status("stubborn") or crash_stub).ready))
        started = time.monotonic()
        runner.stop("stubborn")
        run_until(runner, lambda: runner.status("stubborn") is None)
        assert 0.5 <= time.monotonic() - started < 3
        assert stubborn.pid is not None and not alive(stubborn.pid)
    finally:
        runner.close()
    assert runner.statuses() == {}


crash_stub = pods.PodStatus("", "", 0, None, False, 0, None, "", False)


# --- the ingress on its own, in front of in-process backends -------------------------------


class Echo(BaseHTTPRequestHandler):
    """Answers with what it got: method, path, headers, body, and which backend it is."""

    slow_arrived: ClassVar[threading.Event] = threading.Event()  # a /slow request is here...
    slow_may_answer: ClassVar[threading.Event] = threading.Event()  # ...and held until this

    def _echo(self) -> None:
        backend = str(self.connection.getsockname()[0])
        if self.path.startswith("/slow"):
            Echo.slow_arrived.set()
            Echo.slow_may_answer.wait(timeout=10)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "backend": backend,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(418 if self.path.startswith("/teapot") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Backend", backend)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[list[str]]:
    servers = [ThreadingHTTPServer((f"127.0.77.{i}", 0), Echo) for i in (1, 2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [f"{s.server_address[0]!s}:{s.server_address[1]}" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ingress() -> Iterator[Ingress]:
    proxy = Ingress()
    proxy.start()
    yield proxy
    proxy.close()


def call(
    proxy: Ingress, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(proxy.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_ingress_forwards_requests_and_answers_as_they_are(
    ingress: Ingress, backends: list[str]
) -> None:
    ingress.set_backends(backends[:1])
    status, headers, echo = call(
        ingress, "POST", "/teapot?x=1", b'{"a": 1}', **{"X-Custom": "yes", "Keep-Alive": "300"}
    )
    assert status == 418  # the pod's status, not the proxy's opinion of it
    assert headers["X-Backend"] == "127.0.77.1"
    assert (echo["method"], echo["path"], echo["body"]) == ("POST", "/teapot?x=1", '{"a": 1}')
    assert echo["headers"]["x-custom"] == "yes"
    assert "keep-alive" not in echo["headers"]  # hop-by-hop: not forwarded
    assert echo["headers"]["host"] == ingress.url.removeprefix("http://")


def test_ingress_round_robins_and_skips_a_backend_that_refuses(
    ingress: Ingress, backends: list[str]
) -> None:
    ingress.set_backends(backends)
    seen = {call(ingress, "GET", "/")[2]["backend"] for _ in range(4)}
    assert seen == {"127.0.77.1", "127.0.77.2"}

    ingress.set_backends(["127.0.77.9:1", backends[1]])  # nothing listens on the first
    assert all(call(ingress, "GET", "/")[0] == 200 for _ in range(4))
    ingress.set_backends(["127.0.77.9:1"])
    status, _, body = call(ingress, "GET", "/")
    assert status == 502 and body["error"] == "bad gateway"
    ingress.set_backends([])
    assert call(ingress, "GET", "/")[0:3:2] == (503, {"error": "no ready endpoints"})


def test_ingress_counts_requests_in_flight_so_a_pod_can_drain(
    ingress: Ingress, backends: list[str]
) -> None:
    Echo.slow_arrived.clear()
    Echo.slow_may_answer.clear()
    ingress.set_backends(backends[:1])
    slow = threading.Thread(target=call, args=(ingress, "GET", "/slow"))
    slow.start()
    assert Echo.slow_arrived.wait(timeout=10)
    ingress.set_backends(backends[1:])  # the pod is stopping: no new requests...
    assert not ingress.is_drained(backends[0])  # ...but one is still on its way
    Echo.slow_may_answer.set()
    slow.join(timeout=10)
    # The ingress lets go of the pod a moment after the last byte reaches the client.
    eventually(lambda: ingress.is_drained(backends[0]) or None, timeout=2, every=0.01)
