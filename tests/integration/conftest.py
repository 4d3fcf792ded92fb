"""A private local fleet of six clusters per test: real agents, pods and HTTP on loopback."""

from __future__ import annotations

import contextlib
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
import yaml

from tests.waits import eventually

REPO = Path(__file__).parents[2]
TOKENS = {"LIBRARY_TOKEN_ALICE": "itest-alice-Zq81x", "LIBRARY_TOKEN_BOB": "itest-bob-Kd72m",
          "LIBRARY_TOKEN_CAROL": "itest-carol-Pw55r"}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class LocalFleet:
    """One test's fleet: its file, its state folder, and a CLI to drive it."""

    root: Path
    fleet_file: Path
    env: dict[str, str]
    outputs: list[str]

    def wavegate(self, *args: str, timeout: float = 120) -> Result:
        done = subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        self.outputs += [done.stdout, done.stderr]
        return Result(done.returncode, done.stdout, done.stderr)

    def deploy(self, app: str, version: str, *extra: str) -> Result:
        return self.wavegate("deploy", app, "--version", version, "-f", str(self.fleet_file),
                             *extra)

    def status(self) -> dict[str, dict[str, Any]]:
        result = self.wavegate("status", "library-app", "-f", str(self.fleet_file), "-o", "json")
        return {row["cluster"]: row for row in result.json()["clusters"]}

    def history(self, *extra: str) -> list[dict[str, Any]]:
        result = self.wavegate("history", "library-app", "-f", str(self.fleet_file), "-o",
                               "json", *extra)
        return list(result.json()["records"])

    def wait_for_state(self, cluster: str, state: str, timeout: float = 60) -> str:
        """The run id once the running deploy's journal shows `cluster` in `state`."""
        return eventually(lambda: self._run_in_state(cluster, state), timeout=timeout,
                          every=0.05)

    def _run_in_state(self, cluster: str, state: str) -> str | None:
        runs = self.root / ".wavegate" / "runs"
        for journal in runs.glob("*.json") if runs.is_dir() else []:
            with contextlib.suppress(ValueError, KeyError):  # being rewritten
                data = json.loads(journal.read_text())
                entry = next((c for c in data["clusters"] if c["cluster"] == cluster), None)
                if data.get("outcome") is None and entry and entry["state"] == state:
                    return str(data["run_id"])
        return None

    def set_values(self, cluster: str, **values: str) -> None:
        document = yaml.safe_load(self.fleet_file.read_text())
        for entry in document["clusters"]:
            if entry["name"] == cluster:
                entry["values"] = {**entry.get("values", {}), **values}
        self.fleet_file.write_text(yaml.safe_dump(document))

    def edit(self, *, policy: dict[str, Any] | None = None,
             bake: dict[str, str] | None = None) -> None:
        """Change the fleet file's policy fields and waves' bakes (by wave name)."""
        document = yaml.safe_load(self.fleet_file.read_text())
        document["policy"].update(policy or {})
        for wave in document["waves"]:
            wave["bake"] = (bake or {}).get(wave["name"], wave["bake"])
        self.fleet_file.write_text(yaml.safe_dump(document))

    def app_variant(self, name: str, *, configmap_extra: dict[str, str]) -> Path:
        """A copy of manifests/library-app (same app name) with extra ConfigMap entries."""
        folder = self.root / name / "library-app"
        shutil.copytree(REPO / "manifests" / "library-app", folder)
        configmap = folder / "configmap.yaml"
        extra = "".join(f'  {key}: "{value}"\n' for key, value in configmap_extra.items())
        configmap.write_text(configmap.read_text() + extra)  # `data:` is the file's last key
        return folder


def fleet_document(state_dir: Path) -> dict[str, Any]:
    document = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    document["local"]["state_dir"] = str(state_dir)
    document["defaults"]["values"] = {"replicas": 3, "leak": "", "fault": ""}
    for wave, bake in zip(document["waves"], ("1s", "500ms", "500ms"), strict=True):
        wave["bake"] = bake
    document["policy"].update(check_interval="500ms", check_timeout="3s", watch="0s",
                              rollout_timeout="30s")
    return document


@pytest.fixture
def local_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet_document(tmp_path / "state")))
    env = {**os.environ, **TOKENS, "PYTHONPATH": str(REPO / "src")}
    env.pop("WAVEGATE_FLEET", None)
    fleet = LocalFleet(tmp_path, fleet_file, env, [])
    (tmp_path / "manifests").symlink_to(REPO / "manifests")
    yield fleet
    fleet.wavegate("fleet", "down", "-f", str(fleet_file))
