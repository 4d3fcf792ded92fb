"""What a pod runs as a local process: its argv, its environment and its `pods.PodSpec`.

Written once for the two agents that run pods on loopback, the local fleet's (a Deployment's
template) and the kube sandbox's node agent (a bound Pod), so that the same container runs the
same way under both and fails with the same reason:
- the argv stands in for the image (`objects.image_command`); an image the images map does not
  know is `ErrImageNeverPull`, as a kubelet says of an image it may not pull and does not have;
- the env is the container's (`env`, `envFrom`, ConfigMaps and Secrets through the caller's
  lookup) plus PATH, and PYTHONPATH extended with the folders the workload needs to import
  from; a missing reference or a spec the agents cannot run is `CreateContainerConfigError`.
Both reasons are ones `decide.workloads` knows no wait will cure, so a rollout fails at once.

Must not start processes or read files: the callers do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from wavegate.localfleet import objects, pods

__all__ = ["CONFIG_ERROR", "IMAGE_NOT_MAPPED", "CannotStart", "build", "command", "environment"]

IMAGE_NOT_MAPPED = "ErrImageNeverPull"
CONFIG_ERROR = "CreateContainerConfigError"


class CannotStart(Exception):
    """A pod cannot start as specified: the waiting reason its container shows, and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def command(
    container: objects.Container, images: Mapping[str, Sequence[str]], python: str
) -> tuple[str, ...]:
    """The argv standing in for the container's image."""
    argv = objects.image_command(container.image, images, python)
    if argv is None:
        known = ", ".join(sorted(images)) or "none"
        raise CannotStart(
            IMAGE_NOT_MAPPED,
            f"image {container.image!r} has no command in the images map (mapped: {known})",
        )
    return argv


def environment(
    container: objects.Container,
    namespace: str,
    lookup: objects.Lookup,
    *,
    pythonpath: Sequence[str] = (),
) -> dict[str, str]:
    """The process's env but HOST and PORT (the runner adds those).

    PATH, so a bare `python` resolves; then the container's env; then `pythonpath` after any
    PYTHONPATH the container sets, for an interpreter that cannot import the workload alone.
    """
    try:
        env = objects.resolve_env(container, namespace, lookup)
    except (objects.EnvError, objects.SpecError) as e:
        raise CannotStart(CONFIG_ERROR, str(e)) from e
    env = {"PATH": os.environ.get("PATH", os.defpath), **env}
    if pythonpath:
        paths = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([*paths, *pythonpath])
    return env


def build(
    name: str,
    container: objects.Container,
    *,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
) -> pods.PodSpec:
    """What the Runner runs: the argv and env, the first port, the readinessProbe."""
    readiness = container.readiness
    probe = pods.readiness_probe(readiness.port, readiness.path) if readiness else None
    return pods.PodSpec(
        name=name,
        argv=tuple(argv),
        env=dict(env),
        port=container.port,
        readiness=probe,
        failure_threshold=readiness.failure_threshold if readiness else 3,
        cwd=cwd,
    )
