"""Real Kubernetes control planes on loopback: the processes behind the kube sandbox.

Owns, under one folder DIR: the processes (one etcd shared by every cluster, each cluster in its
own key prefix; per cluster a kube-apiserver and a kube-controller-manager), the CA, serving
certificate, service-account keys and tokens they trust (made once per DIR), their logs
(DIR/logs), the kubeconfig that reaches them (DIR/kubeconfig) and DIR/sandbox.json, which lets
`down` stop them from another process. It must not schedule or run pods: no scheduler or kubelet
runs here, so pods stay Pending and unbound until a node agent binds them.

Standard library only, plus the etcd and openssl commands: it needs no Kubernetes client (only
the driver imports one), and scripts can start a sandbox before the project's dependencies are in.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from wavegate import filestore
from wavegate.errors import SandboxError

__all__ = [
    "Cluster", "Sandbox", "SandboxError", "down", "find_binaries", "restart_apiserver", "spawn",
    "up",
]

KUBE_VERSION = "v1.20.2"
# The build's cache folder, named as scripts/build-kube-sandbox.sh names it: the suffix changes
# with what the build makes (-2: a vendored reflect2 that lets custom resources be written), so
# binaries an older build left are never taken for these.
CACHE_NAME = f"kube-{KUBE_VERSION}-2"
BINARIES = ("kube-apiserver", "kube-controller-manager")
READY_TIMEOUT = 120.0  # seconds for all clusters; six come up in about 12 s on 2 cores
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"

# Only what rolls workloads out and back and cleans up after them, plus what a real cluster's
# API relies on: a default ServiceAccount and its token (ServiceAccount admission refuses pods
# without them), the rules of the aggregated admin/edit/view ClusterRoles (empty without
# clusterrole-aggregation, so a RoleBinding to `edit` would grant nothing), and removal of the
# finalizers StorageObjectInUseProtection admission puts on volumes (a StatefulSet's claims
# could never be deleted). Not endpoint/endpointslice: the Endpoints API refuses the loopback
# addresses the node agent gives pods. Not nodelifecycle or podgc: they evict or delete pods on
# the agent's nodes.
CONTROLLERS = (
    "deployment",
    "replicaset",
    "statefulset",
    "daemonset",
    "namespace",
    "garbagecollector",
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-cert-publisher",
    "clusterrole-aggregation",
    "pvc-protection",
    "pv-protection",
)
_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?")


@dataclass(frozen=True)
class Cluster:
    """One sandbox cluster; kubeconfig contexts NAME (admin) and NAME-deployer reach it."""

    name: str
    port: int

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Sandbox:
    """A running sandbox. Both tokens work on every cluster; RBAC grants the deployer nothing."""

    dir: Path
    clusters: tuple[Cluster, ...]
    kubeconfig: Path
    ca_file: Path
    admin_token: str
    deployer_token: str


class _Process(TypedDict):
    name: str
    pid: int
    started: int  # start time in clock ticks since boot: tells our process from a reused PID
    argv: list[str]
    log: str


class _State(TypedDict):
    """DIR/sandbox.json: rewritten after every start, so a failed `up` can still be undone."""

    etcd_port: int
    clusters: dict[str, int]
    processes: list[_Process]


@dataclass(frozen=True)
class _Layout:
    """Where everything lives under DIR."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def controller_manager_kubeconfig(self, cluster: str) -> Path:
        return self.root / "clusters" / f"{cluster}.kubeconfig"


@dataclass(frozen=True)
class _Tokens:
    admin: str
    deployer: str


# --- public API -------------------------------------------------------------------------------


def find_binaries() -> Path | None:
    """The bin folder scripts/build-kube-sandbox.sh fills, if it holds both binaries."""
    default = Path.home() / ".cache" / "wavegate" / CACHE_NAME
    bin_dir = Path(os.environ.get("WAVEGATE_KUBE_CACHE") or default) / "bin"
    return None if _missing_binaries(bin_dir) else bin_dir


def up(*, clusters: list[str], dir: Path, bin_dir: Path) -> Sandbox:
    """Start one control plane per name and return once every one serves and reconciles.

    Certificates, tokens and etcd data already in DIR are reused, so clusters keep their objects
    across `down` and `up`. On any failure everything started so far is stopped again.
    """
    _check_names(clusters)
    etcd = _require_tools(bin_dir)
    layout = _Layout(dir.resolve())
    _refuse_if_running(layout)
    layout.logs.mkdir(parents=True, exist_ok=True)
    tokens = _ensure_credentials(layout.pki)
    state = _State(etcd_port=0, clusters={}, processes=[])
    try:
        _start_etcd(layout, state, etcd)
        started = _start_clusters(layout, state, bin_dir, clusters, tokens)
    except BaseException:
        down(layout.root)
        raise
    return Sandbox(
        dir=layout.root,
        clusters=started,
        kubeconfig=layout.kubeconfig,
        ca_file=layout.pki / "ca.crt",
        admin_token=tokens.admin,
        deployer_token=tokens.deployer,
    )


def spawn(dir: Path, name: str, argv: list[str]) -> int:
    """Start ARGV detached beside the sandbox running in DIR, so that `down` stops it too.

    For companions of the control planes (the kube fleet's node agents): the same session,
    log file (DIR/logs/NAME.log) and PID-reuse-proof record in sandbox.json. Returns its PID.
    """
    layout = _Layout(dir.resolve())
    if not layout.state.exists():
        raise SandboxError(f"no sandbox runs in {layout.root}; start one with up")
    return _spawn(layout, _load_state(layout), name, argv)["pid"]


def restart_apiserver(dir: Path, cluster: str) -> int:
    """Start CLUSTER's API server again after it died (a fault test kills it); its PID, once ready.

    Same arguments, so the same port and etcd prefix: the cluster comes back with its objects,
    and its controller manager, node agent and clients reconnect to the address they know.
    """
    layout = _Layout(dir.resolve())
    state = _load_state(layout)
    name = f"{cluster}-kube-apiserver"
    old = next((p for p in state["processes"] if p["name"] == name), None)
    if old is None:
        raise SandboxError(f"no API server of {cluster!r} in the sandbox in {layout.root}")
    if _is_running(old):
        raise SandboxError(f"the API server of {cluster} still runs (pid {old['pid']})")
    state["processes"].remove(old)
    process = _spawn(layout, state, name, old["argv"])
    tokens = _read_tokens(layout.pki / "tokens.csv")
    server = Cluster(cluster, state["clusters"][cluster]).server
    probe = _probe(server, ca_file=layout.pki / "ca.crt", token=tokens.admin)
    _wait_for_ok(probe, "/readyz", process=process, deadline=time.monotonic() + READY_TIMEOUT)
    return process["pid"]


def down(dir: Path) -> None:
    """Stop every process `up` started in DIR (SIGTERM, then SIGKILL); a no-op when none runs."""
    layout = _Layout(dir.resolve())
    if not layout.state.exists():
        return
    running = [p for p in _load_state(layout)["processes"] if _is_running(p)]
    _signal(running, signal.SIGTERM)
    survivors = _wait_until_stopped(running, STOP_GRACE)
    _signal(survivors, signal.SIGKILL)
    if stuck := _wait_until_stopped(survivors, STOP_GRACE):
        raise SandboxError(f"could not stop {', '.join(p['name'] for p in stuck)}")
    layout.state.unlink()


# --- checks -----------------------------------------------------------------------------------


def _check_names(clusters: list[str]) -> None:
    """Names become etcd prefixes, file names and kubeconfig contexts, so keep them DNS labels."""
    if not clusters:
        raise SandboxError("no clusters named")
    for name in clusters:
        if not _CLUSTER_NAME.fullmatch(name):
            raise SandboxError(f"cluster name {name!r} is not a lowercase DNS label")
        if clusters.count(name) > 1 or f"{name}-deployer" in clusters:
            raise SandboxError(f"cluster name {name!r} clashes with another cluster or context")


def _require_tools(bin_dir: Path) -> str:
    """The path of etcd, once every program the sandbox runs is known to be there."""
    missing = [name for name in ("etcd", "openssl") if not shutil.which(name)]
    missing += [str(bin_dir / name) for name in _missing_binaries(bin_dir)]
    if missing:
        raise SandboxError(f"{', '.join(missing)} not found; run scripts/build-kube-sandbox.sh")
    return str(shutil.which("etcd"))


def _missing_binaries(bin_dir: Path) -> list[str]:
    return [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]


def _refuse_if_running(layout: _Layout) -> None:
    """Two sandboxes in one DIR would share etcd data and overwrite each other's sandbox.json."""
    if layout.state.exists() and any(map(_is_running, _load_state(layout)["processes"])):
        raise SandboxError(f"a sandbox is already running in {layout.root}; stop it with down")


# --- credentials ------------------------------------------------------------------------------


def _ensure_credentials(pki: Path) -> _Tokens:
    """Make the CA, serving certificate, service-account keys and tokens unless DIR has them."""
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "server.crt").exists():
        _make_certificates(pki)
    if not (pki / "sa.pub").exists():
        _openssl("genrsa", "-out", pki / "sa.key", "2048")
        _openssl("rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")
    if not (pki / "tokens.csv").exists():
        _write_tokens(pki / "tokens.csv", _Tokens(secrets.token_hex(16), secrets.token_hex(16)))
    return _read_tokens(pki / "tokens.csv")


def _make_certificates(pki: Path) -> None:
    """One CA and one serving certificate for 127.0.0.1, shared by every API server in DIR.

    The leaf carries explicit key usages and key identifiers: strict TLS clients (Python 3.13's
    default context among them) refuse certificates without them.
    """
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        "-subj", "/CN=wavegate-sandbox-ca", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", pki / "ca.key", "-out", pki / "ca.crt",
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", pki / "server.key", "-out", pki / "server.csr",
    )  # fmt: skip
    (pki / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509", "-req", "-in", pki / "server.csr", "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
        "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "3650",
        "-extfile", pki / "server.ext", "-out", pki / "server.crt",
    )  # fmt: skip


def _openssl(*args: str | Path) -> None:
    command = ["openssl", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")


def _write_tokens(path: Path, tokens: _Tokens) -> None:
    """kube-apiserver's static token file: token,user,uid[,"groups"]."""
    path.touch(mode=0o600)
    path.write_text(
        f'{tokens.admin},admin,admin,"system:masters"\n{tokens.deployer},deployer,deployer\n'
    )


def _read_tokens(path: Path) -> _Tokens:
    by_user = {}
    for line in path.read_text().splitlines():
        token, user, *_ = line.split(",")
        by_user[user] = token
    return _Tokens(admin=by_user["admin"], deployer=by_user["deployer"])


# --- starting ---------------------------------------------------------------------------------


def _start_etcd(layout: _Layout, state: _State, etcd: str) -> None:
    """One etcd for every cluster: each API server keeps to its own key prefix."""
    state["etcd_port"], peer_port = _free_ports(2)
    client, peer = f"http://127.0.0.1:{state['etcd_port']}", f"http://127.0.0.1:{peer_port}"
    argv = [
        etcd, "--name=sandbox", f"--data-dir={layout.root / 'etcd'}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=sandbox={peer}", "--logger=zap", "--log-level=warn",
    ]  # fmt: skip
    process = _spawn(layout, state, "etcd", argv)
    deadline = time.monotonic() + READY_TIMEOUT
    _wait_for_ok(_probe(client), "/health", process=process, deadline=deadline)


def _start_clusters(
    layout: _Layout, state: _State, bin_dir: Path, names: list[str], tokens: _Tokens
) -> tuple[Cluster, ...]:
    """Start every API server at once, each controller manager once its API server is ready.

    A controller manager gives up if its API server is not healthy within 10 s, and six API
    servers starting together on two cores take longer than that.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    clusters = tuple(map(Cluster, names, _free_ports(len(names))))
    state["clusters"] = {c.name: c.port for c in clusters}
    _write_kubeconfig(layout.kubeconfig, clusters, layout.pki / "ca.crt", tokens)
    apiservers = [_start_apiserver(layout, state, bin_dir, c) for c in clusters]
    probes = [_probe(c.server, ca_file=layout.pki / "ca.crt", token=tokens.admin) for c in clusters]
    managers: list[_Process] = []
    for cluster, apiserver, probe in zip(clusters, apiservers, probes, strict=True):
        _wait_for_ok(probe, "/readyz", process=apiserver, deadline=deadline)
        managers.append(_start_controller_manager(layout, state, bin_dir, cluster, tokens))
    # The default ServiceAccount appears once the controller manager reconciles.
    default_account = "/api/v1/namespaces/default/serviceaccounts/default"
    for manager, probe in zip(managers, probes, strict=True):
        _wait_for_ok(probe, default_account, process=manager, deadline=deadline)
    return clusters


def _start_apiserver(layout: _Layout, state: _State, bin_dir: Path, cluster: Cluster) -> _Process:
    """An API server for one cluster, in its own prefix of the shared etcd.

    `--endpoint-reconciler-type=none`: the Endpoints API refuses the loopback address it would
    publish for the `kubernetes` Service, and nothing here reaches the API through that Service.
    """
    pki = layout.pki
    argv = [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{state['etcd_port']}",
        f"--etcd-prefix=/registry-{cluster.name}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={cluster.port}",
        f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
        f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=RBAC",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--endpoint-reconciler-type=none", "--allow-privileged=true",
    ]  # fmt: skip
    return _spawn(layout, state, f"{cluster.name}-kube-apiserver", argv)


def _start_controller_manager(
    layout: _Layout, state: _State, bin_dir: Path, cluster: Cluster, tokens: _Tokens
) -> _Process:
    """The controllers in CONTROLLERS for one cluster, acting as admin.

    `--port=0 --secure-port=0`: by default v1.20 serves on fixed ports 10252 (insecure) and 10257,
    which six controller managers would fight over; nothing here needs their health endpoints.
    """
    kubeconfig = layout.controller_manager_kubeconfig(cluster.name)
    _write_kubeconfig(kubeconfig, (cluster,), layout.pki / "ca.crt", tokens)
    argv = [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}", f"--controllers={','.join(CONTROLLERS)}",
        "--leader-elect=false", "--use-service-account-credentials=false",
        "--bind-address=127.0.0.1", "--port=0", "--secure-port=0",
        f"--service-account-private-key-file={layout.pki / 'sa.key'}",
        f"--root-ca-file={layout.pki / 'ca.crt'}",
    ]  # fmt: skip
    return _spawn(layout, state, f"{cluster.name}-kube-controller-manager", argv)


def _write_kubeconfig(
    path: Path, clusters: tuple[Cluster, ...], ca_file: Path, tokens: _Tokens
) -> None:
    """Contexts NAME (admin) and NAME-deployer per cluster; JSON, which every YAML reader reads."""
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": clusters[0].name,
        "clusters": [
            {"name": c.name, "cluster": {"server": c.server, "certificate-authority-data": ca_data}}
            for c in clusters
        ],
        "users": [
            {"name": "admin", "user": {"token": tokens.admin}},
            {"name": "deployer", "user": {"token": tokens.deployer}},
        ],
        "contexts": [
            {"name": name, "context": {"cluster": c.name, "user": user}}
            for c in clusters
            for name, user in ((c.name, "admin"), (f"{c.name}-deployer", "deployer"))
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2) + "\n")


# --- processes --------------------------------------------------------------------------------


def _spawn(layout: _Layout, state: _State, name: str, argv: list[str]) -> _Process:
    """Start ARGV in its own session, output to DIR/logs/NAME.log, and record it in sandbox.json.

    posix_spawn rather than subprocess.Popen: these processes outlive the call (and usually the
    caller's process), and a Popen object dropped while its child runs raises ResourceWarning.
    """
    log = layout.logs / f"{name}.log"
    pid = os.posix_spawn(
        argv[0], argv, dict(os.environ), setsid=True,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
    )  # fmt: skip
    started = _proc_stat(pid)[1]
    process = _Process(name=name, pid=pid, started=started, argv=argv, log=str(log))
    state["processes"].append(process)
    _save_state(layout, state)
    return process


def _is_running(process: _Process) -> bool:
    """Whether the process we started still runs (not exited, not a zombie, PID not reused).

    Judged by start time, not command line: right after exec, /proc/PID/cmdline can read empty.
    """
    with contextlib.suppress(ChildProcessError):  # a child of another process
        os.waitpid(process["pid"], os.WNOHANG)  # reaps it if it is our exited child
    try:
        state, started = _proc_stat(process["pid"])
    except OSError:
        return False
    return state != "Z" and started == process["started"]


def _proc_stat(pid: int) -> tuple[str, int]:
    """State and start time of PID from /proc/PID/stat (fields 3 and 22, after the `(comm)`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def _signal(processes: list[_Process], signum: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process["pid"], signum)


def _wait_until_stopped(processes: list[_Process], timeout: float) -> list[_Process]:
    """Those of PROCESSES still running after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while (running := [p for p in processes if _is_running(p)]) and time.monotonic() < deadline:
        _reap(processes)
        time.sleep(0.05)
    _reap(processes)
    return running


def _reap(processes: list[_Process]) -> None:
    """Collect those that were our own children, so no zombie outlives `down` in this process."""
    for process in processes:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(process["pid"], os.WNOHANG)


def _wait_for_ok(
    probe: Callable[[str], int], path: str, *, process: _Process, deadline: float
) -> None:
    """Poll PATH until it answers 200; fail early, with the log's tail, if PROCESS dies."""
    while probe(path) != 200:
        if not _is_running(process):
            raise SandboxError(f"{process['name']} exited; {_log_tail(process)}")
        if time.monotonic() > deadline:
            raise SandboxError(f"{process['name']}: {path} not ready; {_log_tail(process)}")
        time.sleep(0.1)


def _log_tail(process: _Process) -> str:
    lines = Path(process["log"]).read_text(errors="replace").splitlines()[-5:]
    return f"last lines of {process['log']}:\n" + "\n".join(lines)


# --- I/O helpers ------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """COUNT distinct ports free on 127.0.0.1 now; the race until a server binds one is accepted.

    The sockets stay open until all are chosen, so the kernel cannot hand out one port twice.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _probe(base: str, *, ca_file: Path | None = None, token: str = "") -> Callable[[str], int]:
    """A GET of BASE+path that returns the status, or 0 while nothing answers.

    Proxies are bypassed: everything here is on loopback.
    """
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def status(path: str) -> int:
        request = urllib.request.Request(base + path, headers=headers)
        try:
            with opener.open(request, timeout=2) as response:
                code: int = response.status
                return code
        except urllib.error.HTTPError as error:
            error.close()
            return error.code
        except OSError:  # refused, reset, TLS not up yet, timed out
            return 0

    return status


def _save_state(layout: _Layout, state: _State) -> None:
    filestore.write_json(layout.state, state)


def _load_state(layout: _Layout) -> _State:
    state: _State = json.loads(layout.state.read_text())
    return state


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`up --dir D --clusters a,b [--bin-dir B]` and `down --dir D`, for manual use."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "down":
            down(args.dir)
            return 0
        _print(up(clusters=args.clusters.split(","), dir=args.dir, bin_dir=_bin_dir(args.bin_dir)))
        return 0
    except SandboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wavegate.sandbox.controlplane")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start control planes in the background")
    start.add_argument("--dir", type=Path, required=True)
    start.add_argument("--clusters", required=True, help="comma-separated cluster names")
    start.add_argument("--bin-dir", type=Path, help="default: the build script's cache")
    stop = commands.add_parser("down", help="stop everything started in DIR")
    stop.add_argument("--dir", type=Path, required=True)
    return parser


def _bin_dir(given: Path | None) -> Path:
    found = given or find_binaries()
    if found is None:
        raise SandboxError("kube binaries not built; run scripts/build-kube-sandbox.sh")
    return found


def _print(sandbox: Sandbox) -> None:
    for cluster in sandbox.clusters:
        print(f"{cluster.name}\t{cluster.server}\tcontexts {cluster.name}, {cluster.name}-deployer")
    print(f"kubeconfig: {sandbox.kubeconfig}")


if __name__ == "__main__":
    sys.exit(main())
