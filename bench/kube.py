"""wavegate on the kube sandbox: API economy, and emergency rollback against what teams script.

In one run on six sandbox clusters (each its own kube-apiserver and controller manager):

    API requests per cluster  one deploy (1.1.0 over 1.0.0) and one rollback, by verb and
                              kind (a watch counts as one request)        goals <= 20, <= 15
    one cluster alone         `rollback -c prod-0`, with where its time went (connect, lock,
                              ledger, apply, rollout wait, checks)
    six in parallel           `rollback --all`: over one cluster alone      goal <= 1.5
    kubectl, one cluster      `kubectl rollout undo` then `rollout status` on prod-1;
                              wavegate's one cluster over kubectl's         goal <= 1.2
    kubectl, serial           the same, cluster after cluster, against `rollback --all`
    CPU, by process           what each rollback cost the machine's cores, by kind of process
                              (how near six at once come to what the cores can give)

One cluster alone, by wavegate and by kubectl, is measured ROUNDS times (default 3), the two
taking turns so a busier minute of a shared machine falls on both; the median of each is
compared, and the breakdown shown is the median round's. kubectl works on a cluster of its
own (prod-1): its undo leaves the Deployment's template to its own field manager, which a
server-side apply then refuses to take over without force, so it comes last there.

Nothing asserts. Run: .venv/bin/python bench/kube.py [--rounds N] (needs the sandbox
binaries: make sandbox).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wavegate.clock import SystemClock  # noqa: E402
from wavegate.config import app as apps  # noqa: E402
from wavegate.config.fleet import Fleet, Wave, load  # noqa: E402
from wavegate.drivers.base import Driver  # noqa: E402
from wavegate.engine import deploy, probes, rollback  # noqa: E402
from wavegate.engine import session as runs  # noqa: E402
from wavegate.outputs import logs  # noqa: E402
from wavegate.sandbox import kubefleet  # noqa: E402

APP, GOOD, NEW = "library-app", "1.0.0", "1.1.0"
PHASES = {  # driver call -> where its time goes
    "connect": "connect", "acquire_lock": "lock", "release_lock": "lock",
    "records": "ledger", "stored_release": "ledger", "create_record": "ledger",
    "update_record": "ledger", "apply": "apply", "wait_rollout": "rollout wait",
}
Counts = collections.Counter[str]
# The processes a rollback keeps busy, by a word of their command line; the rest is "other".
PROCESS_KINDS = ("kube-apiserver", "kube-controller-manager", "etcd", "nodeagent", "library_app")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Alone:
    """One cluster rolled back alone by wavegate: wall time, phases, CPU by kind of process."""

    wall: float
    spent: Counts
    cpu: Counts


class Timed:
    """A driver whose calls are timed by phase; everything else passes through."""

    def __init__(self, driver: Driver, spent: collections.Counter[str]) -> None:
        self._driver, self._spent = driver, spent
        self.ended = 0.0  # when its last call before the lock's release returned (monotonic)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._driver, name)
        if name not in PHASES:
            return found

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return found(*args, **kwargs)
            finally:
                now = time.monotonic()
                self._spent[PHASES[name]] += now - started
                if name != "release_lock":  # the locks are let go together, at the end
                    self.ended = now
        return timed


@contextmanager
def timed_checks(spent: collections.Counter[str]) -> Iterator[None]:
    """Check rounds timed where the restore sends them (`probes.run_round`)."""
    original = probes.run_round

    def run_round(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            spent["checks"] += time.monotonic() - started

    probes.run_round = run_round  # type: ignore[assignment]
    try:
        yield
    finally:
        probes.run_round = original  # type: ignore[assignment]


def source_fleet(folder: Path) -> Path:
    document = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    document["local"].pop("state_dir")
    for wave in document["waves"]:
        wave["bake"] = "0s"
    document["policy"].update(watch="0s", check_interval="500ms")
    path = folder / "source.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def requests_of(drivers: Iterator[Any]) -> list[Counts]:
    return [collections.Counter(driver.api.requests) for driver in drivers]


def deploy_everywhere(fleet: Fleet, app: apps.App, version: str) -> list[Counts]:
    """Deploy; each cluster's API requests, by verb and kind."""
    prepared = deploy.prepare(fleet, app, version, {})
    report = deploy.new_report(fleet, app, version, runs.new_run_id())
    code = deploy.run(fleet, prepared, run_id=report.run_id, by="bench", clock=SystemClock(),
                      report=report)
    assert code == 0, report.message
    return requests_of(target.driver for target in prepared.targets.values())


def wavegate_rollback(fleet: Fleet, names: list[str], spent: collections.Counter[str]
                      ) -> tuple[float, list[Counts], list[float]]:
    """Wall time of `rollback -c NAMES --to 1.0.0`; each cluster's API requests; when each
    cluster was done (its last ledger mark), from the start, soonest first."""
    run_id = runs.new_run_id()
    report = rollback.new_report(APP, names, fleet, run_id, GOOD)
    drivers = runs.drivers_for(fleet, names)
    asked = rollback.Request(app=APP, to_version=GOOD, reason="bench", run_id=run_id, by="bench")
    chosen: dict[str, Any] = {name: Timed(driver, spent) for name, driver in drivers.items()}
    started = time.monotonic()
    with timed_checks(spent):
        code = rollback.run(fleet, chosen, asked, clock=SystemClock(), report=report)
    wall = time.monotonic() - started
    assert code == 0, report.message
    ended = sorted(timed.ended - started for timed in chosen.values())
    return wall, requests_of(iter(drivers.values())), ended


def kubectl_rollback(fleet: Fleet, kubeconfig: Path) -> list[float]:
    """What teams script by hand: undo, then wait, one cluster after the other (admin
    contexts); the time of each."""
    took = []
    for cluster in fleet.clusters:
        base = ["kubectl", "--kubeconfig", str(kubeconfig), "--context", cluster.name,
                "-n", cluster.namespace]
        started = time.monotonic()
        subprocess.run([*base, "rollout", "undo", "deployment/library-app"], check=True,
                       capture_output=True)
        subprocess.run([*base, "rollout", "status", "deployment/library-app",
                        "--timeout=120s"], check=True, capture_output=True)
        took.append(time.monotonic() - started)
    return took


def only(fleet: Fleet, name: str) -> Fleet:
    """FLEET cut down to one cluster, in its own wave: to deploy it again between rounds."""
    wave = Wave(fleet.wave_of(name).name, (name,), max_parallel=1, bake=0.0)
    return dataclasses.replace(fleet, clusters=(fleet.cluster(name),), waves=(wave,))


def alone_rounds(fleet: Fleet, app: apps.App, kubeconfig: Path,
                 rounds: int) -> tuple[list[Alone], list[float]]:
    """One cluster rolled back alone, ROUNDS times each, wavegate (prod-0) and kubectl
    (prod-1) taking turns; each is put back on the new release after its turn."""
    ours = fleet.clusters[0].name
    ours_alone, theirs_alone = only(fleet, ours), only(fleet, fleet.clusters[1].name)
    wavegate_runs, kubectl_runs = [], []
    for _ in range(rounds):
        spent: Counts = collections.Counter()
        cpu: Counts = collections.Counter()
        with cpu_used(cpu):
            wall, _, _ = wavegate_rollback(fleet, [ours], spent)
        wavegate_runs.append(Alone(wall, spent, cpu))
        deploy_everywhere(ours_alone, app, NEW)
        kubectl_runs.append(kubectl_rollback(theirs_alone, kubeconfig)[0])
        kubectl_rollback(theirs_alone, kubeconfig)  # undo the undo: back on the new release
    return wavegate_runs, kubectl_runs


def median_run(runs: list[Alone]) -> Alone:
    return sorted(runs, key=lambda run: run.wall)[(len(runs) - 1) // 2]


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """By pid, each process's kind and the CPU time (user + system) it has used so far."""
    used = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        used[int(entry.name)] = (process_kind(int(entry.name), command),
                                 (int(fields[11]) + int(fields[12])) / TICKS)
    return used


def process_kind(pid: int, command: str) -> str:
    if pid == os.getpid():
        return "wavegate"
    return next((kind for kind in PROCESS_KINDS if kind in command), "other")


@contextmanager
def cpu_used(into: Counts) -> Iterator[None]:
    """CPU seconds the machine's processes used meanwhile, by kind (a process that ended
    meanwhile is not counted: an old pod, idle since it left the ingress)."""
    before = cpu_seconds()
    yield
    for pid, (kind, seconds) in cpu_seconds().items():
        known = before.get(pid)
        into[kind] += seconds - (known[1] if known and known[0] == kind else 0.0)


def load_average(samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        samples.append(os.getloadavg()[0])


def breakdown(counts: list[Counts]) -> tuple[float, int, Counts]:
    """Mean and most requests per cluster, and the mean per verb and kind."""
    total: Counts = collections.Counter()
    for one in counts:
        total.update(one)
    mean = {kind: round(n / len(counts)) for kind, n in total.items()}
    return (sum(total.values()) / len(counts), max(sum(c.values()) for c in counts),
            collections.Counter(mean))


def print_requests(label: str, counts: list[Counts], goal: int) -> None:
    mean, most, by_kind = breakdown(counts)
    print(f"API requests per cluster, {label}: mean {mean:.1f}, most {most} (goal <= {goal})")
    for kind, n in sorted(by_kind.items(), key=lambda item: (-item[1], item[0])):
        print(f"    {n:>3}  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="times one cluster is rolled back alone, by each (default 3)")
    rounds = max(1, parser.parse_args().rounds)
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    for variable in ("LIBRARY_TOKEN_ALICE", "LIBRARY_TOKEN_BOB", "LIBRARY_TOKEN_CAROL"):
        os.environ.setdefault(variable, secrets.token_urlsafe(16))
    app = apps.App.from_folder(REPO / "manifests" / APP)
    loads: list[float] = []
    stop = threading.Event()
    threading.Thread(target=load_average, args=(loads, stop), daemon=True).start()
    spent_six: Counts = collections.Counter()
    cpu_six: Counts = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="wavegate-kube-bench-") as folder:
        sandbox = Path(folder) / "sandbox"
        kubefleet.up(load(source_fleet(Path(folder))), sandbox)
        try:
            fleet = load(sandbox / "fleet.yaml")
            names = [cluster.name for cluster in fleet.clusters]
            deploy_everywhere(fleet, app, GOOD)
            deployed = deploy_everywhere(fleet, app, NEW)
            with cpu_used(cpu_six):
                parallel, rolled, ended = wavegate_rollback(fleet, names, spent_six)
            deploy_everywhere(fleet, app, NEW)
            alone, kubectl_alone = alone_rounds(fleet, app, sandbox / "kubeconfig", rounds)
            kubectl = kubectl_rollback(fleet, sandbox / "kubeconfig")
        finally:
            kubefleet.down(sandbox)
    stop.set()
    report(deployed=deployed, rolled=rolled, alone=alone, kubectl_alone=kubectl_alone,
           parallel=parallel, ended=ended, kubectl=kubectl, spent_six=spent_six,
           cpu_six=cpu_six, loads=loads)


def phases(spent: collections.Counter[str], wall: float, clusters: int) -> str:
    """Time per phase (a mean over CLUSTERS, whose phases overlap), and what is left of WALL."""
    shown = ", ".join(f"{phase} {spent[phase] / clusters:.2f}s" for phase in
                      ("connect", "lock", "ledger", "apply", "rollout wait", "checks"))
    other = wall - sum(spent.values()) / clusters
    return f"{shown}, other {other:.2f}s (wall {wall:.2f}s)"


def cpu_split(used: Counts, wall: float) -> str:
    """CPU seconds by kind of process, and their share of what the cores gave in WALL."""
    total = sum(used.values())
    share = total / (wall * (os.cpu_count() or 1))
    kinds = ", ".join(f"{kind} {seconds:.2f}s" for kind, seconds in used.most_common()
                      if seconds >= 0.005)
    return f"{total:.2f}s in {wall:.2f}s wall ({share:.0%} of {os.cpu_count()} cores): {kinds}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:>7.2f}"


def report(*, deployed: list[Counts], rolled: list[Counts], alone: list[Alone],
           kubectl_alone: list[float], parallel: float, ended: list[float],
           kubectl: list[float], spent_six: Counts, cpu_six: Counts,
           loads: list[float]) -> None:
    # The lower middle of an even count for both, so the two medians mean the same thing.
    single, theirs = median_run(alone), statistics.median_low(kubectl_alone)
    print(f"{'benchmark':<52} {'wavegate':>9} {'baseline':>9} {'ratio':>7}  goal")
    print(f"{'rollback --all (6) over one cluster alone':<52} {parallel:>8.2f}s "
          f"{single.wall:>8.2f}s {ratio(parallel, single.wall)}  <= 1.5")
    print(f"{'one cluster: wavegate over kubectl undo+status':<52} {single.wall:>8.2f}s "
          f"{theirs:>8.2f}s {ratio(single.wall, theirs)}  <= 1.2")
    print(f"{'six: kubectl serial over wavegate rollback --all':<52} {parallel:>8.2f}s "
          f"{sum(kubectl):>8.2f}s {ratio(sum(kubectl), parallel)}  (x faster)")
    print(f"one cluster alone, {len(alone)} rounds (medians above): wavegate "
          + ", ".join(f"{run.wall:.2f}s" for run in alone) + "; kubectl "
          + ", ".join(f"{t:.2f}s" for t in kubectl_alone))
    print("kubectl serial, per cluster: " + ", ".join(f"{t:.2f}s" for t in kubectl))
    print("one cluster alone, where the time went (median round): "
          + phases(single.spent, single.wall, 1))
    print("six in parallel, mean per cluster: " + phases(spent_six, parallel, 6))
    print("six in parallel, each cluster done at: " + ", ".join(f"{t:.2f}s" for t in ended)
          + f" (wall {parallel:.2f}s)")
    print("CPU, one cluster alone (median round): " + cpu_split(single.cpu, single.wall))
    print("CPU, six in parallel: " + cpu_split(cpu_six, parallel))
    print_requests("one deploy", deployed, 20)
    print_requests("one rollback (rollback --all)", rolled, 15)
    if loads:
        print(f"load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}, "
              f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
