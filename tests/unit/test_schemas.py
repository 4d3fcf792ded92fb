"""`wavegate schema`: the JSON Schemas editors and CI validate with agree with wavegate itself.

Every example that ships validates against its schema; a file using every field either knows
loads in wavegate and validates (the schema is not stricter than wavegate); and each broken
file below is refused by both, wavegate naming the field (the schema is not looser where it
can say so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from wavegate.cli import main
from wavegate.config import app, checks, fleet, schemas
from wavegate.errors import InputError
from wavegate.sandbox import kubefleet

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {
    "fleet": sorted((REPO / "clusters").glob("*.yaml")),
    "checks": sorted((REPO / "manifests").glob("*/checks.yaml"))
    + sorted((REPO / "tests").rglob("checks.yaml")),
    "app": sorted((REPO / "tests").rglob("app.yaml")),
}

FULL_FLEET = """\
fleet: everything
defaults:
  driver: kubernetes
  namespace: library
  kubeconfig: kubeconfig
  values: {replicas: 3, tier: {a: 1}}
  insecure_http: false
local:
  state_dir: .state
  images: {library-app: [python, -m, library_app, --version, "${tag}"]}
  secrets: {tokens: {alice: {env: LIBRARY_TOKEN_ALICE}}}
clusters:
  - {name: a, region: westeurope, context: in-cluster, endpoint: "https://a.example",
     labels: {ring: early}, values: {replicas: 1}}
  - {name: b, region: eastus, driver: local, namespace: other, endpoint: "http://127.0.0.1:1",
     insecure_http: true}
waves:
  - {name: canary, clusters: [a], max_parallel: 1, bake: 1h30m}
  - {name: rest, selector: {region: [eastus]}, bake: 0}
policy:
  on_failure: halt
  check_interval: 30s
  check_timeout: 500ms
  max_check_errors: 2
  rollout_timeout: 10m
  watch: 2h
  approval: [rest]
  windows: {allow: ["Mon-Fri 22:00-02:00 UTC"], freeze: ["2025-12-20/2026-01-05"]}
  history: 5
notify:
  webhooks: [{url_env: WAVEGATE_WEBHOOK}]
"""

FULL_CHECKS = """\
principals:
  alice: {token_env: ALICE}
  bob: {token_file: bob.token}
  carol: {token_command: [./token.sh, carol]}
  anonymous:
checks:
  - name: version
    request: GET /version
    expect: {status: [200, 204], json: {version: "1.0"}}
    severity: functional
    max_body: 64KiB
  - name: listing
    as: alice
    request: GET /api/spaces
    expect: {json_ids: {path: "$.spaces[*].id", subset_of: [a]}}
  - name: matrix
    authz_matrix:
      principals: [alice, anonymous]
      resources: {a: {request: GET /api/spaces/a, marker: a}}
      allow: {alice: [a]}
"""

# kind, the broken file, what wavegate's error says
BROKEN = [
    ("fleet", FULL_FLEET.replace("fleet: everything\n", ""), "missing required field 'fleet'"),
    ("fleet", FULL_FLEET.replace("context: in-cluster", "contxt: in-cluster"), "unknown field"),
    ("fleet", FULL_FLEET.replace("driver: local", "driver: docker"), "expected one of"),
    ("fleet", FULL_FLEET.replace("bake: 1h30m", "bake: soon"), "expected a duration"),
    ("fleet", FULL_FLEET.replace("max_parallel: 1", "max_parallel: 0"), "whole number >= 1"),
    ("fleet", FULL_FLEET.replace("clusters: [a], max", "clusters: [a], selector: {b: c}, max"),
     "exactly one of 'clusters' or 'selector'"),
    ("fleet", FULL_FLEET.replace("history: 5", "history: many"), "whole number"),
    ("fleet", FULL_FLEET.replace("insecure_http: true", "insecure_http: yes please"),
     "expected true or false"),
    ("fleet", FULL_FLEET.replace("{url_env: WAVEGATE_WEBHOOK}", "{url: https://x}"),
     "unknown field"),
    ("checks", FULL_CHECKS.replace("request: GET /version", "request: FETCH /version"),
     "expected 'METHOD /path'"),
    ("checks", FULL_CHECKS.replace("    request: GET /version\n", ""),
     "exactly one of 'request', 'authz_matrix' or 'access_drift'"),
    ("checks", FULL_CHECKS.replace("{token_env: ALICE}", "{token_env: ALICE, token_file: a}"),
     "at most one of"),
    ("checks", FULL_CHECKS.replace("status: [200, 204]", "status: [200, 42]"),
     "whole number >= 100"),
    ("checks", FULL_CHECKS.replace("severity: functional", "severity: fatal"), "expected one of"),
    ("checks", FULL_CHECKS.replace("max_body: 64KiB", "max_body: lots"), "expected a size"),
    ("checks", FULL_CHECKS.replace("subset_of: [a]", "subset_of: [a], equals: [a]"),
     "exactly one of 'subset_of' or 'equals'"),
    ("checks", FULL_CHECKS.replace('path: "$.spaces[*].id"', "path: spaces"),
     "starting with $"),
    ("checks", FULL_CHECKS.replace(", marker: a}", "}"), "missing required field 'marker'"),
    ("checks", FULL_CHECKS.replace("checks:\n", "checkz:\n"), "unknown field"),
    ("app", "render: helm template x\n", "expected a list"),
    ("app", "render: []\n", "at least one argument"),
    ("app", "render: [helm]\nvalues: x\n", "unknown field"),
    ("app", "{}\n", "missing required field 'render'"),
]


def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = schemas.schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def load_with_wavegate(kind: str, text: str, tmp_path: Path) -> None:
    if kind == "fleet":
        (tmp_path / "fleet.yaml").write_text(text)
        fleet.load(tmp_path / "fleet.yaml")
    elif kind == "checks":
        checks.load(text, tmp_path / "checks.yaml")
    else:
        folder = tmp_path / "some-app"
        folder.mkdir()
        (folder / "app.yaml").write_text(text)
        (folder / "checks.yaml").write_text("checks: [{name: up, request: GET /}]\n")
        app.App.from_folder(folder)


@pytest.mark.parametrize("kind", sorted(schemas.KINDS))
def test_the_command_prints_the_schema_wavegate_validates_with(kind: str) -> None:
    result = CliRunner().invoke(main, ["schema", kind])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == schemas.schema(kind)
    jsonschema.Draft202012Validator.check_schema(json.loads(result.output))


@pytest.mark.parametrize(("kind", "path"), [
    (kind, path) for kind, paths in SHIPPED.items() for path in paths],
    ids=lambda item: str(item.relative_to(REPO)) if isinstance(item, Path) else item)
def test_every_shipped_example_validates(kind: str, path: Path) -> None:
    validator(kind).validate(yaml.safe_load(path.read_text()))


def test_there_are_shipped_examples_of_each_kind() -> None:
    assert all(SHIPPED.values()), SHIPPED


def test_the_fleet_file_fleet_up_kube_writes_validates() -> None:
    source = fleet.load(REPO / "clusters" / "local.yaml")
    document: Any = kubefleet.fleet_document(
        source, {c.name: f"http://127.0.0.1:{9000 + i}" for i, c in enumerate(source.clusters)})
    validator("fleet").validate(document)


@pytest.mark.parametrize(("kind", "text"), [("fleet", FULL_FLEET), ("checks", FULL_CHECKS),
                                            ("app", "render: [helm, template, x]\n")])
def test_a_file_using_every_field_loads_and_validates(kind: str, text: str,
                                                      tmp_path: Path) -> None:
    load_with_wavegate(kind, text, tmp_path)
    validator(kind).validate(yaml.safe_load(text))


@pytest.mark.parametrize(("kind", "text", "message"), BROKEN,
                         ids=[f"{kind}-{index}" for index, (kind, _, _) in enumerate(BROKEN)])
def test_a_broken_file_is_refused_by_the_schema_and_by_wavegate(
        kind: str, text: str, message: str, tmp_path: Path) -> None:
    assert text not in (FULL_FLEET, FULL_CHECKS), "the edit must change the file"
    errors = list(validator(kind).iter_errors(yaml.safe_load(text)))
    assert errors, "the schema accepts it"
    with pytest.raises(InputError, match=message.replace("$", r"\$").replace("(", r"\(")):
        load_with_wavegate(kind, text, tmp_path)
