"""Checks that would pass having tested nothing are refused before anything is touched.

A matrix without principals or resources sends nothing; a matrix with no allowed pair has no
positive control, so an outage answering 404 to everyone would pass it as a perfect deny; a
checks file with no check and a release with no object prove nothing. Each is bad input:
exit 2, one line naming file, line and field.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wavegate.config import app, checks
from wavegate.config.fleet import Cluster
from wavegate.errors import EXIT_BAD_INPUT, InputError

FILE = Path("/apps/shop/checks.yaml")
MATRIX = """\
principals:
  alice: {token_env: T_ALICE}
  anonymous: {}
checks:
  - name: space access
    authz_matrix:
      principals: [alice, anonymous]
      resources:
        space-eng: {request: GET /api/spaces/space-eng, marker: space-eng}
      allow:
        alice: [space-eng]
"""


def refused(text: str) -> str:
    with pytest.raises(InputError) as caught:
        checks.load(text, FILE)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return str(caught.value)


def test_a_matrix_with_an_allowed_pair_is_accepted() -> None:
    assert len(checks.load(MATRIX, FILE).probes) == 2


@pytest.mark.parametrize(("old", "new", "where", "message"), [
    pytest.param("[alice, anonymous]", "[]", "7: checks[0].authz_matrix.principals",
                 "a matrix needs at least one principal", id="no-principals"),
    pytest.param("      resources:\n        space-eng: {request: GET /api/spaces/space-eng, "
                 "marker: space-eng}\n", "      resources: {}\n",
                 "8: checks[0].authz_matrix.resources", "a matrix needs at least one resource",
                 id="no-resources"),
    pytest.param("alice: [space-eng]", "alice: []", "10: checks[0].authz_matrix.allow",
                 "a matrix needs at least one allowed pair", id="allow-grants-nothing"),
    pytest.param("      allow:\n        alice: [space-eng]\n", "", "6: checks[0].authz_matrix",
                 "a matrix needs at least one allowed pair", id="no-allow"),
    pytest.param("      allow:\n        alice: [space-eng]\n", "      allow: {}\n",
                 "10: checks[0].authz_matrix.allow", "a matrix needs at least one allowed pair",
                 id="empty-allow"),
])
def test_a_matrix_that_cannot_fail_is_refused(old: str, new: str, where: str,
                                              message: str) -> None:
    assert MATRIX.count(old) == 1
    error = refused(MATRIX.replace(old, new))
    assert error.startswith(f"{FILE}:{where}: {message}"), error


@pytest.mark.parametrize(("text", "line"), [("checks: []\n", 1),
                                            ("principals: {}\nchecks: []\n", 2)])
def test_a_checks_file_without_a_probe_is_refused(text: str, line: int) -> None:
    assert refused(text) == f"{FILE}:{line}: checks: a checks file needs at least one check"


def test_a_release_that_renders_to_no_object_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "a.yaml").write_text("# nothing yet\n", encoding="utf-8")
    (folder / "b.yaml").write_text("---\n---\n", encoding="utf-8")
    (folder / "checks.yaml").write_text(MATRIX, encoding="utf-8")
    cluster = Cluster(name="c", region="r", driver="local", namespace="n")
    with pytest.raises(InputError) as caught:
        app.App.from_folder(folder).render(cluster, "1.0.0")
    assert str(caught.value) == (f"{folder}: the release renders to no Kubernetes objects "
                                 "(templates: a.yaml, b.yaml)")


# --- through the CLI --------------------------------------------------------------------------

FLEET = """\
fleet: t
local: {state_dir: state, images: {app: [python]}}
clusters: [{name: a}]
waves: [{name: w, clusters: [a]}]
"""


def deploy_dry_run(root: Path, checks_text: str, template: str) -> subprocess.CompletedProcess[str]:
    folder = root / "shop"
    folder.mkdir()
    (folder / "cm.yaml").write_text(template, encoding="utf-8")
    (folder / "checks.yaml").write_text(checks_text, encoding="utf-8")
    (root / "fleet.yaml").write_text(FLEET, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "wavegate", "deploy", "./shop", "--version",
                           "1.0", "-f", "fleet.yaml", "--dry-run"], cwd=root, text=True,
                          capture_output=True, timeout=120, env={"T_ALICE": "t0ken-Qx9"})


def test_deploy_refuses_a_matrix_without_positive_control(tmp_path: Path) -> None:
    done = deploy_dry_run(tmp_path, MATRIX.replace("alice: [space-eng]", "alice: []"),
                          "kind: ConfigMap\nmetadata: {name: cm}\n")
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip() == (
        "wavegate: shop/checks.yaml:10: checks[0].authz_matrix.allow: a matrix needs at least "
        "one allowed pair under 'allow' (its positive control: without one, an app that "
        "refuses everyone passes)")
    assert not (tmp_path / "state").exists()


def test_deploy_refuses_a_release_with_no_object(tmp_path: Path) -> None:
    done = deploy_dry_run(tmp_path, MATRIX, "# the objects went to another file\n")
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip() == ("wavegate: shop: the release renders to no Kubernetes "
                                   "objects (templates: cm.yaml)")
    assert not (tmp_path / "state").exists()
