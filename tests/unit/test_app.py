"""Rendering an app for one cluster and version: what a driver would apply and a ledger store.

The repository's own `manifests/library-app` is rendered as the release engineer's reference;
small apps written into tmp_path pin the error cases, each naming the template file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from wavegate.config import app, checks, templates
from wavegate.config.checks import Expect
from wavegate.config.fleet import Cluster
from wavegate.errors import EXIT_BAD_INPUT, InputError

REPO = Path(__file__).resolve().parents[2]
LIBRARY_APP = REPO / "manifests" / "library-app"
PROD_2 = Cluster(name="prod-2", region="eastus", driver="local", namespace="library",
                 values={"replicas": 3})
CHECKS = "checks:\n  - name: serving\n    request: GET /version\n"


def by_kind(release: app.Release) -> dict[str, dict[str, Any]]:
    return {manifest["kind"]: manifest for manifest in release.manifests}


def make_app(root: Path, files: Mapping[str, str], *, name: str = "myapp",
             checks_text: str | None = CHECKS) -> Path:
    folder = root / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    if checks_text is not None:
        (folder / "checks.yaml").write_text(checks_text, encoding="utf-8")
    return folder


def render(folder: Path, *, version: str = "1.0.0", cluster: Cluster = PROD_2,
           overrides: Mapping[str, str] | None = None) -> app.Release:
    return app.App.from_folder(folder).render(cluster, version, overrides)


def refused(folder: Path, **kwargs: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        render(folder, **kwargs)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


# --- the Library App as shipped ------------------------------------------------------------------

def test_library_app_renders_image_tag_replicas_and_cluster_config() -> None:
    release = render(LIBRARY_APP, version="1.4.2")
    assert (release.app, release.version) == ("library-app", "1.4.2")
    assert sorted(by_kind(release)) == ["ConfigMap", "Deployment", "Service"]
    deployment = by_kind(release)["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "library-app:1.4.2"
    assert deployment["spec"]["replicas"] == 3  # from the cluster's values, as a number
    assert by_kind(release)["ConfigMap"]["data"] == {"LIBRARY_CLUSTER": "prod-2",
                                                    "LIBRARY_REGION": "eastus"}


def test_every_object_is_labelled_with_its_app_and_placed_in_the_cluster_namespace() -> None:
    release = render(LIBRARY_APP, cluster=Cluster(name="c", region="r", driver="local",
                                                  namespace="team-ns", values={"replicas": 1}))
    for manifest in release.manifests:
        metadata = manifest["metadata"]
        assert metadata["labels"][app.APP_LABEL] == "library-app", manifest["kind"]
        assert metadata["labels"][app.MANAGED_BY] == "wavegate"
        assert metadata["namespace"] == "team-ns"
    # Labels the template wrote are kept beside wavegate's own.
    assert by_kind(release)["Deployment"]["metadata"]["labels"]["app"] == "library-app"


def test_set_overrides_cluster_values() -> None:
    release = render(LIBRARY_APP, overrides=app.parse_overrides(["replicas=5"]))
    assert by_kind(release)["Deployment"]["spec"]["replicas"] == 5


def test_library_app_checks_are_rendered_for_the_release_version() -> None:
    release = render(LIBRARY_APP, version="1.4.2")
    assert 'version: "1.4.2"' in release.checks
    assert "${version}" not in release.checks
    suite = checks.load(release.checks, LIBRARY_APP / "checks.yaml")
    version_probe = next(p for p in suite.probes if p.check == "serving the new version")
    assert isinstance(version_probe.expectation, Expect)
    assert version_probe.expectation.json == {"version": "1.4.2"}


def test_resolve_finds_a_bare_name_under_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert app.resolve("library-app").path == Path("manifests/library-app")
    assert app.resolve(str(LIBRARY_APP)).name == "library-app"


# --- small apps: rendering rules ------------------------------------------------------------------

def test_a_dollar_dollar_brace_writes_a_literal_placeholder(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
        "data: {literal: '$${HOME}', filled: '${version}', both: '$${a}-${cluster.name}'}\n")})
    data = by_kind(render(folder, version="2.1.0"))["ConfigMap"]["data"]
    assert data == {"literal": "${HOME}", "filled": "2.1.0", "both": "${a}-prod-2"}


def test_variables_cover_version_cluster_values_and_app(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n"
        "  v: '${version}'\n  n: '${cluster.name}'\n  r: '${cluster.region}'\n"
        "  ns: '${cluster.namespace}'\n  app: '${app}'\n  tier: '${tier}'\n  env: '${env}'\n")},
        name="shop")
    cluster = Cluster(name="c9", region="mars", driver="local", namespace="shop-ns",
                      values={"tier": "gold", "env": {"A": 1}})
    data = by_kind(render(folder, version="3.0", cluster=cluster))["ConfigMap"]["data"]
    assert data == {"v": "3.0", "n": "c9", "r": "mars", "ns": "shop-ns", "app": "shop",
                    "tier": "gold", "env": "{A: 1}"}


def test_cluster_scoped_objects_get_no_namespace_and_explicit_namespaces_are_kept(
    tmp_path: Path,
) -> None:
    folder = make_app(tmp_path, {
        "a-ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: library}\n",
        "b-cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm, namespace: x}\n",
    })
    kinds = by_kind(render(folder))
    assert "namespace" not in kinds["Namespace"]["metadata"]
    assert kinds["Namespace"]["metadata"]["labels"][app.APP_LABEL] == "myapp"
    assert kinds["ConfigMap"]["metadata"]["namespace"] == "x"


def test_templates_render_in_file_name_order_and_documents_in_file_order(
    tmp_path: Path,
) -> None:
    folder = make_app(tmp_path, {
        "20-b.yaml": "kind: ConfigMap\nmetadata: {name: b1}\n---\n"
                     "kind: ConfigMap\nmetadata: {name: b2}\n---\n",
        "10-a.yml": "kind: ConfigMap\nmetadata: {name: a}\n",
        "notes.txt": "not a template ${nope}\n",
    })
    assert [m["metadata"]["name"] for m in render(folder).manifests] == ["a", "b1", "b2"]


# --- small apps: errors name the file and line ----------------------------------------------------

def test_an_unknown_placeholder_names_the_template_file_and_line(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"deploy.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n"
        "  replicas: ${replcias}\n")})
    error = refused(folder)
    where = folder / "deploy.yaml"
    assert str(error).startswith(f"{where}:5: unknown placeholder ${{replcias}}")
    assert "replicas" in str(error)  # the known names are listed, so the typo is obvious


def test_an_unknown_placeholder_in_checks_yaml_names_checks_yaml(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"cm.yaml": "kind: ConfigMap\nmetadata: {name: cm}\n"},
                      checks_text=CHECKS + "    expect: {json: {version: '${verison}'}}\n")
    assert str(refused(folder)).startswith(
        f"{folder / 'checks.yaml'}:4: unknown placeholder ${{verison}}")


def test_a_broken_checks_yaml_fails_the_render_before_anything_is_applied(
    tmp_path: Path,
) -> None:
    folder = make_app(tmp_path, {"cm.yaml": "kind: ConfigMap\nmetadata: {name: cm}\n"},
                      checks_text=CHECKS + "    as: mallory\n")
    assert str(refused(folder)).startswith(
        f"{folder / 'checks.yaml'}:4: checks[0].as: unknown principal 'mallory'")


@pytest.mark.parametrize(("text", "line", "message"), [
    pytest.param("apiVersion: v1\nmetadata: {name: a}\n", 1,
                 "expected a Kubernetes object with 'kind'", id="no-kind"),
    pytest.param("just some text\n", 1, "expected a Kubernetes object with 'kind'",
                 id="a-scalar"),
    pytest.param("kind: ConfigMap\nmetadata: {name: a}\n---\n# second\n- a list\n", 5,
                 "expected a Kubernetes object with 'kind'", id="second-document-a-list"),
    pytest.param("kind: ConfigMap\nmetadata: {name: a\n", 3, "YAML syntax error",
                 id="yaml-syntax"),
])
def test_a_template_that_is_not_a_kubernetes_object_is_refused(
    tmp_path: Path, text: str, line: int, message: str,
) -> None:
    folder = make_app(tmp_path, {"bad.yaml": text})
    error = refused(folder)
    assert str(error).startswith(f"{folder / 'bad.yaml'}:{line}: ")
    assert message in str(error)


@pytest.mark.parametrize("metadata", [
    pytest.param("metadata:\n  name: cm\n  labels:\n", id="labels-null"),
    pytest.param("metadata:\n", id="metadata-null"),
])
def test_empty_metadata_or_labels_still_get_the_app_label(tmp_path: Path, metadata: str) -> None:
    folder = make_app(tmp_path, {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\n" + metadata})
    manifest = render(folder).manifests[0]
    assert manifest["metadata"]["labels"][app.APP_LABEL] == "myapp"


@pytest.mark.parametrize(("files", "checks_text", "message"), [
    pytest.param({}, CHECKS, "app folder has no manifest templates", id="no-templates"),
    pytest.param({"cm.yaml": "kind: ConfigMap\n"}, None, "app folder has no checks.yaml",
                 id="no-checks"),
])
def test_an_incomplete_app_folder_is_refused(
    tmp_path: Path, files: dict[str, str], checks_text: str | None, message: str,
) -> None:
    folder = make_app(tmp_path, files, checks_text=checks_text)
    with pytest.raises(InputError) as caught:
        app.App.from_folder(folder)
    assert str(caught.value) == f"{folder}: {message}" + (
        "" if files else " (*.yaml), kustomization.yaml or app.yaml")


def test_a_missing_app_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="app folder not found") as caught:
        app.resolve(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(caught.value)


# --- --set and templates.render directly ----------------------------------------------------------

@pytest.mark.parametrize(("pairs", "expected"), [
    (["a=1"], {"a": "1"}),
    (["a=1", "b=x=y"], {"a": "1", "b": "x=y"}),
    (["a="], {"a": ""}),
    (["a=1", "a=2"], {"a": "2"}),
    ([], {}),
])
def test_parse_overrides(pairs: list[str], expected: dict[str, str]) -> None:
    assert app.parse_overrides(pairs) == expected


@pytest.mark.parametrize("pair", ["novalue", "=1"])
def test_parse_overrides_refuses_pairs_without_key_or_equals(pair: str) -> None:
    with pytest.raises(InputError, match="--set expects key=value") as caught:
        app.parse_overrides([pair])
    assert repr(pair) in str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("${a}", "A"),
    ("x${a}y${b.c}z", "xAyBCz"),
    ("$${a}", "${a}"),
    ("$$${a}", "$${a}"),  # a `$` then the escape `$${a}`: only `$${` is special
    ("$a {a} $ {a}", "$a {a} $ {a}"),  # not placeholders
    ("${a}${a}", "AA"),
])
def test_templates_render(text: str, expected: str) -> None:
    assert templates.render(text, {"a": "A", "b.c": "BC"}, file=Path("t.yaml")) == expected


def test_templates_render_is_single_pass() -> None:
    # A value that looks like a placeholder is data, never expanded again.
    assert templates.render("${a}", {"a": "${b}"}, file=Path("t.yaml")) == "${b}"


def test_templates_placeholders_skip_escapes() -> None:
    assert templates.placeholders("${a} $${b} ${c.d}") == {"a", "c.d"}
