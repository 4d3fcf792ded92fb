"""Reading the local fleet's objects/: image mapping, template hash, env, specs, the poll."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from wavegate.localfleet import objects, rolling
from wavegate.localfleet.objects import Manifest

IMAGES = {
    "library-app": ["python", "-m", "library_app", "--version", "${tag}"],
    "ghcr.io/acme/tool": ["python3", "tool.py", "--release=${tag}"],
}


@pytest.mark.parametrize(
    ("image", "argv"),
    [
        ("library-app:1.0.0", ("/py", "-m", "library_app", "--version", "1.0.0")),
        ("ghcr.io/x/library-app:2.0.0", ("/py", "-m", "library_app", "--version", "2.0.0")),
        ("localhost:5000/library-app:1.2", ("/py", "-m", "library_app", "--version", "1.2")),
        ("library-app", ("/py", "-m", "library_app", "--version", "latest")),
        ("library-app:3@sha256:abcd", ("/py", "-m", "library_app", "--version", "3")),
        ("ghcr.io/acme/tool:9", ("python3", "tool.py", "--release=9")),  # only `python` is swapped
        ("nginx:1.25", None),
        ("ghcr.io/acme/other:1", None),
    ],
)
def test_image_command(image: str, argv: tuple[str, ...] | None) -> None:
    assert objects.image_command(image, IMAGES, "/py") == argv


def template(image: str = "library-app:1.0.0", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "library"}},
        "spec": {"containers": [{"name": "app", "image": image, **extra}]},
    }


def deployment(tmpl: dict[str, Any] | None = None, **spec: Any) -> Manifest:
    body: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"name": "library", "namespace": "library", "generation": 4},
        "spec": {"selector": {"matchLabels": {"app": "library"}}, "template": tmpl or template()},
    }
    body["spec"].update(spec)
    return Manifest.from_dict("Deployment.library.library", body)


def test_template_hash_is_of_the_template_only_and_ignores_key_order() -> None:
    a = template(ports=[{"containerPort": 8080}])
    b = json.loads(json.dumps(a, sort_keys=True))
    assert objects.template_hash(a) == objects.template_hash(b)
    assert objects.template_hash(a) != objects.template_hash(template("library-app:2.0.0"))
    one, three = (
        objects.parse_deployment(deployment(a)),
        objects.parse_deployment(deployment(a, replicas=3)),
    )
    assert one.template_hash == three.template_hash


def test_parse_deployment_defaults_like_kubernetes() -> None:
    dep = objects.parse_deployment(deployment())
    assert dep.budget == rolling.Budget(replicas=1, max_surge=1, max_unavailable=0)
    assert dep.container.port == objects.DEFAULT_CONTAINER_PORT
    assert dep.container.readiness is None
    assert dep.manifest.generation == 4


def test_parse_deployment_reads_strategy_ports_and_probe() -> None:
    dep = objects.parse_deployment(
        deployment(
            template(
                ports=[{"containerPort": 9000, "name": "http"}],
                readinessProbe={
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "failureThreshold": 2,
                },
            ),
            replicas=4,
            strategy={"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 1}},
        )
    )
    assert dep.budget == rolling.Budget(4, 2, 1)
    assert dep.container.port == 9000
    assert dep.container.readiness == objects.Readiness(9000, "/healthz", 2)


def test_tcp_probe_and_recreate() -> None:
    dep = objects.parse_deployment(
        deployment(
            template(ports=[{"containerPort": 7000}], readinessProbe={"tcpSocket": {"port": 7000}}),
            strategy={"type": "Recreate"},
        )
    )
    assert dep.container.readiness == objects.Readiness(7000, None)
    assert dep.budget.recreate


@pytest.mark.parametrize(
    ("tmpl", "spec", "message"),
    [
        (template(), {"selector": {"matchLabels": {"app": "other"}}}, "selector"),
        ({**template(), "spec": {"containers": []}}, {}, "exactly one container"),
        (template(readinessProbe={"httpGet": {"port": "nope"}}), {}, "named containerPort"),
        (template(), {"strategy": {"type": "BlueGreen"}}, "strategy.type"),
        (template(), {"replicas": "3"}, "replicas"),
        ({"metadata": {}, "spec": {"containers": [{"name": "x"}]}}, {"selector": {}}, "image"),
    ],
)
def test_parse_deployment_says_what_it_cannot_run(
    tmpl: dict[str, Any], spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(objects.SpecError, match=message):
        objects.parse_deployment(deployment(tmpl, **spec))


# --- env ---------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SOURCES = {
    ("ConfigMap", "library", "cfg"): {"data": {"greeting": "hello", "mode": "fast"}},
    ("Secret", "library", "creds"): {
        "data": {"password": _b64("s3cret"), "token": _b64("from-data")},
        "stringData": {"token": "from-stringData"},
    },
    ("Secret", "library", "broken"): {"data": {"x": "not base64!"}},
}


def lookup(kind: str, namespace: str, name: str) -> Manifest | None:
    body = SOURCES.get((kind, namespace, name))
    if body is None:
        return None
    return Manifest.from_dict(f"{kind}.{namespace}.{name}", {"kind": kind, **body})


def container(
    env: list[dict[str, Any]], env_from: list[dict[str, Any]] | None = None
) -> objects.Container:
    return objects.Container("app", "library-app:1", tuple(env), tuple(env_from or []), (), None)


def test_env_from_values_config_maps_and_secrets() -> None:
    env = objects.resolve_env(
        container(
            [
                {"name": "PLAIN", "value": "1"},
                {"name": "greeting", "value": "overridden"},  # env wins over envFrom
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                {
                    "name": "OPT",
                    "valueFrom": {
                        "configMapKeyRef": {"name": "gone", "key": "k", "optional": True}
                    },
                },
            ],
            [
                {"configMapRef": {"name": "cfg"}},
                {"secretRef": {"name": "creds"}, "prefix": "S_"},
                {"configMapRef": {"name": "absent", "optional": True}},
            ],
        ),
        "library",
        lookup,
    )
    assert env == {
        "greeting": "overridden",
        "mode": "fast",
        "S_password": "s3cret",
        "S_token": "from-stringData",
        "PLAIN": "1",
        "PW": "s3cret",
        "TOKEN": "from-stringData",
        "G": "hello",
    }


@pytest.mark.parametrize(
    ("env", "env_from", "message"),
    [
        (
            [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}],
            [],
            "ConfigMap library/gone not found",
        ),
        (
            [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey"}}}],
            [],
            "key 'nokey' not found",
        ),
        ([], [{"secretRef": {"name": "gone"}}], "Secret library/gone not found"),
        ([], [{"secretRef": {"name": "broken"}}], "not base64"),
    ],
)
def test_env_errors_name_what_is_missing(
    env: list[dict[str, Any]], env_from: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(objects.EnvError, match=message):
        objects.resolve_env(container(env, env_from), "library", lookup)


# --- Services ----------------------------------------------------------------------------


def service(ports: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> Manifest:
    body = {
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "library", "annotations": annotations or {}},
        "spec": {"selector": {"app": "library"}, "ports": ports},
    }
    return Manifest.from_dict("Service.library.web", body)


def test_service_target_ports() -> None:
    c = objects.Container("app", "i", (), (), (objects.ContainerPort(8080, "http"),), None)
    by_name = objects.parse_service(service([{"port": 80, "targetPort": "http"}]))
    assert by_name.resolve_target(c) == 8080 and not by_name.ingress
    by_number = objects.parse_service(service([{"port": 80, "targetPort": 9090}]))
    assert by_number.resolve_target(c) == 9090
    default = objects.parse_service(service([{"port": 8080}], {objects.INGRESS_ANNOTATION: "true"}))
    assert default.resolve_target(c) == 8080 and default.ingress
    unknown = objects.parse_service(service([{"port": 80, "targetPort": "grpc"}]))
    assert unknown.resolve_target(c) is None
    with pytest.raises(objects.SpecError, match="at least one port"):
        objects.parse_service(service([]))


# --- the poll ----------------------------------------------------------------------------


def write(folder: Path, name: str, body: Any) -> None:
    (folder / name).write_text(json.dumps(body))


def test_store_sees_new_changed_and_removed_files_and_skips_the_rest(tmp_path: Path) -> None:
    store = objects.Store(tmp_path)
    assert not store.refresh()
    write(tmp_path, "ConfigMap.ns.a.json", {"kind": "ConfigMap", "metadata": {"name": "a"}})
    write(tmp_path, ".ConfigMap.ns.b.json.123.tmp", {})
    (tmp_path / "notes.txt").write_text("x")
    assert store.refresh()
    assert list(store.manifests) == ["ConfigMap.ns.a"]
    assert store.find("ConfigMap", "ns", "a") is not None  # namespace from the file name
    assert not store.refresh()  # nothing changed: nothing re-read

    write(
        tmp_path,
        "ConfigMap.ns.a.json",
        {"kind": "ConfigMap", "metadata": {"name": "a"}, "data": {}},
    )
    os.utime(tmp_path / "ConfigMap.ns.a.json", ns=(1, 1))
    assert store.refresh()

    (tmp_path / "ConfigMap.ns.a.json").write_text("{half a fi")
    assert not store.refresh()  # unreadable: the last good version stays
    assert "ConfigMap.ns.a" in store.manifests

    (tmp_path / "ConfigMap.ns.a.json").unlink()
    assert store.refresh()
    assert store.manifests == {}
