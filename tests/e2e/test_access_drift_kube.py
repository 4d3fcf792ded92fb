"""Access drift on a real Kubernetes control plane (the kube sandbox), through the CLI.

The same proofs as on the local fleet: a list-only, a search-only and a direct-read leak for
one principal are caught by an `access_drift` check alone (no matrix, no `json_ids`); a
release with no change in access passes, as does one whose new grant `allow_new` names; a
leak on one replica of three is caught with `samples`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import sandbox_binaries
from tests.integration.test_access_drift_local import DRIFT_ONLY, FAULTY, LEAKY_REPLICA
from wavegate.config import fleet
from wavegate.sandbox import kubefleet

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"LIBRARY_TOKEN_ALICE": "drift-alice-4Rt", "LIBRARY_TOKEN_BOB": "drift-bob-8Jm",
          "LIBRARY_TOKEN_CAROL": "drift-carol-2Hx"}
SOLO = """\
fleet: solo
defaults: {namespace: library, values: {replicas: 3, leak: "", fault: ""}}
local:
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
  secrets: {library-tokens: {alice: {env: LIBRARY_TOKEN_ALICE}, bob: {env: LIBRARY_TOKEN_BOB},
                             carol: {env: LIBRARY_TOKEN_CAROL}}}
clusters: [{name: solo}]
waves: [{name: all, clusters: [solo], bake: 1s}]
policy: {check_interval: 500ms, watch: 0s, rollout_timeout: 60s}
"""


@dataclass
class Solo:
    dir: Path
    env: dict[str, str]
    apps: Path

    def app(self, name: str, *, allow_new: str = "{}", samples: int = 1,
            extra: str = "") -> Path:
        """library-app checked by the version check and access_drift, nothing else."""
        folder = self.apps / name / "library-app"
        if not folder.exists():
            shutil.copytree(REPO / "manifests" / "library-app", folder)
            configmap = folder / "configmap.yaml"
            configmap.write_text(configmap.read_text() + "".join(
                f'  {key}: "{value}"\n' for key, value in FAULTY.items()))
            (folder / "checks.yaml").write_text(DRIFT_ONLY.replace("ALLOW_NEW", allow_new)
                                                .replace("SAMPLES", f"samples: {samples}"))
            if extra:
                (folder / "leaky-replica.yaml").write_text(extra)
        return folder

    def back_to(self, version: str) -> None:
        """An emergency rollback: whatever the last test left live, `version` is live now."""
        done = subprocess.run(
            [sys.executable, "-m", "wavegate", "rollback", "library-app", "--all", "--to",
             version, "--reason", "next test", "-f", str(self.dir / "fleet.yaml")],
            cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr

    def deploy(self, app: Path, version: str, *values: str) -> tuple[int, dict[str, Any]]:
        report = self.dir / f"report-{app.parent.name}-{version}.json"
        sets = [arg for value in values for arg in ("--set", value)]
        done = subprocess.run(
            [sys.executable, "-m", "wavegate", "deploy", str(app), "--version", version,
             "-f", str(self.dir / "fleet.yaml"), "--report", str(report), *sets],
            cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=240)
        return done.returncode, json.loads(report.read_text())


def drift_results(report: dict[str, Any]) -> list[dict[str, Any]]:
    (entry,) = report["clusters"]
    return [c for c in entry["checks"] if c["name"] == "no principal gains access"]


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Solo]:
    sandbox_binaries()
    root = tmp_path_factory.mktemp("drift")
    (root / "in").mkdir()
    (root / "in" / "fleet.yaml").write_text(SOLO)
    with pytest.MonkeyPatch.context() as env:
        for name, value in TOKENS.items():
            env.setenv(name, value)
        kubefleet.up(fleet.load(root / "in" / "fleet.yaml"), root / "kube",
                     rbac=REPO / "manifests" / "rbac" / "deployer.yaml")
    try:
        yield Solo(root / "kube", {**os.environ, **TOKENS, "PYTHONPATH": str(REPO / "src")},
                   root / "apps")
    finally:
        kubefleet.down(root / "kube")


@pytest.mark.parametrize(("leak", "principal", "asked", "shows"), [
    ("list-only", "alice", "GET /api/spaces", "space-finance"),
    ("search", "bob", "GET /api/search?q=space", "space-eng"),
    ("bob-reads", "bob", "GET /api/spaces/{id}", "space-eng"),
])
def test_a_leak_nobody_wrote_a_check_for_is_caught_on_kubernetes(
        solo: Solo, leak: str, principal: str, asked: str, shows: str) -> None:
    app = solo.app("drift")
    assert solo.deploy(app, "1.0.0", "leak=")[0] == 0
    code, report = solo.deploy(app, "1.1.0", f"leak={leak}")
    assert code == 1
    failed = [r for r in drift_results(report) if r["outcome"] == "fail"]
    assert any(r["severity"] == "security" and r["principal"] == principal
               and r["request"] == asked and shows in r["detail"] and "1.0.0" in r["detail"]
               for r in failed), failed
    assert report["clusters"][0]["state"] == "rolled-back"


def test_no_change_in_access_and_a_grant_allow_new_names_pass_on_kubernetes(
        solo: Solo) -> None:
    app = solo.app("drift")
    assert solo.deploy(app, "1.0.0", "leak=")[0] == 0
    code, report = solo.deploy(app, "1.1.0", "leak=")
    assert code == 0 and all(r["outcome"] == "pass" for r in drift_results(report))
    granted = solo.app("granted", allow_new="{bob: [space-eng, space-hr]}")
    code, report = solo.deploy(granted, "1.2.0", "leak=bob-only")
    assert code == 0, report["message"]


def test_a_leak_on_one_replica_of_three_is_caught_with_samples_on_kubernetes(
        solo: Solo) -> None:
    solo.back_to("1.0.0")  # the test before left a release that grants bob more
    app = solo.app("one-of-three", samples=6, extra=LEAKY_REPLICA)
    code, report = solo.deploy(app, "1.1.0", "replicas=2", "leak=")
    assert code == 1
    failed = [r for r in drift_results(report) if r["outcome"] == "fail"]
    assert failed and all(r["request"] == "GET /api/search?q=space" for r in failed), failed
