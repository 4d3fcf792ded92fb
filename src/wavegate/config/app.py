"""An app folder: Kubernetes manifest templates plus the checks that prove a release.

`App.render` fills the templates for one cluster and version and returns a `Release`: the exact
objects a driver applies and a ledger stores. Rendering is pure and fails as an `InputError`
before any cluster is touched. A checks file rendered to the same text for many clusters (the
usual case: it depends on the version only) is parsed once (`load_checks`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wavegate.config import checks, templates
from wavegate.config.fleet import Cluster
from wavegate.config.yamlsource import parse_all, read_text
from wavegate.errors import InputError

CHECKS_FILE = "checks.yaml"
MANIFEST_SUFFIXES = (".yaml", ".yml")
APP_LABEL = "wavegate.dev/app"
MANAGED_BY = "app.kubernetes.io/managed-by"
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding",
                            "CustomResourceDefinition", "PriorityClass", "StorageClass"})

Manifest = dict[str, Any]
RESERVED = frozenset({"version", "app", "cluster.name", "cluster.region", "cluster.namespace"})


@dataclass(frozen=True)
class Release:
    """One app, rendered for one cluster and version: what gets applied and stored."""

    app: str
    version: str
    manifests: tuple[Manifest, ...]
    checks: str  # checks.yaml rendered for this release, so a rollback judges with its own


@dataclass(frozen=True)
class App:
    name: str
    path: Path
    templates: Mapping[str, str]  # file name -> text
    checks_source: str

    @classmethod
    def from_folder(cls, path: Path) -> App:
        if not path.is_dir():
            raise InputError("app folder not found", file=path)
        files = sorted(p for p in path.iterdir()
                       if p.suffix in MANIFEST_SUFFIXES and p.name != CHECKS_FILE)
        if not files:
            raise InputError("app folder has no manifest templates (*.yaml)", file=path)
        checks = path / CHECKS_FILE
        if not checks.is_file():
            raise InputError(f"app folder has no {CHECKS_FILE}", file=path)
        return cls(name=path.name, path=path,
                   templates={p.name: read_text(p) for p in files},
                   checks_source=read_text(checks))

    def variables(self, cluster: Cluster, version: str,
                  overrides: Mapping[str, str]) -> dict[str, str]:
        reserved = sorted(set(overrides) & RESERVED)
        if reserved:
            raise InputError(f"--set cannot override {', '.join(reserved)} (use --version, or "
                             "the fleet file)")
        values = {key: _text(value) for key, value in cluster.values.items()}
        return {**values, "version": version, "cluster.name": cluster.name,
                "cluster.region": cluster.region, "cluster.namespace": cluster.namespace,
                "app": self.name, **overrides}

    def render(self, cluster: Cluster, version: str,
               overrides: Mapping[str, str] | None = None) -> Release:
        variables = self.variables(cluster, version, overrides or {})
        manifests: list[Manifest] = []
        for name, text in self.templates.items():
            file = self.path / name
            rendered = templates.render_yaml(text, variables, file=file)
            for document, source in parse_all(rendered, file):
                if document is None:
                    continue
                if not isinstance(document, dict) or "kind" not in document:
                    raise source.error((), "expected a Kubernetes object with 'kind'")
                manifests.append(_labelled(document, self.name, cluster.namespace))
        if not manifests:
            # Applying nothing would prune everything the app had and still pass its checks
            # against whatever answers; a release must hold at least one object.
            raise InputError(f"the release renders to no Kubernetes objects (templates: "
                             f"{', '.join(self.templates)})", file=self.path)
        return Release(app=self.name, version=version, manifests=tuple(manifests),
                       checks=self.render_checks(cluster, version, overrides))

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
