"""The ledger on the kube sandbox: status, history and rollback as revisions pile up.

    status      `wavegate status`'s reads of one cluster: the records, and the lock
    history     `wavegate history`'s read: the records
    rollback    what a rollback reads and writes: the records, where to go, that revision's
                manifests, and applying them (a ConfigMap: no pods, so the ledger is measured)

Three apps share one cluster: 10, 100 and 1,000 revisions written through the driver. Each is
timed (best of 7) in interleaved rounds, so a shared machine's load falls on all three alike,
and printed side by side with the 10-revision app as baseline; flat means a ratio near 1 (the
ledger keeps `policy.history` revisions, and lists read metadata only). Nothing asserts. Run:
.venv/bin/python bench/ledger.py (needs the sandbox binaries: make sandbox).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wavegate.config.app import APP_LABEL, MANAGED_BY, Release  # noqa: E402
from wavegate.config.fleet import Cluster  # noqa: E402
from wavegate.decide import ledger  # noqa: E402
from wavegate.decide.ledger import Record, Status  # noqa: E402
from wavegate.drivers.kubernetes import KubernetesDriver  # noqa: E402
from wavegate.outputs import logs  # noqa: E402
from wavegate.sandbox import controlplane  # noqa: E402

HOLDER = "bench-run"
SIZES = (10, 100, 1000)
ROUNDS = 7
Timings = dict[str, list[float]]


def app_of(size: int) -> str:
    return f"bench-{size}"


def release(app: str, version: str) -> Release:
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": app, "namespace": "default",
                           "labels": {APP_LABEL: app, MANAGED_BY: "wavegate"}},
              "data": {"VERSION": version, "padding": "x" * 4096}}
    return Release(app=app, version=version, manifests=(config,), checks="checks: []\n")


def write_revisions(driver: KubernetesDriver, app: str, until: int) -> None:
    """Revisions up to `until`, verified releases, as a busy team's ledger."""
    for revision in range(ledger.next_revision(driver.records(app)), until + 1):
        version = f"1.{revision}.0"
        record = Record(app=app, cluster="a", revision=revision, version=version,
                        status=Status.VERIFIED, run_id=HOLDER, by="bench",
                        started_at=ledger.now(), finished_at=ledger.now())
        driver.create_record(record, release(app, version), holder=HOLDER)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def rollback(driver: KubernetesDriver, app: str) -> None:
    target = ledger.rollback_target(driver.records(app))
    assert target is not None
    driver.apply(driver.stored_release(target), holder=HOLDER)


def measure_round(driver: KubernetesDriver, times: dict[int, Timings]) -> None:
    """One timing of each operation for every app, one app after the other."""
    for size in SIZES:
        row = times.setdefault(size, {"status": [], "history": [], "rollback": []})
        for name, took in time_once(driver, app_of(size)).items():
            row[name].append(took)


def time_once(driver: KubernetesDriver, app: str) -> dict[str, float]:
    return {"status": timed(lambda: (driver.records(app), driver.read_lock(app))),
            "history": timed(lambda: driver.records(app)),
            "rollback": timed(lambda: rollback(driver, app))}


def main() -> None:
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    bin_dir = controlplane.find_binaries()
    if bin_dir is None:
        sys.exit("kube binaries not built; run scripts/build-kube-sandbox.sh")
    times: dict[int, Timings] = {}
    kept: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="wavegate-ledger-bench-") as folder:
        sandbox = controlplane.up(clusters=["a"], dir=Path(folder), bin_dir=bin_dir)
        cluster = Cluster(name="a", region="local", driver="kubernetes", namespace="default",
                          context="a", endpoint="http://127.0.0.1:9",
                          kubeconfig=sandbox.kubeconfig)
        driver = KubernetesDriver(cluster)
        try:
            for size in SIZES:
                app = app_of(size)
                driver.acquire_lock(app, holder=HOLDER, ttl=3600)
                write_revisions(driver, app, size)
                driver.apply(release(app, f"1.{size}.0"), holder=HOLDER)
                kept[size] = len(driver.records(app))
            for _ in range(ROUNDS):
                measure_round(driver, times)
        finally:
            driver.close()
            controlplane.down(Path(folder))
    results = {size: {k: min(v) for k, v in row.items()} for size, row in times.items()}
    base = results[SIZES[0]]
    print(f"{'revisions written':<20} {'kept':>5} {'status':>9} {'history':>9} {'rollback':>9}"
          "   ratios to 10 (goal: ~1, flat)")
    for size, row in results.items():
        ratios = " ".join(f"{row[k] / base[k]:.2f}" for k in ("status", "history", "rollback"))
        print(f"{size:<20} {kept[size]:>5} {row['status'] * 1000:>7.1f}ms "
              f"{row['history'] * 1000:>7.1f}ms {row['rollback'] * 1000:>7.1f}ms   {ratios}")


if __name__ == "__main__":
    main()
