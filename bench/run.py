"""wavegate's benchmarks for the local fleet, printed as ratios against their goals.

    demo wall time            `wavegate demo` end to end              goal < 60 s
    detection latency         canary serving a bad release -> the     goal < one check interval
                              rollback decision                            + one round of checks
    orchestration overhead    a run's wall time beyond the waits it   goal < 0.5 s per cluster
                              must make (rollouts, checks), per cluster

One run, side by side with its baselines; nothing here asserts (shared machines are noisy).
Run: `make bench` (or .venv/bin/python bench/run.py).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wavegate.clock import SystemClock  # noqa: E402
from wavegate.config import app as apps  # noqa: E402
from wavegate.config import checks  # noqa: E402
from wavegate.config.fleet import Fleet, Wave, load  # noqa: E402
from wavegate.engine import credentials, deploy, probes  # noqa: E402
from wavegate.engine import local_fleet as fleetctl  # noqa: E402
from wavegate.engine import session as runs  # noqa: E402
from wavegate.outputs import logs  # noqa: E402
from wavegate.outputs.report import RunReport  # noqa: E402


class Timeline:
    """When each cluster entered each state, from the run report's change notifications."""

    def __init__(self, report: RunReport) -> None:
        self.entered: dict[tuple[str, str], float] = {}
        report.listen(self._seen)

    def _seen(self, report: RunReport) -> None:
        now = time.monotonic()
        for entry in list(report.clusters.values()):
            self.entered.setdefault((entry.cluster, entry.state), now)


def timed_deploy(fleet: Fleet, app: apps.App, version: str) -> tuple[float, Timeline, int]:
    report = deploy.new_report(fleet, app, version, runs.new_run_id())
    timeline = Timeline(report)
    prepared = deploy.prepare(fleet, app, version, {})
    started = time.monotonic()
    code = deploy.run(fleet, prepared, run_id=report.run_id, by="bench", clock=SystemClock(),
                      report=report)
    return time.monotonic() - started, timeline, code


def bench_demo() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "wavegate", "demo"], cwd=REPO, check=True,
                   capture_output=True)
    return time.monotonic() - started


def round_time(fleet: Fleet, app: apps.App, version: str) -> float:
    """One round of the canary's checks, as the run sends them."""
    driver = runs.drivers_for(fleet, ["prod-0"])["prod-0"]
    release = app.render(fleet.cluster("prod-0"), version)
    suite = checks.load(release.checks, app.path / "checks.yaml")
    started = time.monotonic()
    probes.run_round(driver.endpoint(), suite, credentials.resolve(suite), deadline=5.0)
    return time.monotonic() - started


def overhead_per_cluster(wall: float, timeline: Timeline, fleet: Fleet) -> float:
    """Wall time minus each wave's critical path of rollout and verification waits."""
    waits = 0.0
    for wave in fleet.waves:
        waits += max(timeline.entered[(name, "baking")] - timeline.entered[(name, "rolling-out")]
                     for name in wave.clusters)
    return (wall - waits) / len(fleet.clusters)


def main() -> None:
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    for variable in ("LIBRARY_TOKEN_ALICE", "LIBRARY_TOKEN_BOB", "LIBRARY_TOKEN_CAROL"):
        os.environ.setdefault(variable, secrets.token_urlsafe(16))
    app = apps.App.from_folder(REPO / "manifests" / "library-app")
    base = load(REPO / "clusters" / "local.yaml")
    with tempfile.TemporaryDirectory(prefix="wavegate-bench-") as state:
        assert base.local is not None
        fleet = dataclasses.replace(
            base, local=dataclasses.replace(base.local, state_dir=Path(state)),
            waves=tuple(Wave(w.name, w.clusters, w.max_parallel, 0.0) for w in base.waves),
            policy=dataclasses.replace(base.policy, watch=0.0))
        try:
            fleetctl.up(fleet)
            timed_deploy(fleet, app, "1.0.0")
            wall, timeline, _ = timed_deploy(fleet, app, "1.1.0")
            overhead = overhead_per_cluster(wall, timeline, fleet)
            check_round = round_time(fleet, app, "1.1.0")
            _, bad, code = timed_deploy(fleet, app, "2.0.0")
            detection = bad.entered[("prod-0", "failed")] - bad.entered[("prod-0", "verifying")]
        finally:
            fleetctl.down(fleet)
    demo = bench_demo()
    interval = fleet.policy.check_interval
    rows = [
        ("demo wall time", demo, 60.0),
        ("detection latency (serving -> decision)", detection, interval + check_round),
        ("orchestration overhead per cluster", overhead, 0.5),
    ]
    print(f"{'benchmark':<42} {'measured':>10} {'baseline':>10} {'ratio':>7}")
    for name, measured, goal in rows:
        print(f"{name:<42} {measured:>9.3f}s {goal:>9.3f}s {measured / goal:>7.2f}")
    print(f"(2.0.0 deploy exit code {code}; one round of checks {check_round:.3f}s; "
          f"ratio < 1 meets the goal)")


if __name__ == "__main__":
    main()
