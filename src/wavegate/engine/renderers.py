"""Running the programs that render an app's manifests: kustomize, or the app's `render` command.

`config.app` says which program a cluster's release needs (`App.step`) and turns its output into
the release; this module runs it, without a shell, in the app folder, once per distinct step
(a fleet of a hundred clusters with no per-cluster overlay builds the kustomization once). A
program that fails, is missing or runs too long is bad input (exit 2) naming the command and
the last lines of its stderr, found before any cluster is touched.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Mapping

from wavegate import redact
from wavegate.config.app import App, Command, Release, Step
from wavegate.config.fleet import Cluster
from wavegate.errors import InputError

TIMEOUT = 300.0  # seconds; a chart render that takes longer is stuck, not slow
STDERR_LINES = 3  # of a failing program's stderr, in its one-line error


class Renderers:
    """Each distinct step's output, run once for all the clusters of one preparation."""

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._outputs: dict[Step, str] = {}

    def release(self, app: App, cluster: Cluster, version: str,
                overrides: Mapping[str, str] | None = None) -> Release:
        step = app.step(cluster, version, overrides)
        rendered = None if step is None else self.output(step)
        return app.render(cluster, version, overrides, rendered=rendered)

    def output(self, step: Step) -> str:
        if step not in self._outputs:
            self._outputs[step] = run(argv(step), step=step, timeout=self.timeout)
        return self._outputs[step]


def argv(step: Step) -> tuple[str, ...]:
    """The command line of a step: `kustomize build` when it is installed, else `kubectl
    kustomize` (kubectl carries kustomize since 1.14)."""
    if isinstance(step, Command):
        return step.argv
    folder = str(step.folder)
    if shutil.which("kustomize"):
        return ("kustomize", "build", folder)
    if shutil.which("kubectl"):
        return ("kubectl", "kustomize", folder)
    raise InputError("a kustomization needs `kustomize` or `kubectl` on PATH to be built",
                     file=step.folder)


def run(command: tuple[str, ...], *, step: Step, timeout: float) -> str:
    """The program's stdout; InputError naming the command if it does not succeed."""
    cwd = step.cwd if isinstance(step, Command) else step.folder
    shown = shlex.join(command)
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise InputError(f"render command not found: {command[0]}",
                         file=step.defined_in) from None
    except PermissionError:
        raise InputError(f"render command is not executable: {command[0]}",
                         file=step.defined_in) from None
    except subprocess.TimeoutExpired:
        raise InputError(f"`{shown}` did not finish within {timeout:.0f}s",
                         file=step.defined_in) from None
    if done.returncode != 0:
        raise InputError(f"`{shown}` failed (exit {done.returncode}): "
                         f"{_last_lines(done.stderr)}", file=step.defined_in)
    try:
        return done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"`{shown}` wrote output that is not UTF-8 text",
                         file=step.defined_in) from None


def _last_lines(stderr: bytes) -> str:
    """The end of a program's complaint, on one line and without any registered secret."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()
             if line.strip()]
    text = " | ".join(lines[-STDERR_LINES:]) or "no output on stderr"
    return redact.scrub(text)
