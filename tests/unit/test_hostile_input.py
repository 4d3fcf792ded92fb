"""Hostile input: files and values written to hang wavegate or to smuggle objects into a release.

Fleet files, apps and `--set` values come from pull requests and CI variables. An alias bomb
or a giant file is refused with one line naming the file (exit 2) before anything is touched,
and a template value always stays the one scalar it was written into: it cannot add keys,
objects or documents to what is applied.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wavegate.config import app, templates, yamlsource
from wavegate.config.fleet import Cluster
from wavegate.errors import EXIT_BAD_INPUT, InputError

CLUSTER = Cluster(name="prod-0", region="westeurope", driver="local", namespace="library",
                  values={"replicas": 2, "motd": "hello"})
CHECKS = "principals: {anonymous: {}}\nchecks:\n  - name: up\n    request: GET /version\n"
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: "cm-${cluster.name}"}
data:
  motd: ${motd}
  quoted: "${motd}"
  single: '${motd}'
  inline: {greeting: ${motd}, list: [${motd}, x]}
  block: |
    ${motd}
  replicas: ${replicas}
"""


def bomb(levels: int = 9) -> str:
    """The "billion laughs": nine levels of nine aliases, 9**9 strings from a 700-byte file."""
    text = 'lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in range(1, levels + 1):
        refs = ", ".join([f"*lol{level - 1}"] * 9)
        text += f"lol{level}: &lol{level} [{refs}]\n"
    return text


def make_app(root: Path, files: dict[str, str], checks: str = CHECKS) -> Path:
    folder = root / "app"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "checks.yaml").write_text(checks, encoding="utf-8")
    return folder


def render(folder: Path, **overrides: str) -> app.Release:
    return app.App.from_folder(folder).render(CLUSTER, "1.0.0", overrides)


# --- template values stay one scalar ---------------------------------------------------------

INJECTIONS = [
    pytest.param("x\nkind: Secret", id="newline-and-key"),
    pytest.param("x: y", id="colon-space"),
    pytest.param("x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}",
                 id="new-document"),
    pytest.param('x", "evil": "y', id="break-out-of-double-quotes"),
    pytest.param("x', 'evil': 'y", id="break-out-of-single-quotes"),
    pytest.param("x}, evil: {a: 1", id="break-out-of-flow-mapping"),
    pytest.param("x\n  evil: 1", id="indented-key"),
    pytest.param("&a x # comment", id="anchor-and-comment"),
    pytest.param("|\n  block", id="block-indicator"),
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_a_set_value_stays_the_one_scalar_it_was_written_into(tmp_path: Path, value: str) -> None:
    release = render(make_app(tmp_path, {"cm.yaml": CONFIGMAP}), motd=value)
    assert [m["kind"] for m in release.manifests] == ["ConfigMap"]
    data = release.manifests[0]["data"]
    assert sorted(data) == ["block", "inline", "motd", "quoted", "replicas", "single"]
    assert data["motd"] == data["quoted"] == data["single"] == value
    assert data["inline"] == {"greeting": value, "list": [value, "x"]}
    assert data["block"] == value + "\n"
    assert data["replicas"] == 2


@pytest.mark.parametrize("value", INJECTIONS)
def test_a_fleet_value_stays_one_scalar_in_the_checks_too(tmp_path: Path, value: str) -> None:
    checks = CHECKS + "    expect: {json: {motd: ${motd}}}\n"
    cluster = Cluster(name="c", region="r", driver="local", namespace="n",
                      values={"motd": value})
    folder = make_app(tmp_path, {"cm.yaml": "kind: ConfigMap\nmetadata: {name: cm}\n"}, checks)
    release = app.App.from_folder(folder).render(cluster, "1.0.0")
    suite = app.checks.load(release.checks, folder / "checks.yaml")
    assert [probe.check for probe in suite.probes] == ["up"]
    assert suite.probes[0].expectation.json == {"motd": value}  # type: ignore[union-attr]


def test_plain_values_keep_their_type_and_strings_their_text(tmp_path: Path) -> None:
    release = render(make_app(tmp_path, {"cm.yaml": CONFIGMAP}), motd="true", replicas="7")
    data = release.manifests[0]["data"]
    assert (data["motd"], data["quoted"], data["replicas"]) == (True, "true", 7)
    assert release.manifests[0]["metadata"]["name"] == "cm-prod-0"


def test_rendered_yaml_keeps_every_line_where_the_template_wrote_it() -> None:
    rendered = templates.render_yaml(CONFIGMAP + "tail: ${nope}\n",
                                     {"cluster.name": "c", "motd": "a\nb\nc", "replicas": "1",
                                      "nope": "z"}, file=Path("t.yaml"))
    assert len(rendered.splitlines()) == len(CONFIGMAP.splitlines()) + 1
    assert rendered.splitlines()[-1] == 'tail: "z"'


def test_a_placeholder_in_a_comment_is_left_as_written() -> None:
    rendered = templates.render_yaml("a: 1  # ${x}\n", {"x": "\nkind: Secret"},
                                     file=Path("t.yaml"))
    assert rendered == "a: 1  # ${x}\n"


# --- alias bombs, deep nesting, giant files ---------------------------------------------------

def test_an_alias_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(bomb(), encoding="utf-8")
    with pytest.raises(InputError, match="aliases expand") as caught:
        yamlsource.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_an_alias_bomb_in_a_template_is_refused(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"cm.yaml": "kind: ConfigMap\nmetadata: {name: cm}\n"
                                            "data:\n" + "".join(f"  {line}\n" for line in
                                                                bomb().splitlines())})
    with pytest.raises(InputError, match="aliases expand") as caught:
        render(folder)
    assert str(folder / "cm.yaml") in str(caught.value)


def test_a_few_anchors_and_merge_keys_are_fine(tmp_path: Path) -> None:
    text = ("base: &base {namespace: library, driver: local}\n"
            "a: {<<: *base, name: a}\nb: {<<: *base, name: b}\nc: [*base, *base, *base]\n")
    data, _ = yamlsource.parse(text, tmp_path / "f.yaml")
    assert data["b"] == {"namespace": "library", "driver": "local", "name": "b"}


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("a: &a [1, *a]\n", "YAML alias refers to itself", id="self-alias"),
    pytest.param("[" * 20000 + "]" * 20000, "nested too deeply", id="deep-nesting"),
])
def test_cyclic_or_bottomless_yaml_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        yamlsource.parse(text, tmp_path / "f.yaml")


def test_a_file_over_10_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    with path.open("w") as handle:
        handle.truncate(yamlsource.MAX_BYTES + 1)  # sparse: no content, so never parsed
    with pytest.raises(InputError) as caught:
        yamlsource.load(path)
    assert str(caught.value) == f"{path}: file is 10.0 MiB; files over 10 MiB are refused"


def test_a_template_over_10_mib_is_refused_unread(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"cm.yaml": "kind: ConfigMap\n"})
    with (folder / "big.yaml").open("w") as handle:
        handle.truncate(yamlsource.MAX_BYTES + 1)
    with pytest.raises(InputError, match="files over 10 MiB are refused") as caught:
        app.App.from_folder(folder)
    assert str(folder / "big.yaml") in str(caught.value)


# --- through the CLI: exit 2, one line, nothing touched --------------------------------------

FLEET = """\
fleet: t
local: {state_dir: state, images: {app: [python]}}
clusters: [{name: a, values: {replicas: 1, motd: hi}}]
waves: [{name: w, clusters: [a]}]
"""


def wavegate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The timeout only keeps a regression from hanging the suite; nothing here is timed.
    return subprocess.run([sys.executable, "-m", "wavegate", *args], cwd=root, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("command", ["deploy", "plan"])
def test_an_alias_bomb_fleet_exits_2_naming_it_and_touches_nothing(tmp_path: Path,
                                                                    command: str) -> None:
    make_app(tmp_path, {"cm.yaml": CONFIGMAP})
    (tmp_path / "fleet.yaml").write_text(FLEET + bomb(), encoding="utf-8")
    extra = ["--dry-run"] if command == "deploy" else []
    done = wavegate(tmp_path, command, "./app", "--version", "1.0", "-f", "fleet.yaml", *extra)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip().splitlines() == [
        "wavegate: fleet.yaml: YAML aliases expand this file to over 1000 nodes from 60 "
        "written; refused (an alias bomb?)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "fleet.yaml"]


def test_a_giant_template_exits_2_naming_it(tmp_path: Path) -> None:
    folder = make_app(tmp_path, {"cm.yaml": CONFIGMAP})
    with (folder / "huge.yaml").open("w") as handle:
        handle.truncate(yamlsource.MAX_BYTES * 3)
    (tmp_path / "fleet.yaml").write_text(FLEET, encoding="utf-8")
    done = wavegate(tmp_path, "deploy", "./app", "--version", "1.0", "-f", "fleet.yaml",
                    "--dry-run")
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip() == ("wavegate: app/huge.yaml: file is 30.0 MiB; files over "
                                   "10 MiB are refused")
    assert not (tmp_path / "state").exists()


def test_a_set_value_cannot_add_an_object_through_the_cli(tmp_path: Path) -> None:
    # Before values stayed scalars, this value added a second document: a list, which the
    # render refused as "expected a Kubernetes object"; now it is the ConfigMap's text.
    make_app(tmp_path, {"cm.yaml": CONFIGMAP})
    (tmp_path / "fleet.yaml").write_text(FLEET, encoding="utf-8")
    done = wavegate(tmp_path, "deploy", "./app", "--version", "1.0", "-f", "fleet.yaml",
                    "--dry-run", "--set", "motd=x\n---\n- injected")
    assert done.returncode == 0, done.stderr
    assert "nothing was touched" in done.stdout
    assert not (tmp_path / "state").exists()
