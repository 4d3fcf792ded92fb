"""The kube sandbox's deployer role: shipped with wavegate, and a bad `--rbac` is refused.

Started from a folder of one's own (no manifests/ there), `fleet up --kube` used to skip the
role in silence, and every later deploy through the deployer context then exited 3 with
"forbidden". These run before any control plane starts, so they need no sandbox binaries.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from wavegate.cli import main
from wavegate.config import bundled
from wavegate.config.fleet import load
from wavegate.sandbox import kubefleet

FLEET = """\
fleet: solo
defaults: {driver: local, namespace: library}
local:
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
clusters: [{name: solo-0, region: westeurope}]
waves: [{name: all, clusters: [solo-0]}]
"""


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's own project folder: a fleet file, and no manifests/ beside it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fleet.yaml").write_text(FLEET)
    return tmp_path


def _fleet_up(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["fleet", "up", "--kube", "-f", "fleet.yaml",
                                       "--dir", "sandbox", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("make", [
    pytest.param(lambda folder: folder / "missing.yaml", id="missing"),
    pytest.param(lambda folder: folder, id="a-folder"),
    pytest.param(lambda folder: _write(folder / "latin1.yaml", b"kind: R\xf4le\n"), id="not-utf8"),
])
def test_an_rbac_file_that_cannot_be_read_is_bad_input_and_starts_nothing(
        elsewhere: Path, make: object) -> None:
    path = make(elsewhere)  # type: ignore[operator]
    code, output = _fleet_up("--rbac", str(path))
    assert code == 2, output
    assert f"{path}: cannot read the deployer RBAC file" in output
    assert "Traceback" not in output
    assert not (elsewhere / "sandbox").exists()


def test_rbac_without_kube_is_refused(elsewhere: Path) -> None:
    result = CliRunner().invoke(main, ["fleet", "up", "-f", "fleet.yaml", "--rbac", "x.yaml"])
    assert result.exit_code == 2
    assert "--rbac is for the kube sandbox" in result.output


def test_from_any_folder_the_deployer_gets_the_role_wavegate_ships(elsewhere: Path) -> None:
    shipped = yaml.safe_load_all(bundled.rbac_file().read_text())
    roles = {d["metadata"]["name"] for d in shipped if d and d["kind"] == "Role"}
    cluster = load(elsewhere / "fleet.yaml").clusters[0]
    objects = kubefleet._rbac(bundled.rbac_file(), cluster)
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert roles and {o["metadata"]["name"] for o in objects if o["kind"] == "Role"} == roles
    assert all({"kind": "User", "name": "deployer", "apiGroup": "rbac.authorization.k8s.io"}
               in b["subjects"] for b in bindings) and bindings


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
