"""wavegate on the kube sandbox: emergency rollback against what teams script by hand.

    parallel rollback         `rollback --all` of six clusters over the slowest single
                              cluster's rollback within it                       goal <= 1.3
    against kubectl           `kubectl rollout undo` then `kubectl rollout status`, cluster
                              after cluster, over wavegate's `rollback --all`    goal >= 4
    API requests per deploy   counted per cluster (watches, not polling)

One run, side by side with its baseline; nothing asserts. Run: .venv/bin/python bench/kube.py
(needs the sandbox binaries: make sandbox).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wavegate.clock import SystemClock  # noqa: E402
from wavegate.config import app as apps  # noqa: E402
from wavegate.config.fleet import Fleet, load  # noqa: E402
from wavegate.engine import deploy, rollback  # noqa: E402
from wavegate.engine import session as runs  # noqa: E402
from wavegate.outputs import logs  # noqa: E402
from wavegate.outputs.report import RunReport  # noqa: E402
from wavegate.sandbox import kubefleet  # noqa: E402


def source_fleet(folder: Path) -> Path:
    document = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    document["local"].pop("state_dir")
    for wave in document["waves"]:
        wave["bake"] = "0s"
    document["policy"].update(watch="0s", check_interval="500ms")
    path = folder / "source.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def deploy_everywhere(fleet: Fleet, app: apps.App, version: str) -> dict[str, int]:
    """Deploy; the API calls each cluster's driver made, by kind."""
    prepared = deploy.prepare(fleet, app, version, {})
    report = deploy.new_report(fleet, app, version, runs.new_run_id())
    code = deploy.run(fleet, prepared, run_id=report.run_id, by="bench", clock=SystemClock(),
                      report=report)
    assert code == 0, report.message
    calls: collections.Counter[str] = collections.Counter()
    for target in prepared.targets.values():
        calls.update(target.driver.api.calls)
    return {kind: count // len(prepared.targets) for kind, count in calls.items()}


def wavegate_rollback(fleet: Fleet) -> tuple[float, float]:
    """Wall time of `rollback --all`, and the slowest single cluster's rollback inside it."""
    names = [cluster.name for cluster in fleet.clusters]
    run_id = runs.new_run_id()
    report = rollback.new_report("library-app", names, fleet, run_id, "1.0.0")
    entered: dict[tuple[str, str], float] = {}

    def seen(changed: RunReport) -> None:
        for entry in list(changed.clusters.values()):
            entered.setdefault((entry.cluster, entry.state), time.monotonic())

    report.listen(seen)
    started = time.monotonic()
    code = rollback.run(fleet, runs.connect(runs.drivers_for(fleet, names)), app="library-app",
                        to_version="1.0.0", reason="bench", run_id=run_id, by="bench",
                        clock=SystemClock(), report=report)
    wall = time.monotonic() - started
    assert code == 0, report.message
    slowest = max(entered[(n, "rolled-back")] - entered[(n, "rolling-back")] for n in names)
    return wall, slowest


def kubectl_rollback(fleet: Fleet, kubeconfig: Path) -> float:
    """What teams script by hand: undo, then wait, one cluster after the other."""
    started = time.monotonic()
    for cluster in fleet.clusters:
        base = ["kubectl", "--kubeconfig", str(kubeconfig), "--context", cluster.name,
                "-n", cluster.namespace]
        subprocess.run([*base, "rollout", "undo", "deployment/library-app"], check=True,
                       capture_output=True)
        subprocess.run([*base, "rollout", "status", "deployment/library-app",
                        "--timeout=120s"], check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    for variable in ("LIBRARY_TOKEN_ALICE", "LIBRARY_TOKEN_BOB", "LIBRARY_TOKEN_CAROL"):
        os.environ.setdefault(variable, secrets.token_urlsafe(16))
    app = apps.App.from_folder(REPO / "manifests" / "library-app")
    with tempfile.TemporaryDirectory(prefix="wavegate-kube-bench-") as folder:
        sandbox = Path(folder) / "sandbox"
        kubefleet.up(load(source_fleet(Path(folder))), sandbox)
        try:
            fleet = load(sandbox / "fleet.yaml")
            deploy_everywhere(fleet, app, "1.0.0")
            calls = deploy_everywhere(fleet, app, "1.1.0")
            wall, slowest = wavegate_rollback(fleet)
            deploy_everywhere(fleet, app, "1.1.0")
            admin = dataclasses.replace(fleet)  # kubectl uses the admin contexts
            baseline = kubectl_rollback(admin, sandbox / "kubeconfig")
        finally:
            kubefleet.down(sandbox)
    print(f"{'benchmark':<48} {'wavegate':>9} {'baseline':>9} {'ratio':>7}  goal")
    print(f"{'rollback --all (6) vs slowest single cluster':<48} {wall:>8.2f}s "
          f"{slowest:>8.2f}s {wall / slowest:>7.2f}  <= 1.3")
    print(f"{'kubectl undo+status, serial, vs rollback --all':<48} {wall:>8.2f}s "
          f"{baseline:>8.2f}s {baseline / wall:>7.2f}  >= 4 (x faster)")
    print("API requests per cluster per deploy: "
          + ", ".join(f"{kind} {count}" for kind, count in sorted(calls.items())))


if __name__ == "__main__":
    main()
