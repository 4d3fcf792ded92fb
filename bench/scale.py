"""wavegate at fleet scale: the real runner, real checks and a real library_app against N
simulated clusters (bench/simfleet.py states their latency model).

    .venv/bin/python bench/scale.py --clusters 1000     one run; its last line is one JSON object
    make bench-scale                                    N = 10, 100, 1000 and a table of goals

What is measured, for a deploy of 1.1.0 over a verified 1.0.0 in five waves (bake 0, watch 0):
    prepare_s        loading the fleet and app, rendering and checking every cluster's release
    run_s            `deploy.run`: connect, lock, every wave, release the locks, keeping the
                     run's journal as `wavegate deploy` does
    critical_path_s  the waits a perfect orchestrator must make: one API round trip each to
                     connect, lock and unlock (in parallel), then per batch of max_parallel
                     clusters the ledger read, record write, apply, rollout and one check
                     round (measured alone, unloaded), then the wave's verified marks
    overhead_s       run_s - critical_path_s: wavegate's own cost
    peak_rss_mb      this process's peak resident memory (the library_app servers excluded)
    locks_s          how long taking and releasing every cluster's lock lasted (a perfect
                     orchestrator: two round trips)
    cpu_s            CPU seconds this process spent in prepare and run: steadier than wall
                     time where other work shares the machine
    servers_cpu_s    CPU seconds the two library_app processes spent answering every
                     cluster's probes (each real cluster answers its own, on its own machine)
Nothing here asserts: the table says which goals are met on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

import simfleet  # noqa: E402

import wavegate.drivers  # noqa: E402
from wavegate.clock import SystemClock  # noqa: E402
from wavegate.config import app as apps  # noqa: E402
from wavegate.config import checks  # noqa: E402
from wavegate.config.fleet import Cluster, Fleet, load  # noqa: E402
from wavegate.decide.ledger import Record, Status  # noqa: E402
from wavegate.engine import credentials, deploy, probes  # noqa: E402
from wavegate.engine import session as runs  # noqa: E402
from wavegate.outputs import journal, logs  # noqa: E402

OLD, NEW = "1.0.0", "1.1.0"
REGIONS = ("westeurope", "eastus", "australiaeast", "canadacentral")
TOKENS = ("LIBRARY_TOKEN_ALICE", "LIBRARY_TOKEN_BOB", "LIBRARY_TOKEN_CAROL")
GOALS = {"prepare_s": 5.0, "overhead_s": 10.0, "peak_rss_mb": 300.0}  # at 1,000 clusters


def fleet_file(folder: Path, clusters: int, *, waves: int, max_parallel: int) -> Path:
    names = [f"c{index:04d}" for index in range(clusters)]
    lines = ["fleet: scale", "defaults: {driver: kubernetes, namespace: library, "
             "values: {replicas: 3}}", "clusters:"]
    lines += [f"  - {{name: {name}, region: {REGIONS[i % len(REGIONS)]}, context: {name}, "
              f"endpoint: 'http://127.0.0.1:9'}}" for i, name in enumerate(names)]
    lines.append("waves:")
    size = math.ceil(clusters / waves)
    for wave in range(waves):
        members = names[wave * size:(wave + 1) * size]
        if members:
            lines.append(f"  - {{name: wave-{wave}, clusters: [{', '.join(members)}], "
                         f"max_parallel: {max_parallel}, bake: 0s}}")
    lines += ["policy: {on_failure: rollback-release, check_interval: 1s, check_timeout: 5s, "
              "max_check_errors: 3, rollout_timeout: 60s, watch: 0s}"]
    path = folder / "fleet.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def library_apps(versions: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """One real library_app process per version, on loopback; version -> URL."""
    started: list[subprocess.Popen[bytes]] = []
    urls = {}
    try:
        for version in versions:
            port = free_port()
            started.append(subprocess.Popen(
                [sys.executable, "-m", "library_app", "--version", version, "--host",
                 "127.0.0.1", "--port", str(port)], env={**os.environ, "PYTHONPATH":
                                                         str(REPO / "src")},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls[version] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            _wait_ready(url)
        yield urls
    finally:
        for process in started:
            process.terminate()
            process.wait()


def _wait_ready(url: str) -> None:
    for _ in range(200):
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # the server process is starting; nothing to wait on but its port
    raise SystemExit(f"library_app at {url} never answered")


def seeded(fleet: Fleet) -> dict[str, simfleet.SimCluster]:
    """Every cluster already runs a verified OLD (revision 1), as before a routine deploy."""
    state = {}
    for cluster in fleet.clusters:
        record = Record(app="library-app", cluster=cluster.name, revision=1, version=OLD,
                        status=Status.VERIFIED, run_id="seed", by="bench",
                        started_at="2025-01-01T00:00:00+00:00", resource_version="1")
        state[cluster.name] = simfleet.SimCluster(cluster.name, {1: (record, None)},
                                                  live_version=OLD)
    return state


def check_round(fleet: Fleet, app: apps.App, url: str) -> float:
    """One cluster's round of checks, alone and unloaded: the best of five."""
    release = app.render(fleet.clusters[0], NEW)
    suite = checks.load(release.checks, app.path / apps.CHECKS_FILE)
    tokens = credentials.resolve(suite)
    times = []
    for _ in range(5):
        started = time.monotonic()
        probes.run_round(url, suite, tokens, deadline=5.0)
        times.append(time.monotonic() - started)
    return min(times)


def critical_path(fleet: Fleet, model: simfleet.Model, round_s: float) -> float:
    latency = model.latency
    waits = 3 * latency  # connect, lock, unlock: every cluster at once
    for wave in fleet.waves:
        batches = math.ceil(len(wave.clusters) / wave.max_parallel)
        waits += batches * (3 * latency + model.rollout + round_s) + latency
    return waits


def measure(clusters: int, *, waves: int, max_parallel: int, model: simfleet.Model) -> dict[
        str, object]:
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    for variable in TOKENS:
        os.environ.setdefault(variable, secrets.token_urlsafe(16))
    meter = simfleet.Meter()
    with tempfile.TemporaryDirectory(prefix="wavegate-scale-") as folder, \
            library_apps((OLD, NEW)) as servers:
        path = fleet_file(Path(folder), clusters, waves=waves, max_parallel=max_parallel)
        cpu = time.process_time()
        started = time.monotonic()
        fleet = load(path)
        app = apps.App.from_folder(REPO / "manifests" / "library-app")
        state = seeded(fleet)

        def simulated(fleet: Fleet, cluster: Cluster) -> simfleet.SimDriver:
            return simfleet.SimDriver(cluster, state[cluster.name], model=model,
                                      servers=servers, meter=meter)

        wavegate.drivers.for_cluster = simulated  # type: ignore[assignment]
        prepared = deploy.prepare(fleet, app, NEW, {})
        prepare_s = time.monotonic() - started
        round_cpu = time.process_time()
        round_s = check_round(fleet, app, servers[NEW])
        round_cpu = time.process_time() - round_cpu
        report = deploy.new_report(fleet, app, NEW, runs.new_run_id())
        os.chdir(folder)  # the journal goes to ./.wavegate/runs, as for a deploy run here
        started = time.monotonic()
        journal.keep(report, journal.Inputs.of(fleet, app, NEW, overrides={},
                                               auto_approve=True, ignore_windows=None))
        code = deploy.run(fleet, prepared, run_id=report.run_id, by="bench",
                          clock=SystemClock(), report=report)
        run_s = time.monotonic() - started
        os.chdir(REPO)
        cpu_s = time.process_time() - cpu - round_cpu
    servers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended with the block above
    path_s = critical_path(fleet, model, round_s)
    return {"clusters": clusters, "prepare_s": round(prepare_s, 3), "run_s": round(run_s, 3),
            "critical_path_s": round(path_s, 3), "overhead_s": round(run_s - path_s, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "exit_code": code, "cpu_s": round(cpu_s, 2), "check_round_s": round(round_s, 4),
            "servers_cpu_s": round(servers_cpu.ru_utime + servers_cpu.ru_stime, 2),
            "api_calls_per_cluster": round(sum(meter.calls.values()) / clusters, 2),
            "locks_s": round(meter.span("acquire_lock") + meter.span("release_lock"), 3)}


def sweep(sizes: list[int], extra: list[str]) -> None:
    """Each size in its own process (peak RSS is per process), then the table."""
    rows = []
    for size in sizes:
        done = subprocess.run([sys.executable, __file__, "--clusters", str(size), *extra],
                              check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'clusters':>8} {'prepare_s':>10} {'run_s':>8} {'critical':>9} {'overhead':>9} "
          f"{'per cluster':>12} {'locks_s':>8} {'cpu_s':>6} {'srv_cpu':>8} {'rss_mb':>7} "
          f"{'api/cl':>7} {'exit':>5}")
    for row in rows:
        print(f"{row['clusters']:>8} {row['prepare_s']:>10.2f} {row['run_s']:>8.2f} "
              f"{row['critical_path_s']:>9.2f} {row['overhead_s']:>9.2f} "
              f"{row['overhead_s'] / row['clusters']:>11.4f}s {row['locks_s']:>8.2f} "
              f"{row['cpu_s']:>6.2f} {row['servers_cpu_s']:>8.2f} {row['peak_rss_mb']:>7.0f} "
              f"{row['api_calls_per_cluster']:>7.1f} {row['exit_code']:>5}")
    print(verdicts(rows))


def verdicts(rows: list[dict[str, float]]) -> str:
    largest, smallest = rows[-1], rows[0]
    lines = [f"goals at {largest['clusters']:.0f} clusters:"]
    for key, goal in GOALS.items():
        ok = "met" if largest[key] < goal else "NOT met"
        lines.append(f"  {key} {largest[key]:.2f} < {goal:g}: {ok}")
    per = [row["overhead_s"] / row["clusters"] for row in (smallest, largest)]
    ratio = per[1] / per[0] if per[0] > 0 else 0.0
    lines.append(f"  overhead per cluster {largest['clusters']:.0f} over "
                 f"{smallest['clusters']:.0f}: {ratio:.2f} <= 2: "
                 f"{'met' if ratio <= 2 else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--sweep", help="comma-separated sizes, each run in its own process")
    parser.add_argument("--waves", type=int, default=5)
    parser.add_argument("--max-parallel", type=int, default=100)
    parser.add_argument("--latency", type=float, default=simfleet.Model.latency)
    parser.add_argument("--rollout", type=float, default=simfleet.Model.rollout)
    args = parser.parse_args()
    if args.sweep:
        sweep([int(size) for size in args.sweep.split(",")],
              ["--waves", str(args.waves), "--max-parallel", str(args.max_parallel),
               "--latency", str(args.latency), "--rollout", str(args.rollout)])
        return
    result = measure(args.clusters, waves=args.waves, max_parallel=args.max_parallel,
                     model=simfleet.Model(latency=args.latency, rollout=args.rollout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
