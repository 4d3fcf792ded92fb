"""An app folder: its manifests' source plus the checks that prove a release.

A folder's manifests come from one of three sources (`App.source`):
- `templates`: its own `*.yaml` files with `${...}` placeholders;
- `kustomize`: a `kustomization.yaml` at its root, and per-cluster overlays in
  `overlays/<cluster>/`; the kustomize output is then filled like a template;
- `command`: `app.yaml` with `render: [argv]`, whose arguments are filled and whose stdout is
  taken as it is (a chart's `${...}` is its own business).

`App.render` fills them for one cluster and version and returns a `Release`: the exact objects
a driver applies and a ledger stores. Rendering is pure and fails as an `InputError` before any
cluster is touched; a source that needs a program run says which (`App.step`), and the engine
runs it and hands the text back (`render(..., rendered=TEXT)`): nothing here starts a process.
A checks file rendered to the same text for many clusters (the usual case: it depends on the
version only) is parsed once (`load_checks`).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wavegate import redact
from wavegate.config import checks, shapes, templates
from wavegate.config import fields as schema
from wavegate.config.fleet import Cluster
from wavegate.config.yamlsource import load as load_yaml
from wavegate.config.yamlsource import parse_all, read_text
from wavegate.errors import InputError

CHECKS_FILE = "checks.yaml"
APP_FILE = "app.yaml"
KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
OVERLAYS = "overlays"
SOURCES = ("templates", "kustomize", "command")
# app.yaml, as its readers below take it and `wavegate schema app` prints it.
SHAPE = shapes.Obj(
    "An app folder's app.yaml: how its manifests are rendered.",
    {"render": shapes.Strings("Command whose stdout is the manifests (run without a shell, in "
                              "the app folder); ${...} in its arguments is filled",
                              min_items=1)},
    required=("render",))
MANIFEST_SUFFIXES = (".yaml", ".yml")
APP_LABEL = "wavegate.dev/app"
MANAGED_BY = "app.kubernetes.io/managed-by"
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding",
                            "CustomResourceDefinition", "PriorityClass", "StorageClass"})

Manifest = dict[str, Any]
RESERVED = frozenset({"version", "app", "cluster.name", "cluster.region", "cluster.namespace"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Release:
    """One app, rendered for one cluster and version: what gets applied and stored."""

    app: str
    version: str
    manifests: tuple[Manifest, ...]
    checks: str  # checks.yaml rendered for this release, so a rollback judges with its own


@dataclass(frozen=True)
class Kustomize:
    """Build a kustomization: the cluster's overlay, else the app's root."""

    folder: Path

    @property
    def defined_in(self) -> Path:
        return self.folder

    @property
    def output(self) -> Path:
        """How errors in its output name it."""
        return Path(f"{self.folder} (kustomize output)")


@dataclass(frozen=True)
class Command:
    """Run `argv` (no shell) in `cwd`; its stdout is the manifests, taken as they are."""

    argv: tuple[str, ...]
    cwd: Path

    @property
    def defined_in(self) -> Path:
        return self.cwd / APP_FILE

    @property
    def output(self) -> Path:
        return Path(f"{self.cwd / APP_FILE} (output of {self.argv[0]})")


Step = Kustomize | Command


@dataclass(frozen=True)
class App:
    name: str
    path: Path
    templates: Mapping[str, str]  # file name -> text (source `templates` only)
    checks_source: str
    source: str = "templates"  # one of SOURCES
    render_argv: tuple[str, ...] = ()  # app.yaml's `render`, placeholders unfilled
    render_line: int | None = None  # where `render` is written, for its placeholder errors
    overlays: frozenset[str] = frozenset()  # clusters with their own kustomize overlay

    @classmethod
    def from_folder(cls, path: Path) -> App:
        if not path.is_dir():
            raise InputError("app folder not found", file=path)
        checks = path / CHECKS_FILE
        if not checks.is_file():
            raise InputError(f"app folder has no {CHECKS_FILE}", file=path)
        kustomization = [name for name in KUSTOMIZATIONS if (path / name).is_file()]
        if kustomization and (path / APP_FILE).is_file():
            raise InputError(f"app folder has both {kustomization[0]} and {APP_FILE}: keep the "
                             "one that renders its manifests", file=path)
        if kustomization:
            return cls(name=path.name, path=path, templates={}, source="kustomize",
                       checks_source=read_text(checks), overlays=_overlays(path))
        if (path / APP_FILE).is_file():
            argv, line = _render_argv(path / APP_FILE)
            return cls(name=path.name, path=path, templates={}, source="command",
                       checks_source=read_text(checks), render_argv=argv, render_line=line)
        files = sorted(p for p in path.iterdir()
                       if p.suffix in MANIFEST_SUFFIXES and p.name != CHECKS_FILE)
        if not files:
            raise InputError("app folder has no manifest templates (*.yaml), "
                             f"{KUSTOMIZATIONS[0]} or {APP_FILE}", file=path)
        return cls(name=path.name, path=path,
                   templates={p.name: read_text(p) for p in files},
                   checks_source=read_text(checks))

    def step(self, cluster: Cluster, version: str,
             overrides: Mapping[str, str] | None = None) -> Step | None:
        """The program to run for this cluster's manifests; None when the folder holds them."""
        if self.source == "kustomize":
            overlay = self.path / OVERLAYS / cluster.name
            return Kustomize(overlay if cluster.name in self.overlays else self.path)
        if self.source == "command":
            variables = self.variables(cluster, version, overrides or {})
            argv = tuple(_filled_argument(argument, variables, file=self.path / APP_FILE,
                                          line=self.render_line)
                         for argument in self.render_argv)
            return Command(_beside(argv, self.path), self.path)
        return None

    def variables(self, cluster: Cluster, version: str,
                  overrides: Mapping[str, str]) -> dict[str, str]:
        reserved = sorted(set(overrides) & RESERVED)
        if reserved:
            raise InputError(f"--set/--set-env cannot override {', '.join(reserved)} (use "
                             "--version, or the fleet file)")
        values = {key: _text(value) for key, value in cluster.values.items()}
        return {**values, "version": version, "cluster.name": cluster.name,
                "cluster.region": cluster.region, "cluster.namespace": cluster.namespace,
                "app": self.name, **overrides}

    def render(self, cluster: Cluster, version: str,
               overrides: Mapping[str, str] | None = None, *,
               rendered: str | None = None) -> Release:
        """The release; `rendered` is the output of `step`'s program, for sources that have
        one."""
        variables = self.variables(cluster, version, overrides or {})
        manifests: list[Manifest] = []
        for file, text in self._texts(cluster, version, overrides, variables, rendered):
            for document, source in parse_all(text, file):
                if document is None:
                    continue
                if not isinstance(document, dict) or "kind" not in document:
                    raise source.error((), "expected a Kubernetes object with 'kind'")
                manifests.append(_labelled(document, self.name, cluster.namespace))
        if not manifests:
            # Applying nothing would prune everything the app had and still pass its checks
            # against whatever answers; a release must hold at least one object.
            what = (f"templates: {', '.join(self.templates)}" if self.source == "templates"
                    else f"source: {self.source}")
            raise InputError(f"the release renders to no Kubernetes objects ({what})",
                             file=self.path)
        return Release(app=self.name, version=version, manifests=tuple(manifests),
                       checks=self.render_checks(cluster, version, overrides))

    def _texts(self, cluster: Cluster, version: str, overrides: Mapping[str, str] | None,
               variables: Mapping[str, str], rendered: str | None) -> list[tuple[Path, str]]:
        """Each manifest text of the release with the file its errors name."""
        if self.source == "templates":
            return [(self.path / name, templates.render_yaml(text, variables,
                                                             file=self.path / name))
                    for name, text in self.templates.items()]
        step = self.step(cluster, version, overrides)
        if step is None or rendered is None:
            raise ValueError(f"app {self.name} ({self.source}) needs its step's output")
        if isinstance(step, Kustomize):
            return [(step.output, templates.render_yaml(rendered, variables, file=step.output))]
        return [(step.output, rendered)]

    def render_checks(self, cluster: Cluster, version: str,
                      overrides: Mapping[str, str] | None = None) -> str:
        """checks.yaml for one cluster and version; validated before anything is touched."""
        checks_file = self.path / CHECKS_FILE
        variables = self.variables(cluster, version, overrides or {})
        rendered = templates.render_yaml(self.checks_source, variables, file=checks_file)
        load_checks(rendered, checks_file)
        return rendered


@functools.lru_cache(maxsize=32)
def load_checks(text: str, file: Path) -> checks.Suite:
    """A rendered checks file as a `Suite`, parsed once per distinct text (Suites are never
    changed once built, so every cluster of a fleet may share one)."""
    return checks.load(text, file)


def resolve(name_or_path: str) -> App:
    """APP as the commands take it: a folder path, else a bare name looked up under manifests/."""
    path = Path(name_or_path)
    if not path.is_dir() and os.sep not in name_or_path:
        path = Path("manifests") / name_or_path
    return App.from_folder(path)


def _overlays(path: Path) -> frozenset[str]:
    folder = path / OVERLAYS
    if not folder.is_dir():
        return frozenset()
    return frozenset(child.name for child in folder.iterdir()
                     if any((child / name).is_file() for name in KUSTOMIZATIONS))


def _render_argv(file: Path) -> tuple[tuple[str, ...], int | None]:
    data, source = load_yaml(file)
    raw = schema.record(data, (), source, SHAPE)
    argv = schema.strings(raw["render"], ("render",), source)
    if not argv:
        raise source.error(("render",), "expected a command: a list of at least one argument")
    return argv, source.line(("render",))


def _filled_argument(argument: str, variables: Mapping[str, str], *, file: Path,
                     line: int | None) -> str:
    try:
        return templates.render(argument, variables, file=file)
    except InputError as error:
        raise InputError(error.message, file=file, line=line, field="render") from None


def _beside(argv: tuple[str, ...], folder: Path) -> tuple[str, ...]:
    """A program named by a relative path (`./render.py`) is the app folder's own."""
    if "/" in argv[0] and not Path(argv[0]).is_absolute():
        return (str((folder / argv[0]).resolve()), *argv[1:])
    return argv


def _labelled(manifest: Manifest, app: str, namespace: str) -> Manifest:
    """Label every object with its app, so a later revision can prune what it dropped."""
    metadata = manifest["metadata"] = manifest.get("metadata") or {}
    if manifest.get("kind") not in CLUSTER_SCOPED:
        metadata.setdefault("namespace", namespace)
    labels = metadata["labels"] = metadata.get("labels") or {}
    labels[APP_LABEL] = app
    labels[MANAGED_BY] = "wavegate"
    return manifest


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--set k=v` pairs."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects key=value, got {pair!r}")
        result[key] = value
    return result


def parse_env_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--set-env KEY=VAR` pairs: template value KEY -> the environment variable VAR holding it.

    A malformed pair is not echoed: it may be a secret typed where a variable's name belongs."""
    result = {}
    for pair in pairs:
        key, _, variable = pair.partition("=")
        if not key or not _ENV_NAME.fullmatch(variable):
            raise InputError("--set-env expects KEY=VAR, VAR the name of an environment "
                             "variable (letters, digits and _)")
        result[key] = variable
    return result


def env_values(variables: Mapping[str, str], *,
               environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secret template values `--set-env` names, read from the environment now and
    registered with `redact` at once. A variable not set, or too short to be masked in every
    output, is bad input naming the variable, never its value."""
    environ = os.environ if environ is None else environ
    values = {}
    for key, variable in variables.items():
        value = environ.get(variable)
        if value is None:
            raise InputError(f"--set-env {key}={variable}: the environment variable {variable} "
                             "is not set")
        if len(value) < redact.MIN_LENGTH:
            raise InputError(f"--set-env {key}={variable}: the value of {variable} is shorter "
                             f"than {redact.MIN_LENGTH} characters, too short to be masked in "
                             "every output (use --set for values that are not secret)")
        redact.register(value)
        values[key] = value
    return values


def merged_values(plain: Mapping[str, str], secret: Mapping[str, str]) -> dict[str, str]:
    """`--set` and `--set-env` values together; one key given both ways is bad input."""
    both = sorted(set(plain) & set(secret))
    if both:
        raise InputError(f"{', '.join(both)} given with both --set and --set-env")
    return {**plain, **secret}
