"""What access drift costs, on the local fleet of six.

    probes per principal and request    one per listing, one per id read (read requests)
    baseline rounds per cluster         requests sent to take the baseline, in rounds of
                                        access-drift probes                   goal <= 1
    deploy wall time, with / without    a fleet-wide deploy of library-app with its
                                        access_drift check and without it

Every probe a run sends is counted per cluster, as it leaves (the probes module's one send
seam is wrapped here). One run side by side; nothing asserts (shared machines are noisy).
Run: .venv/bin/python bench/drift.py
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wavegate.clock import SystemClock  # noqa: E402
from wavegate.config import app as apps  # noqa: E402
from wavegate.config import checks  # noqa: E402
from wavegate.config.checks import Unchanged  # noqa: E402
from wavegate.config.fleet import Fleet, Wave, load  # noqa: E402
from wavegate.decide import drift  # noqa: E402
from wavegate.engine import deploy, probes  # noqa: E402
from wavegate.engine import local_fleet as fleetctl  # noqa: E402
from wavegate.engine import session as runs  # noqa: E402
from wavegate.outputs import logs  # noqa: E402

DRIFT_CHECK = re.compile(r"\n  - name: no principal gains access.*", re.DOTALL)


class Counted:
    """Probes sent, by (endpoint, kind): `baseline`, `drift` (after the change) or `check`."""

    def __init__(self) -> None:
        self.sent: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._send = probes._exchange

    def __enter__(self) -> Counted:
        probes._exchange = self._exchange  # type: ignore[assignment]
        return self

    def __exit__(self, *_: object) -> None:
        probes._exchange = self._send  # type: ignore[assignment]

    def _exchange(self, client: Any, probe: Any, token: Any, limits: Any) -> Any:
        expectation = probe.expectation
        kind = "check" if not isinstance(expectation, Unchanged) else \
            "baseline" if expectation.note == drift.TAKING else "drift"
        with self._lock:
            self.sent[(str(client.base_url), kind)] += 1
        return self._send(client, probe, token, limits)

    def per_cluster(self, kind: str) -> list[int]:
        return [count for (_, sent_kind), count in self.sent.items() if sent_kind == kind]


def deployed(fleet: Fleet, app: apps.App, version: str) -> tuple[float, int]:
    report = deploy.new_report(fleet, app, version, runs.new_run_id())
    prepared = deploy.prepare(fleet, app, version, {})
    started = time.monotonic()
    code = deploy.run(fleet, prepared, run_id=report.run_id, by="bench", clock=SystemClock(),
                      report=report)
    return time.monotonic() - started, code


def without_drift(folder: Path) -> apps.App:
    """library-app with its access_drift check taken out (it is the file's last check)."""
    shutil.copytree(REPO / "manifests" / "library-app", folder)
    checks = folder / "checks.yaml"
    checks.write_text(DRIFT_CHECK.sub("\n", checks.read_text()))
    return apps.App.from_folder(folder)


def per_round(app: apps.App) -> tuple[int, int, int, int]:
    """(principals, requests, ids read per read request, drift probes per round)."""
    release = app.render(load(REPO / "clusters" / "local.yaml").cluster("prod-0"), "1.0.0")
    suite = checks.load(release.checks, app.path / "checks.yaml")
    (check,) = suite.drifts
    ids = 3  # library_app's three spaces; at most max_ids
    reads = sum(1 for asked in check.requests if asked.read is not None)
    principals, requests = len(check.principals), len(check.requests)
    return principals, requests, ids, principals * (requests + reads * ids)


def main() -> None:
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    for variable in ("LIBRARY_TOKEN_ALICE", "LIBRARY_TOKEN_BOB", "LIBRARY_TOKEN_CAROL"):
        os.environ.setdefault(variable, secrets.token_urlsafe(16))
    app = apps.App.from_folder(REPO / "manifests" / "library-app")
    base = load(REPO / "clusters" / "local.yaml")
    assert base.local is not None
    with tempfile.TemporaryDirectory(prefix="wavegate-bench-drift-") as state:
        plain = without_drift(Path(state) / "plain" / "library-app")
        fleet = dataclasses.replace(
            base, local=dataclasses.replace(base.local, state_dir=Path(state) / "fleet"),
            waves=tuple(Wave(w.name, w.clusters, w.max_parallel, 0.0) for w in base.waves),
            policy=dataclasses.replace(base.policy, watch=0.0))
        try:
            fleetctl.up(fleet)
            deployed(fleet, app, "1.0.0")
            with Counted() as counted:
                with_wall, with_code = deployed(fleet, app, "1.1.0")
            without_wall, without_code = deployed(fleet, plain, "1.2.0")
        finally:
            fleetctl.down(fleet)
    principals, requests, ids, drift_round = per_round(app)
    baseline = counted.per_cluster("baseline")
    print(f"access_drift of library-app: {principals} principals x {requests} requests, "
          f"{ids} ids read")
    print(f"probes per principal and request: 1 per listing, {ids} per read request; "
          f"{drift_round} access-drift probes per round (x samples)")
    print(f"{'benchmark':<42} {'measured':>10} {'goal':>10} {'ratio':>7}")
    rounds = max(baseline, default=0) / drift_round
    print(f"{'baseline rounds per cluster (worst)':<42} {rounds:>10.2f} {1.0:>10.2f} "
          f"{rounds:>7.2f}")
    print(f"{'deploy wall time with access drift':<42} {with_wall:>9.2f}s {without_wall:>9.2f}s "
          f"{with_wall / without_wall:>7.2f}")
    print(f"(clusters with a baseline: {len(baseline)}; deploy exit codes {with_code} with, "
          f"{without_code} without; the goal of the wall time is the deploy without it)")


if __name__ == "__main__":
    main()
