"""App sources that need a program: a kustomization (built by kubectl or kustomize) and an
`app.yaml` render command. What the release holds, what is run how often, and how a renderer's
failure reads (exit 2, the command and its stderr's last lines, no secret).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from wavegate import redact
from wavegate.config import app
from wavegate.config.fleet import Cluster
from wavegate.engine import renderers
from wavegate.errors import EXIT_BAD_INPUT, InputError

DATA = Path(__file__).resolve().parents[1] / "data" / "apps"
CHECKS = "checks:\n  - name: serving\n    request: GET /version\n"


def cluster(name: str, **values: Any) -> Cluster:
    return Cluster(name=name, region="westeurope", driver="local", namespace="library",
                   values={"replicas": 3, "fault": "", **values})


def deployment(release: app.Release) -> dict[str, Any]:
    return next(m for m in release.manifests if m["kind"] == "Deployment")


def command_app(tmp_path: Path, script: str, argv: str) -> Path:
    folder = tmp_path / "chart-app"
    folder.mkdir()
    (folder / "checks.yaml").write_text(CHECKS)
    (folder / "app.yaml").write_text(f"render: {argv}\n")
    program = folder / "render.sh"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.fixture
def kubectl() -> None:
    if shutil.which("kubectl") is None and os.environ.get("CI") != "true":
        pytest.skip("kubectl is not installed (the sandbox script installs it)")


@pytest.mark.usefixtures("kubectl")
def test_a_kustomization_is_built_per_overlay_and_filled_like_a_template() -> None:
    folder = app.App.from_folder(DATA / "kustomize" / "library-app")
    rendering = renderers.Renderers()
    plain = rendering.release(folder, cluster("prod-1"), "1.2.3")
    overlaid = rendering.release(folder, cluster("prod-3"), "1.2.3")
    assert deployment(plain)["spec"]["replicas"] == 3  # ${replicas}, a number again
    assert deployment(overlaid)["spec"]["replicas"] == 1  # overlays/prod-3 patches it
    image = deployment(plain)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "library-app:1.2.3"
    configmap = next(m for m in plain.manifests if m["kind"] == "ConfigMap")
    assert configmap["data"]["LIBRARY_CLUSTER"] == "prod-1"
    assert {m["metadata"]["labels"][app.APP_LABEL] for m in plain.manifests} == {"library-app"}


@pytest.mark.usefixtures("kubectl")
def test_a_kustomization_that_does_not_build_names_the_command(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "checks.yaml").write_text(CHECKS)
    (folder / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(InputError) as caught:
        renderers.Renderers().release(app.App.from_folder(folder), cluster("a"), "1.0.0")
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "kustomize" in str(caught.value) and "missing.yaml" in str(caught.value)


def test_a_render_command_gets_filled_arguments_and_its_output_is_kept_as_written() -> None:
    folder = app.App.from_folder(DATA / "render" / "library-app")
    release = renderers.Renderers().release(folder, cluster("prod-2"), "2.0.1")
    image = deployment(release)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "library-app:2.0.1"
    configmap = next(m for m in release.manifests if m["kind"] == "ConfigMap")
    assert configmap["data"]["LIBRARY_CLUSTER"] == "prod-2"
    assert configmap["metadata"]["annotations"]["note"] == "${left.as.written}"


@pytest.mark.parametrize(("argv", "runs"), [
    ("[./render.sh, '${version}']", 1),  # the same command for every cluster: run once
    ("[./render.sh, '${cluster.name}']", 3),  # one per cluster
])
def test_each_distinct_command_runs_once(tmp_path: Path, argv: str, runs: int) -> None:
    counter = tmp_path / "runs"
    folder = command_app(tmp_path, f"echo run >> {counter}\n"
                         "printf 'kind: ConfigMap\\nmetadata: {name: x}\\n'\n", argv)
    rendering = renderers.Renderers()
    for name in ("a", "b", "c"):
        rendering.release(app.App.from_folder(folder), cluster(name), "1.0.0")
    assert counter.read_text().count("run") == runs


def test_a_failing_render_command_is_bad_input_naming_it_and_its_last_words(
        tmp_path: Path) -> None:
    redact.register("hunter2-secret-value")
    folder = command_app(tmp_path, "echo one >&2; echo two >&2; echo three >&2\n"
                         "echo 'token hunter2-secret-value refused' >&2; exit 4\n",
                         "[./render.sh, '${cluster.name}']")
    with pytest.raises(InputError) as caught:
        renderers.Renderers().release(app.App.from_folder(folder), cluster("a"), "1.0.0")
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "render.sh a` failed (exit 4)" in message and str(folder / "app.yaml") in message
    assert "two | three | token" in message and "one" not in message
    assert "hunter2-secret-value" not in message


def test_a_missing_render_program_is_bad_input(tmp_path: Path) -> None:
    folder = command_app(tmp_path, "", "[no-such-renderer-anywhere, x]")
    with pytest.raises(InputError, match="render command not found: no-such-renderer"):
        renderers.Renderers().release(app.App.from_folder(folder), cluster("a"), "1.0.0")


def test_an_unknown_placeholder_in_render_names_app_yaml_and_its_line(tmp_path: Path) -> None:
    folder = command_app(tmp_path, "", "[./render.sh, '${chart_version}']")
    with pytest.raises(InputError) as caught:
        app.App.from_folder(folder).step(cluster("a"), "1.0.0")
    assert str(caught.value).startswith(f"{folder / 'app.yaml'}:1: render: unknown placeholder "
                                        "${chart_version}")


def test_output_that_is_not_manifests_names_the_command_output(tmp_path: Path) -> None:
    folder = command_app(tmp_path, "echo 'just: [text'\n", "[./render.sh]")
    with pytest.raises(InputError, match=r"app.yaml \(output of .*render.sh\):\d+: YAML "
                                         "syntax error"):
        renderers.Renderers().release(app.App.from_folder(folder), cluster("a"), "1.0.0")


def test_an_app_with_both_a_kustomization_and_app_yaml_is_refused(tmp_path: Path) -> None:
    folder = command_app(tmp_path, "", "[./render.sh]")
    (folder / "kustomization.yaml").write_text("resources: []\n")
    with pytest.raises(InputError, match=r"both kustomization\.yaml and app\.yaml"):
        app.App.from_folder(folder)
