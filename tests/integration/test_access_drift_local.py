"""Access drift on the local fleet of six: leaks nobody wrote a check for, caught by comparing
the new release with the one live before it.

The checks file here has no matrix and no `json_ids`: only the version check and one
`access_drift` check, so whatever is caught, access drift caught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LocalFleet

pytestmark = pytest.mark.integration
FAULTY = {"LIBRARY_LEAK": "${leak}", "LIBRARY_FAIL": "${fault}"}
DRIFT_ONLY = """\
principals:
  alice:     {token_env: LIBRARY_TOKEN_ALICE}
  bob:       {token_env: LIBRARY_TOKEN_BOB}
  carol:     {token_env: LIBRARY_TOKEN_CAROL}
  anonymous: {}
checks:
  - name: serving the new version
    request: GET /version
    expect: {status: 200, json: {version: "${version}"}}
  - name: no principal gains access
    SAMPLES
    access_drift:
      principals: [alice, bob, carol, anonymous]
      requests:
        spaces: {request: GET /api/spaces, ids: "$.spaces[*].id", read: "GET /api/spaces/{id}"}
        search: {request: {path: /api/search, query: {q: space}}, ids: "$.spaces[*].id"}
      allow_new: ALLOW_NEW
"""
SPACES = ("space-eng", "space-finance", "space-hr")
LEAKY_REPLICA = """\
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: library-app-leaky
  labels: {app: library-app}
spec:
  replicas: 1
  selector:
    matchLabels: {app: library-app, track: leaky}
  template:
    metadata:
      labels: {app: library-app, track: leaky}
    spec:
      containers:
        - name: library-app
          image: library-app:${version}
          ports:
            - {name: http, containerPort: 8080, protocol: TCP}
          envFrom:
            - configMapRef: {name: library-app}
          env:
            - {name: LIBRARY_LEAK, value: search}
            - name: LIBRARY_TOKEN_ALICE
              valueFrom: {secretKeyRef: {name: library-tokens, key: alice}}
            - name: LIBRARY_TOKEN_BOB
              valueFrom: {secretKeyRef: {name: library-tokens, key: bob}}
            - name: LIBRARY_TOKEN_CAROL
              valueFrom: {secretKeyRef: {name: library-tokens, key: carol}}
          readinessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 1
"""


def drift_only(fleet: LocalFleet, name: str, *, allow_new: str = "{}", samples: int = 1,
               extra: str = "") -> Path:
    """library-app whose checks are the version check and access_drift, nothing else."""
    folder = fleet.app_variant(name, configmap_extra=FAULTY)
    text = DRIFT_ONLY.replace("ALLOW_NEW", allow_new).replace(
        "SAMPLES", f"samples: {samples}")
    (folder / "checks.yaml").write_text(text)
    if extra:
        (folder / "leaky-replica.yaml").write_text(extra)
    return folder


def deployed(fleet: LocalFleet, folder: Path, version: str, report: Path,
             *extra: str) -> tuple[int, dict[str, Any]]:
    result = fleet.deploy(str(folder), version, "--report", str(report), *extra)
    return result.code, json.loads(report.read_text())


def drift_results(report: dict[str, Any], cluster: str) -> list[dict[str, Any]]:
    entry = next(c for c in report["clusters"] if c["cluster"] == cluster)
    return [c for c in entry["checks"] if c["name"] == "no principal gains access"]


def versions_on(fleet: LocalFleet) -> set[str | None]:
    return {row["live_version"] for row in fleet.status().values()}


def ever_ran(fleet: LocalFleet, version: str) -> set[str]:
    return {r["cluster"] for r in fleet.history() if r["version"] == version}


@pytest.mark.parametrize(("leak", "principal", "asked", "shows"), [
    ("list-only", "alice", "GET /api/spaces", "space-finance"),
    ("search", "bob", "GET /api/search?q=space", "space-eng"),
    ("bob-reads", "bob", "GET /api/spaces/{id}", "space-eng"),
])
def test_a_leak_nobody_wrote_a_check_for_is_caught_by_access_drift_alone(
        local_fleet: LocalFleet, tmp_path: Path, leak: str, principal: str, asked: str,
        shows: str) -> None:
    folder = drift_only(local_fleet, "drift")
    code, first = deployed(local_fleet, folder, "1.0.0", tmp_path / "first.json",
                           "--set", "leak=", "--set", "fault=")
    assert code == 0
    # Nothing was live: the check passed, and the report says why it compared nothing.
    assert all(r["outcome"] == "pass" and "nothing was live" in r["detail"]
               for r in drift_results(first, "prod-0"))

    code, report = deployed(local_fleet, folder, "1.1.0", tmp_path / "leak.json",
                            "--set", f"leak={leak}", "--set", "fault=")
    assert code == 1
    failed = [r for r in drift_results(report, "prod-0") if r["outcome"] == "fail"]
    assert any(r["severity"] == "security" and r["principal"] == principal
               and r["request"] == asked and shows in r["detail"] and "1.0.0" in r["detail"]
               for r in failed), failed
    assert ever_ran(local_fleet, "1.1.0") == {"prod-0"}
    assert versions_on(local_fleet) == {"1.0.0"}
    # The baseline kept with the run holds fingerprints, never an id.
    kept = json.dumps(report["baselines"])
    assert "prod-0" in report["baselines"] and not any(space in kept for space in SPACES)


def test_no_change_in_access_passes_and_a_grant_allow_new_names_passes(
        local_fleet: LocalFleet, tmp_path: Path) -> None:
    folder = drift_only(local_fleet, "same")
    assert local_fleet.deploy(str(folder), "1.0.0", "--set", "leak=", "--set",
                              "fault=").code == 0
    code, report = deployed(local_fleet, folder, "1.1.0", tmp_path / "same.json",
                            "--set", "leak=", "--set", "fault=")
    assert code == 0
    results = drift_results(report, "prod-5")
    assert results and all(r["outcome"] == "pass" for r in results)
    assert any("none new since 1.0.0" in r["detail"] for r in results)

    # bob-only: bob now sees every space; this release says that is intended.
    granted = drift_only(local_fleet, "granted",
                         allow_new="{bob: [space-eng, space-hr]}")
    code, report = deployed(local_fleet, granted, "1.2.0", tmp_path / "granted.json",
                            "--set", "leak=bob-only", "--set", "fault=")
    assert code == 0, report["message"]
    assert versions_on(local_fleet) == {"1.2.0"}


def test_a_leak_on_one_replica_of_three_is_caught_with_samples(
        local_fleet: LocalFleet, tmp_path: Path) -> None:
    assert local_fleet.deploy("library-app", "1.0.0", "--set", "replicas=3").code == 0
    # Two good replicas and one that leaks through search, behind the same Service.
    folder = drift_only(local_fleet, "one-of-three", samples=6, extra=LEAKY_REPLICA)
    code, report = deployed(local_fleet, folder, "1.1.0", tmp_path / "replica.json",
                            "--set", "replicas=2", "--set", "leak=", "--set", "fault=")
    assert code == 1
    failed = [r for r in drift_results(report, "prod-0") if r["outcome"] == "fail"]
    assert failed and all(r["request"] == "GET /api/search?q=space" for r in failed), failed
    assert ever_ran(local_fleet, "1.1.0") == {"prod-0"}
    assert versions_on(local_fleet) == {"1.0.0"}
