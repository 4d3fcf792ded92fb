"""The ledger on the kube sandbox: status, history and rollback as revisions pile up.

    status      `wavegate status`'s reads of one cluster: the records, and the lock
    history     `wavegate history`'s read: the records
    rollback    what a rollback reads and writes: the records, where to go, that revision's
                manifests, and applying them (a ConfigMap: no pods, so the ledger is measured)

Each is timed (best of 5) after 10, 100 and 1,000 revisions were written through the driver,
side by side with the 10-revision baseline; flat means a ratio near 1 (the ledger keeps
`policy.history` revisions, and lists read metadata only). Nothing asserts. Run:
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

APP = "bench"
HOLDER = "bench-run"
SIZES = (10, 100, 1000)


def release(version: str) -> Release:
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "bench", "namespace": "default",
                           "labels": {APP_LABEL: APP, MANAGED_BY: "wavegate"}},
              "data": {"VERSION": version, "padding": "x" * 4096}}
    return Release(app=APP, version=version, manifests=(config,), checks="checks: []\n")


def write_revisions(driver: KubernetesDriver, until: int) -> None:
    """Revisions up to `until`, alternating verified releases, as a busy team's ledger."""
    records = driver.records(APP)
    for revision in range(ledger.next_revision(records), until + 1):
        version = f"1.{revision}.0"
        record = Record(app=APP, cluster="a", revision=revision, version=version,
                        status=Status.VERIFIED, run_id=HOLDER, by="bench",
                        started_at=ledger.now(), finished_at=ledger.now())
        driver.create_record(record, release(version), holder=HOLDER)


def best(action: Callable[[], object]) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def rollback(driver: KubernetesDriver) -> None:
    records = driver.records(APP)
    target = ledger.rollback_target(records)
    assert target is not None
    driver.apply(driver.stored_release(target), holder=HOLDER)


def main() -> None:
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    bin_dir = controlplane.find_binaries()
    if bin_dir is None:
        sys.exit("kube binaries not built; run scripts/build-kube-sandbox.sh")
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="wavegate-ledger-bench-") as folder:
        sandbox = controlplane.up(clusters=["a"], dir=Path(folder), bin_dir=bin_dir)
        cluster = Cluster(name="a", region="local", driver="kubernetes", namespace="default",
                          context="a", endpoint="http://127.0.0.1:9",
                          kubeconfig=sandbox.kubeconfig)
        driver = KubernetesDriver(cluster)
        try:
            driver.acquire_lock(APP, holder=HOLDER, ttl=3600)
            for size in SIZES:
                write_revisions(driver, size)
                driver.apply(release(f"1.{size}.0"), holder=HOLDER)
                kept = len(driver.records(APP))
                results[size] = {
                    "status": best(lambda: (driver.records(APP), driver.read_lock(APP))),
                    "history": best(lambda: driver.records(APP)),
                    "rollback": best(lambda: rollback(driver)),
                    "kept": kept}
        finally:
            driver.close()
            controlplane.down(Path(folder))
    base = results[SIZES[0]]
    print(f"{'revisions written':<20} {'kept':>5} {'status':>9} {'history':>9} {'rollback':>9}"
          "   ratios to 10 (goal: ~1, flat)")
    for size, row in results.items():
        ratios = " ".join(f"{row[k] / base[k]:.2f}" for k in ("status", "history", "rollback"))
        print(f"{size:<20} {int(row['kept']):>5} {row['status'] * 1000:>7.1f}ms "
              f"{row['history'] * 1000:>7.1f}ms {row['rollback'] * 1000:>7.1f}ms   {ratios}")


if __name__ == "__main__":
    main()
