"""Apps that are not wavegate templates, deployed to the local fleet of six through the CLI: a
kustomization with a per-cluster overlay, and a chart-like render command.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import LocalFleet
from wavegate import drivers
from wavegate.config import fleet as fleets

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "apps"
LEAKY_OVERLAY = """\
resources: [../../base]
patches:
  - target: {kind: ConfigMap, name: library-app}
    patch: |
      - op: add
        path: /data/LIBRARY_LEAK
        value: list-only
"""


def versions_on(fleet: LocalFleet) -> dict[str, str | None]:
    return {name: row["live_version"] for name, row in fleet.status().items()}


def live_replicas(fleet: LocalFleet) -> dict[str, int]:
    """What each cluster's ledger holds as the live Deployment's replicas."""
    loaded = fleets.load(fleet.fleet_file)
    replicas = {}
    for cluster in loaded.clusters:
        driver = drivers.for_cluster(loaded, cluster)
        record = driver.records("library-app")[-1]
        release = driver.stored_release(record)
        deployment = next(m for m in release.manifests if m["kind"] == "Deployment")
        replicas[cluster.name] = deployment["spec"]["replicas"]
    return replicas


@pytest.fixture
def kustomize_app(local_fleet: LocalFleet) -> Path:
    if shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        pytest.skip("neither kubectl nor kustomize is installed")
    folder = local_fleet.root / "kustomize" / "library-app"
    shutil.copytree(DATA / "kustomize" / "library-app", folder)
    return folder


def test_a_kustomization_rolls_out_with_its_overlay_and_filled_version(
        local_fleet: LocalFleet, kustomize_app: Path) -> None:
    result = local_fleet.deploy(str(kustomize_app), "1.0.0")
    assert result.code == 0, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}  # the checks saw /version
    replicas = live_replicas(local_fleet)
    assert replicas.pop("prod-3") == 1 and set(replicas.values()) == {3}


def test_an_overlay_that_leaks_is_stopped_on_its_own_cluster(
        local_fleet: LocalFleet, kustomize_app: Path) -> None:
    assert local_fleet.deploy(str(kustomize_app), "1.0.0").code == 0
    overlay = kustomize_app / "overlays" / "prod-0"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(LEAKY_OVERLAY)
    result = local_fleet.deploy(str(kustomize_app), "1.1.0")
    assert result.code == 1, result.stderr
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert {r["cluster"] for r in local_fleet.history() if r["version"] == "1.1.0"} == {"prod-0"}


def test_a_render_command_rolls_out_and_its_failure_touches_nothing(
        local_fleet: LocalFleet) -> None:
    folder = DATA / "render" / "library-app"
    failed = local_fleet.deploy(str(folder), "1.0.0", "--set", "fault=render-fails")
    assert failed.code == 2
    assert "render.py prod-0 1.0.0 render-fails` failed (exit 1)" in failed.stderr
    assert 'function "nope" not defined' in failed.stderr
    assert "Traceback" not in failed.stderr
    assert set(versions_on(local_fleet).values()) == {None}

    result = local_fleet.deploy(str(folder), "2.1.0")
    assert result.code == 0, result.stderr
    assert set(versions_on(local_fleet).values()) == {"2.1.0"}
    assert set(live_replicas(local_fleet).values()) == {2}
