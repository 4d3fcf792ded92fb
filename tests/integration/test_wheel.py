"""The wheel as a user gets it: built once, installed alone in a clean venv, run with no checkout.

What a user of the wheel relies on: its metadata is complete; `wavegate demo` works from any
folder (the Library App, its manifests and the local fleet file come with the package); and the
GitHub Action's own `run:` steps install that wheel and deploy, leaving the report, the JUnit
file, the step summary and the outputs a workflow reads. The steps run in bash exactly as the
action writes them, with `${{ inputs.* }}` filled in; no GitHub is involved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import TOKENS, fleet_document

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build`, once: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    return next(dist.glob("wavegate-*.whl"))


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with nothing but the wheel (and what it depends on) installed."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with only the clean venv: no checkout on any path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "WAVEGATE_FLEET")
           and not k.startswith("LIBRARY_TOKEN_") and not k.startswith("GITHUB_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return {**env, **extra}


def test_the_metadata_is_complete(dist: Path, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist()
                        if n.endswith(".dist-info/METADATA"))
        names = archive.namelist()
    for field in ("License-Expression: Apache-2.0", "Project-URL: Homepage",
                  "Project-URL: Issues", "Classifier: Programming Language :: Python :: 3.11",
                  "Description-Content-Type: text/markdown", "Requires-Dist: kubernetes"):
        assert field in metadata, field
    assert "Roll a release out to a fleet of Kubernetes clusters" in metadata  # the README
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "library_app/__main__.py" in names
    sdist = next(dist.glob("wavegate-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        members = {m.split("/", 1)[1] for m in archive.getnames() if "/" in m}
    assert {"LICENSE", "action.yml", "setup.py", "clusters/local.yaml",
            "manifests/library-app/checks.yaml", "manifests/rbac/deployer.yaml"} <= members


def test_the_packaged_examples_are_the_repositorys(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in ("clusters/local.yaml", "manifests/library-app/deployment.yaml",
                     "manifests/library-app/checks.yaml", "manifests/rbac/deployer.yaml"):
            assert archive.read(f"wavegate/_bundled/{name}") == (REPO / name).read_bytes(), name


def test_the_demo_runs_from_a_bare_wheel_in_an_empty_folder(
        clean_venv: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(clean_venv / "bin" / "python"), "-c",
                            "import wavegate, library_app; print(wavegate.__file__); "
                            "print(library_app.__file__)"],
                           cwd=tmp_path, env=_env(clean_venv), capture_output=True, text=True,
                           check=True)
    assert all(line.startswith(str(clean_venv)) for line in where.stdout.split()), where.stdout
    done = subprocess.run([str(clean_venv / "bin" / "wavegate"), "demo"], cwd=tmp_path,
                          env=_env(clean_venv), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "The safety net held." in done.stdout
    assert "Traceback" not in done.stderr
    # Where it was run, only the run's journal and its page, where every run keeps them.
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")
                     if path.is_file())
    assert [Path(name).suffix for name in written] == [".html", ".json"], written
    assert all(name.startswith(".wavegate/runs/") for name in written), written
    assert str(tmp_path / written[0]) in done.stdout  # the page's path is printed


# --- the GitHub Action ----------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, clean_venv: Path) -> Iterator[Path]:
    """A team's repository: its app folder and a fleet file (a private local fleet)."""
    (tmp_path / "manifests").mkdir()
    app = (REPO / "manifests" / "library-app")
    (tmp_path / "manifests" / "library-app").mkdir()
    for file in app.iterdir():
        (tmp_path / "manifests" / "library-app" / file.name).write_bytes(file.read_bytes())
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet_document(tmp_path / "state")))
    yield tmp_path
    subprocess.run([str(clean_venv / "bin" / "wavegate"), "fleet", "down", "-f", "fleet.yaml"],
                   cwd=tmp_path, env=_env(clean_venv), capture_output=True, timeout=120)


def _run_action(project: Path, venv: Path, **inputs: str) -> tuple[int, str, dict[str, str]]:
    """Every `run:` step of action.yml in bash, as a runner would; exit, stdout, outputs."""
    action = yaml.safe_load((REPO / "action.yml").read_text())
    given = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    given.update({name.replace("_", "-"): value for name, value in inputs.items()})
    outputs, summary = project / "github_output", project / "step_summary"
    code, stdout = 0, ""
    for step in action["runs"]["steps"]:
        step_env = {k: _fill(str(v), given) for k, v in (step.get("env") or {}).items()}
        env = _env(venv, **TOKENS, **step_env, GITHUB_OUTPUT=str(outputs),
                   GITHUB_STEP_SUMMARY=str(summary))
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               _fill(step["run"], given)], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600)
        code, stdout = done.returncode, stdout + done.stdout
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        if code != 0:
            break
    lines = outputs.read_text().splitlines() if outputs.exists() else []
    return code, stdout, dict(line.split("=", 1) for line in lines)


def _fill(text: str, inputs: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: inputs[m[1]], text)


def _report(project: Path) -> dict[str, Any]:
    return dict(json.loads((project / "wavegate-report.json").read_text()))


def test_the_action_installs_the_wheel_and_deploys_with_report_junit_and_summary(
        project: Path, clean_venv: Path, wheel: Path) -> None:
    code, stdout, outputs = _run_action(project, clean_venv, app="library-app",
                                        version="1.0.0", fleet="fleet.yaml", package=str(wheel))
    assert code == 0, stdout[-3000:]
    report = _report(project)
    assert outputs == {"exit-code": "0", "run-id": report["run_id"]}
    assert report["exit_code"] == 0
    assert {c["to_version"] for c in report["clusters"]} == {"1.0.0"}
    junit = (project / "wavegate-junit.xml").read_text()
    assert "<testcase" in junit and "prod-5" in junit
    assert "1.0.0" in (project / "step_summary").read_text()


def test_the_action_fails_the_job_when_the_release_is_rolled_back(
        project: Path, clean_venv: Path, wheel: Path) -> None:
    assert _run_action(project, clean_venv, app="library-app", version="1.0.0",
                       fleet="fleet.yaml", package=str(wheel))[0] == 0
    code, stdout, outputs = _run_action(project, clean_venv, app="library-app",
                                        version="2.0.0", fleet="fleet.yaml", package=str(wheel))
    assert code == 1
    assert outputs["exit-code"] == "1"
    assert "::error::the release failed its checks and was rolled back" in stdout
    assert "security" in (project / "wavegate-junit.xml").read_text()
    for value in TOKENS.values():
        for file in ("wavegate-report.json", "wavegate-junit.xml", "step_summary"):
            assert value not in (project / file).read_text(), file
