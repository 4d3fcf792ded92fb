"""One pod-spec builder for both agents: the argv, the env and the reasons a pod cannot start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from wavegate.decide import workloads
from wavegate.localfleet import objects, pods, podspec
from wavegate.localfleet.objects import Manifest

IMAGES = {"library-app": ["python", "-m", "library_app", "--version", "${tag}"]}


def container(image: str = "library-app:1.0.0", **extra: Any) -> objects.Container:
    body = {
        "kind": "Deployment",
        "metadata": {"name": "library", "namespace": "library"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "app", "image": image, **extra}]}}},
    }
    manifest = Manifest.from_dict("Deployment.library.library", body)
    return objects.parse_deployment(manifest).container


def nothing(kind: str, namespace: str, name: str) -> Manifest | None:
    return None


def test_the_argv_stands_in_for_the_image() -> None:
    assert podspec.command(container(), IMAGES, "/py") == (
        "/py", "-m", "library_app", "--version", "1.0.0")


def test_an_unmapped_image_is_err_image_never_pull_which_no_wait_cures() -> None:
    with pytest.raises(podspec.CannotStart) as raised:
        podspec.command(container("nginx:1.25"), IMAGES, "/py")
    assert raised.value.reason == "ErrImageNeverPull"
    assert raised.value.reason in workloads.FATAL_WAITING
    assert "'nginx:1.25'" in raised.value.message and "library-app" in raised.value.message


@pytest.mark.parametrize(
    ("env", "pythonpath", "want"),
    [
        ([], [], None),
        ([], ["/src"], "/src"),
        ([{"name": "PYTHONPATH", "value": "/own"}], ["/src", "/lib"],
         os.pathsep.join(["/own", "/src", "/lib"])),
        ([{"name": "PYTHONPATH", "value": "/own"}], [], "/own"),
    ],
)
def test_pythonpath_comes_after_the_containers_own(
    env: list[dict[str, str]], pythonpath: list[str], want: str | None
) -> None:
    built = podspec.environment(container(env=env), "library", nothing, pythonpath=pythonpath)
    assert built.get("PYTHONPATH") == want
    assert built["PATH"] == os.environ.get("PATH", os.defpath)
    assert "HOST" not in built and "PORT" not in built  # the runner's to set


def test_a_missing_reference_is_a_config_error_which_no_wait_cures() -> None:
    ref = {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "k"}}}
    with pytest.raises(podspec.CannotStart) as raised:
        podspec.environment(container(env=[ref]), "library", nothing)
    assert raised.value.reason == "CreateContainerConfigError"
    assert raised.value.reason in workloads.FATAL_WAITING
    assert "ConfigMap library/x not found" in raised.value.message


def test_the_spec_takes_the_first_port_and_the_readiness_probe() -> None:
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "failureThreshold": 5}
    spec = podspec.build(
        "library-abc", container(ports=[{"name": "http", "containerPort": 9000}],
                                 readinessProbe=probe),
        argv=["/py", "-m", "x"], env={"A": "1"}, cwd=Path("/tmp"))  # fmt: skip
    assert (spec.name, spec.argv, dict(spec.env), spec.port) == (
        "library-abc", ("/py", "-m", "x"), {"A": "1"}, 9000)
    assert (spec.readiness, spec.failure_threshold) == (pods.HttpProbe(9000, "/healthz"), 5)
