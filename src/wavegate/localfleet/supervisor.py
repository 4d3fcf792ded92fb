"""Starting, finding and stopping the agent of a local cluster from another process.

Owns `start` (write agent.json, spawn `python -m wavegate.localfleet.agent CLUSTER_DIR`
detached in its own session, wait for its agent.state.json), `is_running` (the state file's pid
is alive and is that agent for that folder) and `stop` (SIGTERM, SIGKILL after a timeout, and
SIGKILL for any pod process a killed agent may have left, found through the status files).

Must not reconcile anything or read objects: what runs is up to the agent and objects/.
Every function is safe to call again: `start` on a running agent with the same config returns
it, `stop` on a stopped one does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wavegate import filestore
from wavegate.localfleet.config import AgentConfig, ConfigError, Layout

__all__ = ["AgentError", "AgentInfo", "is_running", "start", "stop"]

AGENT_MODULE = "wavegate.localfleet.agent"
_POLL_SECONDS = 0.02
# Agents this process spawned: only these are reaped here (waitpid on any other pid could
# steal the exit status of a child some other part of the process waits for).
_spawned: set[int] = set()


class AgentError(RuntimeError):
    """An agent could not be started; the message says why (with the end of its output)."""


@dataclass(frozen=True)
class AgentInfo:
    pid: int
    ingress: str  # http://127.0.0.1:PORT
    started_at: str = ""


def start(
    cluster_dir: Path,
    *,
    cluster: str,
    images: Mapping[str, Sequence[str]],
    python: str,
    ingress_port: int = 0,
    pythonpath: Sequence[str] | None = None,
    timeout: float = 10.0,
) -> AgentInfo:
    """Start the agent of `cluster_dir` in the background and wait until it serves.

    `pythonpath` (PYTHONPATH for pods) defaults to the folder this `wavegate` was imported
    from, so a workload installed or checked out beside it (`library_app` in `src/`) imports
    in pods as it does here; pass `[]` for none. A running agent with the same configuration
    is returned as it is; one with another configuration is an error (stop it first: its pods
    would go down with it).
    """
    layout = Layout(Path(cluster_dir).resolve())
    config = AgentConfig.build(
        cluster=cluster,
        images=images,
        python=python,
        ingress_port=ingress_port,
        pythonpath=_own_root() if pythonpath is None else pythonpath,
    )
    running = is_running(layout.root)
    if running is not None:
        return _same_config(layout, config, running)
    for folder in (layout.objects, layout.status, layout.logs):
        folder.mkdir(parents=True, exist_ok=True)
    filestore.write_json(layout.config, config.to_dict())
    filestore.remove(layout.state)
    pid = _spawn(layout)
    return _wait_until_up(layout, pid, timeout)


def is_running(cluster_dir: Path) -> AgentInfo | None:
    """The agent serving `cluster_dir`, or None if there is none (a stale state file too)."""
    layout = Layout(Path(cluster_dir).resolve())
    info = _read_state(layout)
    if info is None or not _alive(info.pid) or not _is_agent(info.pid, layout.root):
        return None
    return info


def stop(cluster_dir: Path, timeout: float = 5.0) -> None:
    """Stop the agent and every pod it started; do nothing if none runs."""
    layout = Layout(Path(cluster_dir).resolve())
    info = _read_state(layout)
    if info is not None and _alive(info.pid) and _is_agent(info.pid, layout.root):
        os.kill(info.pid, signal.SIGTERM)
        if not _wait_dead(info.pid, timeout):
            os.kill(info.pid, signal.SIGKILL)
            _wait_dead(info.pid, 2.0)
    _kill_leftover_pods(layout)
    filestore.remove(layout.state)


# --- start -------------------------------------------------------------------------------


def _own_root() -> list[str]:
    """The folder that holds the `wavegate` package (src/ in a checkout)."""
    return [str(Path(__file__).resolve().parents[2])]


def _same_config(layout: Layout, config: AgentConfig, running: AgentInfo) -> AgentInfo:
    try:
        current = AgentConfig.from_file(layout.config)
    except ConfigError:
        current = None
    if current != config:
        raise AgentError(
            f"{layout.root}: an agent (pid {running.pid}) already runs with another"
            " configuration; stop it first"
        )
    return running


def _spawn(layout: Layout) -> int:
    env = dict(os.environ)
    # The agent must import this very wavegate, installed or not.
    inherited = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join(_own_root() + inherited)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(layout.agent_output, flags, 0o644)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # posix_spawn rather than Popen: the agent outlives this process, and a Popen object
        # for it would warn about a child still running when it is collected.
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", AGENT_MODULE, str(layout.root)],
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsid=True,  # its own session: a terminal's Ctrl-C or hangup does not reach it
        )
    finally:
        os.close(out)
        os.close(null)
    _spawned.add(pid)
    return pid


def _wait_until_up(layout: Layout, pid: int, timeout: float) -> AgentInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _read_state(layout)
        if info is not None and info.pid == pid and _alive(pid):
            return info
        if not _alive(pid):
            raise AgentError(f"the agent of {layout.root} exited at start:\n{_output_tail(layout)}")
        time.sleep(_POLL_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_dead(pid, 2.0)
    raise AgentError(
        f"the agent of {layout.root} was not up after {timeout:.0f}s:\n{_output_tail(layout)}"
    )


def _output_tail(layout: Layout, limit: int = 2000) -> str:
    try:
        return layout.agent_output.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return "(no output)"


def _read_state(layout: Layout) -> AgentInfo | None:
    try:
        raw = filestore.read_json(layout.state, missing_ok=True)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("pid"), int):
        return None
    return AgentInfo(raw["pid"], str(raw.get("ingress", "")), str(raw.get("started_at", "")))


# --- processes ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether `pid` runs; an agent we spawned that exited is reaped (no zombie left)."""
    if pid in _spawned:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            reaped = pid  # reaped already
        if reaped == pid:
            _spawned.discard(pid)
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _is_agent(pid: int, root: Path) -> bool:
    """Whether `pid` is the agent of `root`, not a process that reused a stale pid."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        cwd = Path(f"/proc/{pid}/cwd").resolve()
    except OSError:
        return False
    if AGENT_MODULE not in argv:
        return False
    folders = argv[argv.index(AGENT_MODULE) + 1 :]
    return any((cwd / folder).resolve() == root for folder in folders if folder)


def _kill_leftover_pods(layout: Layout) -> None:
    """SIGKILL the pods listed in status files that still run: an agent that was SIGKILLed
    cannot stop them (PR_SET_PDEATHSIG normally does; this is the belt to its braces)."""
    for path in layout.status.glob("*.json"):
        try:
            body = filestore.read_json(path, missing_ok=True)
        except ValueError:
            continue
        for pod in body.get("pods", []) if isinstance(body, dict) else []:
            pid, address = pod.get("pid"), str(pod.get("address", ""))
            if isinstance(pid, int) and _alive(pid) and _is_pod(pid, address):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def _is_pod(pid: int, address: str) -> bool:
    """Whether `pid` is the pod at `address`: its environment holds that HOST and PORT."""
    host, _, port = address.rpartition(":")
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"HOST={host}".encode() in env and f"PORT={port}".encode() in env
