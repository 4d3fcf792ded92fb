"""The fleet file: clusters, the waves they roll out in, and the run policy.

`load` turns a fleet file into a frozen `Fleet` or raises an `InputError` that names the file,
the line and the field. `SHAPE` declares the file's fields; the readers take theirs from it and
`wavegate schema fleet` prints it. Everything here is pure: nothing is contacted while loading.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavegate.config import fields as schema
from wavegate.config import shapes, windows
from wavegate.config.yamlsource import FieldPath, Source
from wavegate.config.yamlsource import load as load_yaml

DRIVERS = ("kubernetes", "local")
ON_FAILURE = ("rollback-release", "rollback-failed", "halt")
DEFAULT_FLEET = Path("clusters/local.yaml")
IN_CLUSTER = "in-cluster"  # the context that means the pod's own service account

_CLUSTER = shapes.Obj("One cluster: where it is and what its templates are filled with.", {
    "name": shapes.Str("Unique name (in ledgers, locks, reports)"),
    "region": shapes.Str("Region; waves may select on it"),
    "context": shapes.Str(f"Kubeconfig context; {IN_CLUSTER!r} uses the pod's service account"),
    "endpoint": shapes.Str("Where checks send their requests (required for kubernetes)"),
    "namespace": shapes.Str("Namespace the app's objects go in"),
    "driver": shapes.Choice("How the cluster is reached", DRIVERS),
    "kubeconfig": shapes.Str("Kubeconfig file, relative to the fleet file"),
    "values": shapes.MapOf("Template values", shapes.Anything()),
    "labels": shapes.MapOf("Labels wave selectors match", shapes.Str()),
    "insecure_http": shapes.Bool("Probes may send tokens to a plain http:// endpoint"),
}, required=("name",))
_DEFAULTS = shapes.Obj("Values every cluster takes unless it sets its own", {
    key: _CLUSTER.fields[key]
    for key in ("namespace", "driver", "kubeconfig", "values", "insecure_http")})
_WAVE = shapes.Obj("Clusters deployed together, then checked and baked.", {
    "name": shapes.Str("Unique wave name"),
    "clusters": shapes.Strings("Cluster names", min_items=1),
    "selector": shapes.MapOf("Attributes (name, region, namespace, driver, label) the clusters "
                             "not yet in a wave must match", shapes.Anything(), min_items=1),
    "max_parallel": shapes.Int("Clusters deployed at once", minimum=1),
    "bake": shapes.Duration("How long checks keep passing before the next wave"),
}, required=("name",), exactly_one=(("clusters", "selector"),))
_WINDOWS = shapes.Obj("When deploys may start", {
    "allow": shapes.Strings("Allow windows, e.g. 'Mon-Thu 08:00-16:00 Europe/Amsterdam'"),
    "freeze": shapes.Strings("Freeze periods, e.g. '2025-12-20/2026-01-05'"),
})
_POLICY = shapes.Obj("How a run behaves.", {
    "on_failure": shapes.Choice("What a failed check does", ON_FAILURE),
    "check_interval": shapes.Duration("Time between check rounds while baking"),
    "check_timeout": shapes.Duration("Deadline of one probe"),
    "max_check_errors": shapes.Int("Consecutive check errors that count as a failure",
                                   minimum=1),
    "rollout_timeout": shapes.Duration("How long workloads may take to roll out"),
    "watch": shapes.Duration("Keep checking every cluster this long after the last wave"),
    "approval": shapes.Strings("Waves that wait for `wavegate promote`"),
    "windows": _WINDOWS,
    "history": shapes.Int("Ledger revisions kept per cluster and app", minimum=1),
})
_SECRET_REF = shapes.Obj("A secret value's source", {
    "env": shapes.Str("Environment variable holding the value")}, required=("env",))
_LOCAL = shapes.Obj("The local fleet: clusters run as local processes.", {
    "state_dir": shapes.Str("State folder, relative to the fleet file"),
    "images": shapes.MapOf("Image name (no tag) -> argv; ${tag} is the image tag",
                           shapes.Strings()),
    "secrets": shapes.MapOf("Secrets created in every cluster", shapes.MapOf(
        "Key -> where its value comes from", _SECRET_REF)),
}, required=("images",))
_WEBHOOK = shapes.Obj("A JSON POST on run events", {
    "url_env": shapes.Str("Environment variable holding the URL")}, required=("url_env",))
_NOTIFY = shapes.Obj("Where run events are posted.", {
    "webhooks": shapes.ListOf("Webhooks", _WEBHOOK)})
SHAPE = shapes.Obj("A wavegate fleet file: clusters, the waves they roll out in, the policy.", {
    "fleet": shapes.Str("The fleet's name"),
    "defaults": _DEFAULTS,
    "clusters": shapes.ListOf("The clusters", _CLUSTER, min_items=1),
    "waves": shapes.ListOf("Waves, in the order they run", _WAVE),
    "policy": _POLICY,
    "local": _LOCAL,
    "notify": _NOTIFY,
}, required=("fleet", "clusters", "waves"))


@dataclass(frozen=True)
class Cluster:
    name: str
    region: str
    driver: str
    namespace: str
    context: str | None = None
    endpoint: str | None = None
    kubeconfig: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    insecure_http: bool = False  # probes may send tokens to a plain http:// endpoint

    def attribute(self, key: str) -> str | None:
        """What a wave selector matches: name, region, namespace, driver or a label."""
        if key in ("name", "region", "namespace", "driver"):
            return str(getattr(self, key))
        return self.labels.get(key)


@dataclass(frozen=True)
class Wave:
    name: str
    clusters: tuple[str, ...]
    max_parallel: int
    bake: float


@dataclass(frozen=True)
class Windows:
    allow: tuple[windows.Allow, ...] = ()
    freeze: tuple[windows.Freeze, ...] = ()


@dataclass(frozen=True)
class Policy:
    on_failure: str = "rollback-release"
    check_interval: float = 30.0
    check_timeout: float = 10.0
    max_check_errors: int = 3
    rollout_timeout: float = 600.0
    watch: float = 0.0
    approval: tuple[str, ...] = ()
    windows: Windows = Windows()
    history: int = 10  # ledger revisions kept per cluster and app


@dataclass(frozen=True)
class Webhook:
    url_env: str


@dataclass(frozen=True)
class LocalFleet:
    state_dir: Path
    images: Mapping[str, tuple[str, ...]]
    secrets: Mapping[str, Mapping[str, str]]  # secret name -> key -> environment variable


@dataclass(frozen=True)
class Fleet:
    name: str
    path: Path
    clusters: tuple[Cluster, ...]
    waves: tuple[Wave, ...]
    policy: Policy
    local: LocalFleet | None = None
    webhooks: tuple[Webhook, ...] = ()

    def cluster(self, name: str) -> Cluster:
        return self._by_name[name]

    def wave_of(self, cluster: str) -> Wave:
        return next(wave for wave in self.waves if cluster in wave.clusters)

    @functools.cached_property
    def _by_name(self) -> dict[str, Cluster]:
        # Looked up once per cluster: a scan each time is quadratic in a 1,000-cluster fleet.
        return {cluster.name: cluster for cluster in self.clusters}


def resolve_path(path: Path | str | None) -> Path:
    """`-f`, else $WAVEGATE_FLEET, else clusters/local.yaml."""
    if path:
        return Path(path)
    return Path(os.environ.get("WAVEGATE_FLEET") or DEFAULT_FLEET)


def load(path: Path) -> Fleet:
    data, source = load_yaml(path)
    root = schema.record(data, (), source, SHAPE)
    defaults = _defaults(root.get("defaults", {}), source)
    clusters = _clusters(root["clusters"], defaults, source)
    waves = _waves(root["waves"], clusters, source)
    policy = _policy(root.get("policy", {}), {wave.name for wave in waves}, source)
    fleet = Fleet(
        name=schema.string(root["fleet"], ("fleet",), source),
        path=path,
        clusters=clusters,
        waves=waves,
        policy=policy,
        local=_local(root["local"], source) if "local" in root else None,
        webhooks=_webhooks(root.get("notify", {}), source),
    )
    _require_local_section(fleet, source)
    return fleet


def _defaults(value: Any, source: Source) -> dict[str, Any]:
    raw = dict(schema.record(value, ("defaults",), source, _DEFAULTS))
    if "values" in raw:
        raw["values"] = _values(raw["values"], ("defaults", "values"), source)
    return raw


def _values(value: Any, path: FieldPath, source: Source) -> Mapping[str, Any]:
    """Template values: any keys, but a mapping."""
    return schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())


def _clusters(value: Any, defaults: Mapping[str, Any], source: Source) -> tuple[Cluster, ...]:
    items = schema.sequence(value, ("clusters",), source)
    if not items:
        raise source.error(("clusters",), "a fleet needs at least one cluster")
    clusters: dict[str, Cluster] = {}
    for index, item in enumerate(items):
        cluster = _cluster(item, ("clusters", index), defaults, source)
        if cluster.name in clusters:
            raise source.error(("clusters", index, "name"), f"duplicate cluster {cluster.name!r}")
        clusters[cluster.name] = cluster
    return tuple(clusters.values())


def _cluster(value: Any, path: FieldPath, defaults: Mapping[str, Any], source: Source) -> Cluster:
    raw = schema.record(value, path, source, _CLUSTER)
    own_values = _values(raw.get("values", {}), path + ("values",), source)
    merged = {**defaults, **raw, "values": {**defaults.get("values", {}), **own_values}}

    def where(key: str) -> FieldPath:
        """Where a merged value was written: the cluster itself, or the defaults."""
        return path + (key,) if key in raw else ("defaults", key)

    driver = schema.choice(merged.get("driver", "local"), where("driver"), source, options=DRIVERS)
    cluster = Cluster(
        name=schema.string(merged["name"], path + ("name",), source),
        region=schema.string(merged.get("region", "local"), where("region"), source),
        driver=driver,
        namespace=schema.string(merged.get("namespace", "default"), where("namespace"), source),
        context=_optional_string(merged, "context", where, source),
        endpoint=_optional_string(merged, "endpoint", where, source),
        kubeconfig=_relative_path(merged.get("kubeconfig"), where("kubeconfig"), source),
        values=merged["values"],
        labels=_labels(raw.get("labels", {}), path + ("labels",), source),
        insecure_http=_flag(merged.get("insecure_http", False), where("insecure_http"), source),
    )
    if driver == "kubernetes" and cluster.endpoint is None:
        raise source.error(path, "a kubernetes cluster needs an endpoint for its checks")
    return cluster


def _optional_string(raw: Mapping[str, Any], key: str, where: Callable[[str], FieldPath],
                     source: Source) -> str | None:
    return schema.string(raw[key], where(key), source) if key in raw else None


def _flag(value: Any, path: FieldPath, source: Source) -> bool:
    if not isinstance(value, bool):
        raise source.error(path, f"expected true or false, got {value!r}")
    return value


def _relative_path(value: Any, path: FieldPath, source: Source) -> Path | None:
    if value is None:
        return None
    return source.file.parent / schema.string(value, path, source)


def _labels(value: Any, path: FieldPath, source: Source) -> dict[str, str]:
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    return {str(key): schema.string(item, path + (key,), source) for key, item in raw.items()}


def _waves(value: Any, clusters: tuple[Cluster, ...], source: Source) -> tuple[Wave, ...]:
    items = schema.sequence(value, ("waves",), source)
    known = {cluster.name: cluster for cluster in clusters}
    placed: dict[str, str] = {}
    waves: list[Wave] = []
    for index, item in enumerate(items):
        wave = _wave(item, ("waves", index), clusters, placed, source)
        if any(seen.name == wave.name for seen in waves):
            raise source.error(("waves", index, "name"), f"duplicate wave {wave.name!r}")
        for name in wave.clusters:
            if name not in known:
                raise source.error(("waves", index, "clusters"), f"unknown cluster {name!r}")
            if name in placed:
                raise source.error(("waves", index, "clusters"),
                                   f"cluster {name!r} is already in wave {placed[name]!r}")
            placed[name] = wave.name
        waves.append(wave)
    unplaced = [cluster.name for cluster in clusters if cluster.name not in placed]
    if unplaced:
        raise source.error(("waves",), f"cluster(s) in no wave: {', '.join(unplaced)}")
    return tuple(waves)


def _wave(
    value: Any, path: FieldPath, clusters: tuple[Cluster, ...], placed: Mapping[str, str],
    source: Source,
) -> Wave:
    raw = schema.record(value, path, source, _WAVE)
    if ("clusters" in raw) == ("selector" in raw):
        raise source.error(path, "a wave needs exactly one of 'clusters' or 'selector'")
    if "clusters" in raw:
        names = schema.strings(raw["clusters"], path + ("clusters",), source)
    else:
        names = _select(raw["selector"], path + ("selector",), clusters, placed, source)
    if not names:
        raise source.error(path, "a wave needs at least one cluster")
    return Wave(
        name=schema.string(raw["name"], path + ("name",), source),
        clusters=names,
        max_parallel=schema.integer(raw.get("max_parallel", len(names)),
                                    path + ("max_parallel",), source, minimum=1),
        bake=schema.duration(raw.get("bake", 0), path + ("bake",), source),
    )


def _select(
    value: Any, path: FieldPath, clusters: tuple[Cluster, ...], placed: Mapping[str, str],
    source: Source,
) -> tuple[str, ...]:
    """The clusters not yet placed whose attributes match every key (value or list of values)."""
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    if not raw:
        raise source.error(path, "an empty selector would match every cluster; list them instead")
    wanted = {key: {str(v) for v in (item if isinstance(item, list) else [item])}
              for key, item in raw.items()}
    chosen = [cluster.name for cluster in clusters if cluster.name not in placed and all(
        cluster.attribute(key) in values for key, values in wanted.items())]
    if not chosen:
        raise source.error(path, "selector matches no cluster that is not already in a wave")
    return tuple(chosen)


def _policy(value: Any, wave_names: set[str], source: Source) -> Policy:
    path: FieldPath = ("policy",)
    raw = schema.record(value, path, source, _POLICY)
    default = Policy()
    approval = schema.strings(raw.get("approval", []), path + ("approval",), source)
    for index, name in enumerate(approval):
        if name not in wave_names:
            raise source.error(path + ("approval", index), f"unknown wave {name!r}")
    return Policy(
        on_failure=schema.choice(raw.get("on_failure", default.on_failure),
                                 path + ("on_failure",), source, options=ON_FAILURE),
        check_interval=_positive(raw, "check_interval", default.check_interval, source),
        check_timeout=_positive(raw, "check_timeout", default.check_timeout, source),
        max_check_errors=schema.integer(raw.get("max_check_errors", default.max_check_errors),
                                        path + ("max_check_errors",), source, minimum=1),
        rollout_timeout=_positive(raw, "rollout_timeout", default.rollout_timeout, source),
        watch=schema.duration(raw.get("watch", 0), path + ("watch",), source),
        approval=approval,
        windows=_windows(raw.get("windows", {}), source),
        history=schema.integer(raw.get("history", default.history), path + ("history",),
                               source, minimum=1),
    )


def _positive(raw: Mapping[str, Any], key: str, default: float, source: Source) -> float:
    if key not in raw:
        return default
    seconds = schema.duration(raw[key], ("policy", key), source)
    if seconds <= 0:
        raise source.error(("policy", key), "must be longer than zero")
    return seconds


def _windows(value: Any, source: Source) -> Windows:
    path: FieldPath = ("policy", "windows")
    raw = schema.record(value, path, source, _WINDOWS)
    return Windows(
        allow=tuple(_parsed(windows.parse_allow, text, path + ("allow", index), source)
                    for index, text in enumerate(
                        schema.strings(raw.get("allow", []), path + ("allow",), source))),
        freeze=tuple(_parsed(windows.parse_freeze, text, path + ("freeze", index), source)
                     for index, text in enumerate(
                         schema.strings(raw.get("freeze", []), path + ("freeze",), source))),
    )


def _parsed(parser: Any, text: str, path: FieldPath, source: Source) -> Any:
    try:
        return parser(text)
    except ValueError as error:
        raise source.error(path, str(error)) from None


def _webhooks(value: Any, source: Source) -> tuple[Webhook, ...]:
    raw = schema.record(value, ("notify",), source, _NOTIFY)
    hooks = schema.sequence(raw.get("webhooks", []), ("notify", "webhooks"), source)
    result = []
    for index, item in enumerate(hooks):
        path = ("notify", "webhooks", index)
        hook = schema.record(item, path, source, _WEBHOOK)
        result.append(Webhook(schema.string(hook["url_env"], path + ("url_env",), source)))
    return tuple(result)


def _local(value: Any, source: Source) -> LocalFleet:
    path: FieldPath = ("local",)
    raw = schema.record(value, path, source, _LOCAL)
    images_raw = raw["images"]
    images = schema.mapping(images_raw, path + ("images",), source,
                            allowed=images_raw if isinstance(images_raw, dict) else ())
    state_dir = schema.string(raw.get("state_dir", ".wavegate/local"), path + ("state_dir",),
                              source)
    # Absolute, so a later change of working directory cannot move the fleet's state.
    return LocalFleet(
        state_dir=(source.file.parent / state_dir).resolve(),
        images={name: schema.strings(argv, path + ("images", name), source)
                for name, argv in images.items()},
        secrets=_local_secrets(raw.get("secrets", {}), path + ("secrets",), source),
    )


def _local_secrets(value: Any, path: FieldPath, source: Source) -> dict[str, dict[str, str]]:
    """`{secret: {key: {env: VAR}}}`: values come from the environment, never from the file."""
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    secrets: dict[str, dict[str, str]] = {}
    for name, keys in raw.items():
        keys_raw = schema.mapping(keys, path + (name,), source,
                                  allowed=keys if isinstance(keys, dict) else ())
        secrets[name] = {}
        for key, ref in keys_raw.items():
            where = path + (name, key)
            ref_raw = schema.record(ref, where, source, _SECRET_REF)
            secrets[name][key] = schema.string(ref_raw["env"], where + ("env",), source)
    return secrets


def _require_local_section(fleet: Fleet, source: Source) -> None:
    local = [cluster.name for cluster in fleet.clusters if cluster.driver == "local"]
    if local and fleet.local is None:
        raise source.error((), f"cluster(s) {', '.join(local)} use the local driver, which "
                               "needs a 'local:' section with 'images'")
