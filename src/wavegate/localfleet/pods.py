"""Pods as local processes, each on its own loopback address: the part of a kubelet we need.

Owns, for any caller that decides which pods should exist (the local fleet agent, and later the
Kubernetes node agent of the kube sandbox):
- `AddressPool`: a 127.0.x.y address per pod (never 127.0.0.1), claimed machine-wide for as
  long as the pod has it, and bindable on the pod's port right now;
- `Runner`: spawning a pod (`argv`, the caller's env plus `HOST` and `PORT`, stdout and stderr
  to `LOG_DIR/<pod>.log`, its own process group, SIGKILL when the runner's thread dies), the
  readiness probe (HTTP GET answering 2xx, or a TCP connect), restarts with backoff like
  `restartPolicy: Always`, and termination (drain, SIGTERM, SIGKILL after the grace period).

Must not know about Deployments, templates, files other than its logs, or HTTP routing; it only
runs what it is told to run and reports `PodStatus` snapshots.

Threads: `start`, `stop` and `tick` are called from one long-lived thread (PR_SET_PDEATHSIG
fires when the *thread* that forked a pod ends, not the process). Probes run on a small pool;
`statuses()` may be called from anywhere. Every piece of state is behind one lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AddressPool",
    "Backoff",
    "HttpProbe",
    "PodSpec",
    "PodStatus",
    "Probe",
    "Runner",
    "TcpProbe",
    "probe_once",
]

log = logging.getLogger(__name__)

EXEC_FAILED = 127  # what a shell reports for a command it cannot run
ERROR_TAIL_CHARS = 500


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"


@dataclass(frozen=True)
class TcpProbe:
    port: int


Probe = HttpProbe | TcpProbe


def readiness_probe(port: int, path: str | None) -> Probe:
    """A readinessProbe as the runner runs it: httpGet when it has a path, else a TCP connect."""
    return TcpProbe(port) if path is None else HttpProbe(port, path)


@dataclass(frozen=True)
class PodSpec:
    """What to run. `env` is the whole environment of the process but HOST and PORT."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    port: int
    readiness: Probe | None = None  # None: ready once `port` accepts a TCP connection
    failure_threshold: int = 3  # consecutive failed probes before a ready pod is unready
    cwd: Path | None = None


@dataclass(frozen=True)
class PodStatus:
    name: str
    host: str
    port: int
    pid: int | None  # None between a crash and its restart
    ready: bool
    restarts: int
    last_exit_code: int | None  # 128+N for a signal N, like the kubelet
    last_error: str  # the end of the log of the run that exited last
    terminating: bool

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class Backoff:
    """Restart delays: 0.5 s doubling to 5 s; a run of `reset_after` s forgets earlier crashes."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 5.0
    reset_after: float = 10.0

    def delay(self, crashes: int) -> float:
        return min(self.cap, self.initial * self.factor ** max(0, crashes - 1))


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like the servers we start: a TIME_WAIT left by a previous run is no
        # obstacle to them, a listening socket is.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _claim(host: str) -> socket.socket | None:
    """A machine-wide claim on HOST: a Unix socket bound to an abstract name made of it (Linux),
    which the kernel lets one socket hold at a time and frees when it is closed or its process
    dies; None when another agent holds it."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0wavegate-pod-address-{host}")
    except OSError:
        claim.close()
        return None
    return claim


class AddressPool:
    """Loopback addresses for pods: 127.0.x.y with x and y in 1..254, chosen at random.

    Several agents on one machine (six clusters, a sandbox and a local fleet) each have a
    pool. A bind test alone would let two of them pick the same free address in the moment
    before either pod binds it, and the second pod would crash on "Address already in use":
    so an address is first claimed machine-wide (`_claim`) and held until it is released."""

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        attempts: int = 256,
        can_bind: Callable[[str, int], bool] = _can_bind,
    ) -> None:
        self._rng = rng or random.Random()
        self._attempts = attempts
        self._can_bind = can_bind
        self._claims: dict[str, socket.socket] = {}  # by host: the addresses this pool holds
        self._lock = threading.Lock()

    def acquire(self, port: int) -> str:
        with self._lock:
            for _ in range(self._attempts):
                host = f"127.0.{self._rng.randint(1, 254)}.{self._rng.randint(1, 254)}"
                if host in self._claims:
                    continue
                claim = _claim(host)
                if claim is None:
                    continue  # another agent's
                if not self._can_bind(host, port):
                    claim.close()  # held outside every pool (a leftover pod, another program)
                    continue
                self._claims[host] = claim
                return host
        raise OSError(f"no free loopback address for port {port} after {self._attempts} tries")

    def still_free(self, host: str, port: int) -> bool:
        return self._can_bind(host, port)

    def release(self, host: str) -> None:
        with self._lock:
            claim = self._claims.pop(host, None)
        if claim is not None:
            claim.close()


def probe_once(host: str, probe: Probe, timeout: float) -> bool:
    """One readiness check: True for an HTTP 2xx, or a TCP connection accepted."""
    try:
        if isinstance(probe, TcpProbe):
            with socket.create_connection((host, probe.port), timeout=timeout):
                return True
        conn = http.client.HTTPConnection(host, probe.port, timeout=timeout)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "wavegate-localfleet-probe"})
            response = conn.getresponse()
            response.read()
            return 200 <= response.status < 300
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


# --- process plumbing --------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
try:  # loaded here, in the parent: the child between fork and exec must not load libraries
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: pods may outlive a killed agent there
    _prctl = None


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _tail(path: Path, offset: int, limit: int = ERROR_TAIL_CHARS) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - 8 * limit))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.strip().splitlines()
    kept: list[str] = []
    for line in reversed(lines):
        if kept and sum(len(k) + 1 for k in kept) + len(line) > limit:
            break
        kept.insert(0, line)
    return "\n".join(kept)[-limit:]


# --- the runner --------------------------------------------------------------------------


@dataclass
class _Pod:
    spec: PodSpec
    host: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    run: int = 0  # increments per spawn: a probe answer from an earlier run is stale
    started_at: float = 0.0
    log_offset: int = 0
    restarts: int = 0
    crashes: int = 0  # consecutive short runs, for the backoff
    last_exit_code: int | None = None
    last_error: str = ""
    restart_at: float | None = None
    ready: bool = False
    probe_failures: int = 0
    probing: bool = False
    next_probe: float = 0.0
    stop_requested: float | None = None
    term_sent: float | None = None
    kill_sent: bool = False

    def status(self) -> PodStatus:
        return PodStatus(
            name=self.spec.name,
            host=self.host,
            port=self.spec.port,
            pid=self.proc.pid if self.proc is not None else None,
            ready=self.ready,
            restarts=self.restarts,
            last_exit_code=self.last_exit_code,
            last_error=self.last_error,
            terminating=self.stop_requested is not None,
        )


class Runner:
    """Runs pods and keeps them running. Call `tick` every ~100 ms from the owning thread."""

    def __init__(
        self,
        log_dir: Path,
        *,
        addresses: AddressPool | None = None,
        backoff: Backoff = Backoff(),
        probe_period: float = 0.1,
        probe_timeout: float = 1.0,
        grace: float = 2.0,
        drain_timeout: float = 1.0,
        is_drained: Callable[[str], bool] = lambda address: True,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`is_drained(address)` says no request is in flight to a stopping pod (an ingress
        answers it); SIGTERM waits for it up to `drain_timeout`. `on_change` is called, from
        any thread, when a pod's readiness changes, so the owner can act without polling."""
        self._log_dir = log_dir
        self._addresses = addresses or AddressPool()
        self._backoff = backoff
        self._probe_period = probe_period
        self._probe_timeout = probe_timeout
        self._grace = grace
        self._drain_timeout = drain_timeout
        self._is_drained = is_drained
        self._on_change = on_change
        self._clock = clock
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.RLock()
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")

    # -- the API ---------------------------------------------------------------------------

    def start(self, spec: PodSpec) -> PodStatus:
        """Start a pod now; a name already running is an error."""
        with self._lock:
            if spec.name in self._pods:
                raise ValueError(f"pod {spec.name} exists")
            self._log_dir.mkdir(parents=True, exist_ok=True)
            pod = _Pod(spec, host="", log=self._log_dir / f"{spec.name}.log")
            self._pods[spec.name] = pod
            self._spawn(pod, self._clock())
            return pod.status()

    def stop(self, name: str) -> None:
        """Begin terminating a pod: unready at once, SIGTERM once drained, SIGKILL after grace."""
        with self._lock:
            pod = self._pods.get(name)
            if pod is None or pod.stop_requested is not None:
                return
            pod.stop_requested = self._clock()
            pod.ready = False
            if pod.proc is None:
                self._remove(pod)

    def status(self, name: str) -> PodStatus | None:
        with self._lock:
            pod = self._pods.get(name)
            return pod.status() if pod is not None else None

    def statuses(self) -> dict[str, PodStatus]:
        with self._lock:
            return {name: pod.status() for name, pod in self._pods.items()}

    def tick(self) -> None:
        """Notice exits, restart crashed pods whose backoff ran out, probe, advance stops."""
        now = self._clock()
        with self._lock:
            for pod in list(self._pods.values()):
                self._tick_pod(pod, now)

    def close(self, timeout: float | None = None) -> None:
        """Stop every pod and wait until they are gone: each drains, gets SIGTERM, and SIGKILL
        after the grace period; whatever still runs after `timeout` (default: drain timeout
        plus grace) is killed. Probing ends."""
        budget = self._drain_timeout + self._grace if timeout is None else timeout
        deadline = self._clock() + budget
        with self._lock:
            for name in list(self._pods):
                self.stop(name)
        while self._pods and self._clock() < deadline:
            self.tick()
            time.sleep(0.02)
        with self._lock:
            for pod in list(self._pods.values()):
                self._kill_now(pod)
        self._probes.shutdown(wait=False, cancel_futures=True)

    # -- per pod ---------------------------------------------------------------------------

    def _tick_pod(self, pod: _Pod, now: float) -> None:
        if pod.proc is not None and pod.proc.poll() is not None:
            self._exited(pod, pod.proc, now)
        if pod.stop_requested is not None:
            self._advance_stop(pod, now)
        elif pod.proc is None:
            if pod.restart_at is not None and now >= pod.restart_at:
                pod.restarts += 1
                self._spawn(pod, now)
        elif not pod.probing and now >= pod.next_probe:
            self._submit_probe(pod)

    def _spawn(self, pod: _Pod, now: float) -> None:
        pod.restart_at = None
        try:
            self._place(pod)
            pod.proc = self._popen(pod)
        except OSError as e:
            pod.proc = None
            self._crashed(pod, EXEC_FAILED, f"cannot start {pod.spec.argv[0]!r}: {e}", now)
            return
        pod.run += 1
        pod.started_at = now
        pod.ready = False
        pod.probe_failures = 0
        pod.probing = False  # a probe still out for the previous run is ignored by `run`
        pod.next_probe = now  # first probe on the next tick: fast pods are ready fast
        log.info(
            "pod %s started: pid %d on %s:%d", pod.spec.name, pod.proc.pid, pod.host, pod.spec.port
        )

    def _place(self, pod: _Pod) -> None:
        if pod.host and self._addresses.still_free(pod.host, pod.spec.port):
            return
        if pod.host:
            self._addresses.release(pod.host)
            pod.host = ""
        pod.host = self._addresses.acquire(pod.spec.port)

    def _popen(self, pod: _Pod) -> subprocess.Popen[bytes]:
        spec = pod.spec
        env = {**spec.env, "HOST": pod.host, "PORT": str(spec.port)}
        with pod.log.open("ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            out.write(f"--- {stamp} run {pod.restarts + 1}: {' '.join(spec.argv)}\n".encode())
            out.flush()
            pod.log_offset = out.tell()  # a crash message shows this run's output only
            return subprocess.Popen(
                spec.argv,
                env=env,
                cwd=spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,  # a pod's children go with it
                preexec_fn=_die_with_parent(os.getpid()),
            )

    def _exited(self, pod: _Pod, proc: subprocess.Popen[bytes], now: float) -> None:
        code = _exit_code(proc.returncode)
        _signal_group(proc.pid, signal.SIGKILL)  # leftovers of the pod's process group
        pod.proc = None
        if pod.stop_requested is not None:
            log.info("pod %s stopped (exit %d)", pod.spec.name, code)
            return
        self._crashed(pod, code, _tail(pod.log, pod.log_offset), now)

    def _crashed(self, pod: _Pod, code: int, error: str, now: float) -> None:
        ran_long = pod.run > 0 and now - pod.started_at >= self._backoff.reset_after
        pod.crashes = 1 if ran_long else pod.crashes + 1
        pod.last_exit_code = code
        pod.last_error = error
        pod.restart_at = now + self._backoff.delay(pod.crashes)
        log.warning(
            "pod %s exited with code %d; restart in %.1fs",
            pod.spec.name,
            code,
            pod.restart_at - now,
        )
        self._set_ready(pod, False)

    def _advance_stop(self, pod: _Pod, now: float) -> None:
        proc = pod.proc
        if proc is None:
            self._remove(pod)
            return
        assert pod.stop_requested is not None
        if pod.term_sent is None:
            drained = self._is_drained(f"{pod.host}:{pod.spec.port}")
            if drained or now - pod.stop_requested >= self._drain_timeout:
                _signal_group(proc.pid, signal.SIGTERM)
                pod.term_sent = now
        elif not pod.kill_sent and now - pod.term_sent >= self._grace:
            log.warning("pod %s ignored SIGTERM for %.1fs: SIGKILL", pod.spec.name, self._grace)
            _signal_group(proc.pid, signal.SIGKILL)
            pod.kill_sent = True

    def _kill_now(self, pod: _Pod) -> None:
        if pod.proc is not None:
            _signal_group(pod.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                pod.proc.wait(timeout=1.0)
        self._remove(pod)

    def _remove(self, pod: _Pod) -> None:
        self._pods.pop(pod.spec.name, None)
        if pod.host:
            self._addresses.release(pod.host)

    # -- probes ----------------------------------------------------------------------------

    def _submit_probe(self, pod: _Pod) -> None:
        probe = pod.spec.readiness or TcpProbe(pod.spec.port)
        pod.probing = True
        name, run, host = pod.spec.name, pod.run, pod.host
        try:
            self._probes.submit(self._probe, name, run, host, probe)
        except RuntimeError:  # the pool is shut down: we are closing
            pod.probing = False

    def _probe(self, name: str, run: int, host: str, probe: Probe) -> None:
        ok = probe_once(host, probe, self._probe_timeout)
        with self._lock:
            pod = self._pods.get(name)
            if pod is None or pod.run != run:
                return
            pod.probing = False
            pod.next_probe = self._clock() + self._probe_period
            if pod.proc is None or pod.stop_requested is not None:
                return
            pod.probe_failures = 0 if ok else pod.probe_failures + 1
            if ok:
                self._set_ready(pod, True)
            elif pod.probe_failures >= pod.spec.failure_threshold:
                self._set_ready(pod, False)

    def _set_ready(self, pod: _Pod, ready: bool) -> None:
        if pod.ready != ready:
            pod.ready = ready
            self._on_change()
