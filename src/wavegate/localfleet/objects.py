"""The desired state of a local cluster: the manifests in `CLUSTER_DIR/objects/`, understood.

Owns:
- `Store`: a cheap poll of the folder (names, mtimes, sizes) that re-reads only changed files;
- parsing the kinds the agent runs (`Deployment`, `Service`) into frozen dataclasses, and
  saying why a manifest cannot run (`SpecError`);
- the template hash (of `spec.template` only, like Kubernetes: a changed ConfigMap does not
  roll pods), container env from `env`/`envFrom` with ConfigMaps and Secrets, and the mapping
  of an image reference to the argv that stands in for it.

Must not start processes, write files or keep pod state: the agent does that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavegate.localfleet import rolling

__all__ = [
    "RUN_KINDS",
    "Container",
    "ContainerPort",
    "Deployment",
    "EnvError",
    "Manifest",
    "Readiness",
    "Service",
    "SpecError",
    "Store",
    "image_command",
    "parse_deployment",
    "parse_service",
    "resolve_env",
    "template_hash",
]

log = logging.getLogger(__name__)

INGRESS_ANNOTATION = "wavegate.dev/ingress"
DEFAULT_CONTAINER_PORT = 8080
# Kinds the agent acts on; ConfigMaps and Secrets are read as env sources.
RUN_KINDS = frozenset({"Deployment", "Service", "ConfigMap", "Secret"})

SpecError = rolling.SpecError


class EnvError(ValueError):
    """A container's env refers to a ConfigMap, Secret or key that does not exist."""


@dataclass(frozen=True)
class Manifest:
    """One file of objects/: `key` is its name without `.json` (`Kind.namespace.name`)."""

    key: str
    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any]

    @property
    def generation(self) -> int:
        generation = self.body.get("metadata", {}).get("generation", 1)
        return generation if isinstance(generation, int) else 1

    @classmethod
    def from_dict(cls, key: str, body: Mapping[str, Any]) -> Manifest:
        # The file name is the fallback; the manifest's own fields win.
        kind, _, rest = key.partition(".")
        namespace, _, name = rest.partition(".")
        metadata = body.get("metadata") or {}
        return cls(
            key,
            str(body.get("kind") or kind),
            str(metadata.get("namespace") or namespace or "default"),
            str(metadata.get("name") or name),
            body,
        )


Signature = tuple[int, int, int]  # mtime_ns, size, inode: a rename changes at least one


class Store:
    """The manifests in one folder, re-read only when the listing or an mtime changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seen: dict[str, Signature] = {}
        self._manifests: dict[str, Manifest] = {}

    @property
    def manifests(self) -> Mapping[str, Manifest]:
        return self._manifests

    def find(self, kind: str, namespace: str, name: str) -> Manifest | None:
        for manifest in self._manifests.values():
            if (manifest.kind, manifest.namespace, manifest.name) == (kind, namespace, name):
                return manifest
        return None

    def refresh(self) -> bool:
        """Re-read what changed on disk; True when the set of manifests changed."""
        listing = self._listing()
        if listing == self._seen:
            return False
        changed = False
        for key in self._seen.keys() - listing.keys():
            changed |= self._manifests.pop(key, None) is not None
        for key, signature in listing.items():
            if self._seen.get(key) != signature:
                changed |= self._load(key)
        self._seen = listing
        return changed

    def _listing(self) -> dict[str, Signature]:
        listing: dict[str, Signature] = {}
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return listing
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            listing[entry.name.removesuffix(".json")] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return listing

    def _load(self, key: str) -> bool:
        try:
            body = json.loads((self.folder / f"{key}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._manifests.pop(key, None) is not None
        except (OSError, ValueError) as e:
            # Keep what we had: a writer that does not rename atomically may be half-way
            # through, and its next write changes the mtime, so the file is read again.
            log.warning("objects/%s.json: cannot read: %s", key, e)
            return False
        if not isinstance(body, dict):
            log.warning("objects/%s.json: not a JSON object, ignored", key)
            return self._manifests.pop(key, None) is not None
        manifest = Manifest.from_dict(key, body)
        if self._manifests.get(key) == manifest:
            return False
        self._manifests[key] = manifest
        return True


# --- Deployments -------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPort:
    number: int
    name: str | None = None


@dataclass(frozen=True)
class Readiness:
    """A readinessProbe: `path` None means a TCP connect (tcpSocket, or no httpGet)."""

    port: int
    path: str | None
    failure_threshold: int = 3


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    env: tuple[Mapping[str, Any], ...]
    env_from: tuple[Mapping[str, Any], ...]
    ports: tuple[ContainerPort, ...]
    readiness: Readiness | None

    @property
    def port(self) -> int:
        """Where the pod listens (its PORT): the first containerPort."""
        return self.ports[0].number if self.ports else DEFAULT_CONTAINER_PORT

    def named_ports(self) -> dict[str, int]:
        return {p.name: p.number for p in self.ports if p.name}


@dataclass(frozen=True)
class Deployment:
    manifest: Manifest
    budget: rolling.Budget
    template_hash: str
    labels: Mapping[str, str]
    container: Container

    @property
    def key(self) -> str:
        return self.manifest.key


def parse_deployment(manifest: Manifest) -> Deployment:
    spec = _mapping(manifest.body.get("spec"), "spec")
    template = _mapping(spec.get("template"), "spec.template")
    labels = _labels(_mapping(template.get("metadata") or {}, "spec.template.metadata"))
    selector = _labels_of(_mapping(spec.get("selector") or {}, "spec.selector"), "matchLabels")
    if any(labels.get(k) != v for k, v in selector.items()):
        raise SpecError("spec.selector.matchLabels does not match spec.template.metadata.labels")
    pod_spec = _mapping(template.get("spec"), "spec.template.spec")
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or len(containers) != 1:
        count = len(containers) if isinstance(containers, list) else 0
        raise SpecError(f"the local fleet runs exactly one container per pod, got {count}")
    return Deployment(
        manifest,
        _budget(spec),
        template_hash(template),
        labels,
        _container(_mapping(containers[0], "spec.template.spec.containers[0]")),
    )


def _budget(spec: Mapping[str, Any]) -> rolling.Budget:
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise SpecError(f"spec.replicas: expected an int, got {replicas!r}")
    strategy = _mapping(spec.get("strategy") or {}, "spec.strategy")
    kind = strategy.get("type", "RollingUpdate")
    if kind not in ("RollingUpdate", "Recreate"):
        raise SpecError(f"spec.strategy.type: expected RollingUpdate or Recreate, got {kind!r}")
    rolling_update = _mapping(strategy.get("rollingUpdate") or {}, "spec.strategy.rollingUpdate")
    return rolling.resolve(
        replicas,
        rolling_update.get("maxSurge"),
        rolling_update.get("maxUnavailable"),
        recreate=kind == "Recreate",
    )


def _container(raw: Mapping[str, Any]) -> Container:
    image = raw.get("image")
    if not isinstance(image, str) or not image:
        raise SpecError("spec.template.spec.containers[0].image is missing")
    ports = tuple(_port(p) for p in raw.get("ports") or [])
    return Container(
        str(raw.get("name", "")),
        image,
        tuple(_mapping(e, "env[]") for e in raw.get("env") or []),
        tuple(_mapping(e, "envFrom[]") for e in raw.get("envFrom") or []),
        ports,
        _readiness(raw.get("readinessProbe"), ports),
    )


def _port(raw: Any) -> ContainerPort:
    port = _mapping(raw, "ports[]")
    number = port.get("containerPort")
    if not isinstance(number, int) or not 0 < number < 65536:
        raise SpecError(f"ports[].containerPort: expected a port number, got {number!r}")
    name = port.get("name")
    return ContainerPort(number, str(name) if name else None)


def _readiness(raw: Any, ports: tuple[ContainerPort, ...]) -> Readiness | None:
    if raw is None:
        return None
    probe = _mapping(raw, "readinessProbe")
    threshold = probe.get("failureThreshold", 3)
    threshold = threshold if isinstance(threshold, int) and threshold > 0 else 3
    http = probe.get("httpGet")
    tcp = probe.get("tcpSocket")
    action = _mapping(http if http is not None else tcp or {}, "readinessProbe action")
    default = ports[0].number if ports else DEFAULT_CONTAINER_PORT
    port = _resolve_port(action.get("port", default), ports, "readinessProbe port")
    path = str(action.get("path") or "/") if http is not None else None
    return Readiness(port, path, threshold)


def _resolve_port(value: Any, ports: tuple[ContainerPort, ...], where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        for port in ports:
            if port.name == value:
                return port.number
    raise SpecError(f"{where}: {value!r} is neither a number nor a named containerPort")


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable hash of `spec.template`: equal templates, equal hashes, whatever the key order."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


# --- env ---------------------------------------------------------------------------------

Lookup = Callable[[str, str, str], Manifest | None]  # (kind, namespace, name) -> manifest


def resolve_env(container: Container, namespace: str, lookup: Lookup) -> dict[str, str]:
    """The container's environment: `envFrom` first, then `env` on top, like the kubelet."""
    env: dict[str, str] = {}
    for source in container.env_from:
        prefix = str(source.get("prefix") or "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if field in source:
                ref = _mapping(source[field], f"envFrom[].{field}")
                data = _data(lookup, kind, namespace, ref)
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for entry in container.env:
        name = str(entry.get("name", ""))
        if "value" in entry or "valueFrom" not in entry:
            env[name] = str(entry.get("value", ""))
            continue
        value = _value_from(lookup, namespace, name, _mapping(entry["valueFrom"], "valueFrom"))
        if value is not None:
            env[name] = value
    return env


def _value_from(lookup: Lookup, namespace: str, name: str, source: Mapping[str, Any]) -> str | None:
    for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        if field not in source:
            continue
        ref = _mapping(source[field], f"env[{name}].valueFrom.{field}")
        data = _data(lookup, kind, namespace, ref)
        key = str(ref.get("key", ""))
        if data is not None and key in data:
            return data[key]
        if data is not None and not ref.get("optional", False):
            raise EnvError(f"env {name}: key {key!r} not found in {kind} {ref.get('name')!r}")
        return None
    raise SpecError(f"env {name}: valueFrom supports configMapKeyRef and secretKeyRef only")


def _data(
    lookup: Lookup, kind: str, namespace: str, ref: Mapping[str, Any]
) -> dict[str, str] | None:
    """The data of the referenced ConfigMap or Secret; None when absent and optional."""
    name = str(ref.get("name", ""))
    manifest = lookup(kind, namespace, name)
    if manifest is None:
        if ref.get("optional", False):
            return None
        raise EnvError(f"{kind} {namespace}/{name} not found")
    if kind == "ConfigMap":
        return {str(k): str(v) for k, v in (manifest.body.get("data") or {}).items()}
    data = {
        str(k): _b64(v, f"Secret {name} key {k}")
        for k, v in (manifest.body.get("data") or {}).items()
    }
    data.update({str(k): str(v) for k, v in (manifest.body.get("stringData") or {}).items()})
    return data


def _b64(value: Any, where: str) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError) as e:
        raise EnvError(f"{where}: data is not base64") from e


# --- images ------------------------------------------------------------------------------


def image_command(
    image: str, images: Mapping[str, Sequence[str]], python: str
) -> tuple[str, ...] | None:
    """The argv standing in for `image`, or None when no entry of `images` maps it.

    `library-app:1.0.0` looks up `library-app`; `ghcr.io/x/library-app:1.0.0` looks up
    `ghcr.io/x/library-app`, then `library-app`. In the argv, `${tag}` becomes the tag
    (`latest` when there is none) and an element that is exactly `python` the interpreter.
    """
    name, tag = _split_image(image)
    argv = images.get(name)
    if argv is None:
        argv = images.get(name.rsplit("/", 1)[-1])
    if argv is None:
        return None
    return tuple(python if arg == "python" else arg.replace("${tag}", tag) for arg in argv)


def _split_image(image: str) -> tuple[str, str]:
    image = image.split("@", 1)[0]  # a digest pins content; the tag is what the argv gets
    slash, colon = image.rfind("/"), image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


# --- Services ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    manifest: Manifest
    selector: Mapping[str, str]
    target_port: int | str
    ingress: bool

    def resolve_target(self, container: Container) -> int | None:
        """The pod port traffic goes to: targetPort as a number, or a containerPort's name."""
        if isinstance(self.target_port, int):
            return self.target_port
        return container.named_ports().get(self.target_port)

    def endpoint(self, *, namespace: str, labels: Mapping[str, str], container: Container,
                 host: str) -> str | None:
        """`host:port` when this Service selects a pod so placed and labelled, else None.

        Readiness is the caller's to judge; no selector means no automatic endpoints, as in
        Kubernetes.
        """
        if not self.selector or namespace != self.manifest.namespace:
            return None
        if any(labels.get(key) != value for key, value in self.selector.items()):
            return None
        port = self.resolve_target(container)
        return f"{host}:{port}" if port is not None else None


def parse_service(manifest: Manifest) -> Service:
    spec = _mapping(manifest.body.get("spec") or {}, "spec")
    ports = spec.get("ports") or []
    if not isinstance(ports, list) or not ports:
        raise SpecError("spec.ports: a Service needs at least one port")
    first = _mapping(ports[0], "spec.ports[0]")
    target = first.get("targetPort", first.get("port"))
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if not isinstance(target, int | str) or isinstance(target, bool):
        raise SpecError(f"spec.ports[0].targetPort: expected a number or a name, got {target!r}")
    annotations = (manifest.body.get("metadata") or {}).get("annotations") or {}
    return Service(
        manifest,
        {str(k): str(v) for k, v in (spec.get("selector") or {}).items()},
        target,
        str(annotations.get(INGRESS_ANNOTATION, "")).lower() == "true",
    )


# --- helpers -----------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _labels(metadata: Mapping[str, Any]) -> dict[str, str]:
    return _labels_of(metadata, "labels")


def _labels_of(holder: Mapping[str, Any], field: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (holder.get(field) or {}).items()}
