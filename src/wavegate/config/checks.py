"""The checks file: who probes (principals), what they try (checks), what must come back.

`load` parses `checks.yaml` (already rendered for a version) into a `Suite`; `Suite.probes`
expands it into the flat list of single requests a verification sends: every principal of an
authz matrix against every resource, each expected to be allowed or denied. Pure: no tokens are
read here and nothing is sent. `SHAPE` declares the file's fields: the readers take theirs from
it and `wavegate schema checks` prints it (a new check kind is one more field of `CHECK`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wavegate.config import fields as schema
from wavegate.config import shapes, sizes
from wavegate.config.yamlsource import FieldPath, Source, parse

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SEVERITIES = ("security", "functional")
DENIAL_STATUSES = (401, 403, 404)
DEFAULT_MAX_BODY = sizes.MIB  # an answer larger than this is an error, never read whole
TOKEN_SOURCES = ("token_env", "token_file", "token_command")

PRINCIPAL = shapes.Obj("Who probes, and where its token comes from (none: anonymous)", {
    "token_env": shapes.Str("Environment variable holding the token"),
    "token_file": shapes.Str("File holding the token (relative to the checks file)"),
    "token_command": shapes.Strings("Command whose stdout is the token, or JSON {token, "
                                    "expires_at}", min_items=1),
}, at_most_one=(TOKEN_SOURCES,), nullable=True)
REQUEST = shapes.Str("'METHOD /path'", pattern=rf"^({'|'.join(METHODS)}) /")
JSON_IDS = shapes.Obj("The ids a JSON path finds in the answer", {
    "path": shapes.Str("JSON path, such as $.spaces[*].id", pattern=r"^\$"),
    "subset_of": shapes.Strings("Every id found must be one of these"),
    "equals": shapes.Strings("The ids found must be exactly these"),
}, required=("path",), exactly_one=(("subset_of", "equals"),))
EXPECT = shapes.Obj("What the answer must show", {
    "status": shapes.OneOf("Expected status, or any of several", (
        shapes.Int(minimum=100), shapes.ListOf("", shapes.Int(minimum=100)))),
    "json": shapes.MapOf("Top-level JSON fields and their values", shapes.Anything()),
    "json_ids": JSON_IDS,
})
RESOURCE = shapes.Obj("How to fetch a resource, and a marker its body would show", {
    "request": REQUEST, "marker": shapes.Str("Text only the resource's body shows"),
}, required=("request", "marker"))
MATRIX = shapes.Obj("Every principal against every resource; what allow omits must be denied", {
    "principals": shapes.Strings("Principals to try", min_items=1),
    "resources": shapes.MapOf("Resources by name", RESOURCE, min_items=1),
    "allow": shapes.MapOf("Principal -> the resources it may read", shapes.Strings()),
}, required=("principals", "resources"))
CHECK = shapes.Obj("One check: a request and its expectation, or an authz matrix", {
    "name": shapes.Str("Shown in reports"),
    "request": REQUEST,
    "as": shapes.Str("The principal sending the request"),
    "expect": EXPECT,
    "authz_matrix": MATRIX,
    "severity": shapes.Choice("How a failure is reported", SEVERITIES),
    "max_body": shapes.Size("Largest answer read (default 1MiB)"),
}, required=("name",), exactly_one=(("request", "authz_matrix"),))
SHAPE = shapes.Obj("A wavegate checks file: an app's authorization contract.", {
    "principals": shapes.MapOf("Principals by name", PRINCIPAL),
    "checks": shapes.ListOf("The checks", CHECK, min_items=1),
}, required=("checks",))


@dataclass(frozen=True)
class Principal:
    name: str
    token_env: str | None = None
    token_file: Path | None = None
    token_command: tuple[str, ...] | None = None  # argv; stdout is the token (or JSON)
    line: int | None = None

    @property
    def sends_token(self) -> bool:
        return (self.token_env is not None or self.token_file is not None
                or self.token_command is not None)


@dataclass(frozen=True)
class Request:
    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class JsonIds:
    path: str
    subset_of: tuple[str, ...] | None = None
    equals: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Expect:
    """A single request's expectation; each given part must hold."""

    status: tuple[int, ...] = (200,)
    json: Mapping[str, Any] = field(default_factory=dict)
    json_ids: JsonIds | None = None


@dataclass(frozen=True)
class Allowed:
    """A matrix pair the allow-list grants: 2xx showing the resource's marker."""

    marker: str


@dataclass(frozen=True)
class Denied:
    """A matrix pair the allow-list does not grant: 401/403/404 without the marker."""

    marker: str


Expectation = Expect | Allowed | Denied


@dataclass(frozen=True)
class Probe:
    check: str
    principal: Principal | None
    request: Request
    expectation: Expectation
    severity: str
    max_body: int = DEFAULT_MAX_BODY


@dataclass(frozen=True)
class Suite:
    principals: Mapping[str, Principal]
    probes: tuple[Probe, ...]
    file: Path


def load(text: str, file: Path) -> Suite:
    data, source = parse(text, file)
    root = schema.record(data, (), source, SHAPE)
    principals = _principals(root.get("principals", {}), source)
    probes: list[Probe] = []
    items = schema.sequence(root["checks"], ("checks",), source)
    if not items:
        raise source.error(("checks",), "a checks file needs at least one check")
    for index, item in enumerate(items):
        probes.extend(_check(item, ("checks", index), principals, source))
    return Suite(principals=principals, probes=tuple(probes), file=file)


def _principals(value: Any, source: Source) -> dict[str, Principal]:
    raw = schema.mapping(value, ("principals",), source,
                         allowed=value if isinstance(value, dict) else ())
    principals = {}
    for name, spec in raw.items():
        path: FieldPath = ("principals", name)
        fields = schema.record(spec, path, source, PRINCIPAL)
        if len(fields) > 1:
            raise source.error(path, "give at most one of token_env, token_file or "
                                     "token_command")
        token_file = fields.get("token_file")
        principals[name] = Principal(
            name=name,
            token_env=schema.string(fields["token_env"], path + ("token_env",), source)
            if "token_env" in fields else None,
            token_file=source.file.parent / schema.string(token_file, path + ("token_file",),
                                                          source) if token_file else None,
            token_command=_command(fields["token_command"], path + ("token_command",), source)
            if "token_command" in fields else None,
            line=source.line(path),
        )
    return principals


def _command(value: Any, path: FieldPath, source: Source) -> tuple[str, ...]:
    """An argv; a program named by a relative path is found beside the checks file."""
    argv = schema.strings(value, path, source)
    if not argv:
        raise source.error(path, "expected a command: a list of at least one argument")
    program = Path(argv[0])
    if "/" in argv[0] and not program.is_absolute():
        return (str(source.file.parent / program), *argv[1:])
    return argv


def _check(value: Any, path: FieldPath, principals: Mapping[str, Principal],
           source: Source) -> list[Probe]:
    raw = schema.record(value, path, source, CHECK)
    name = schema.string(raw["name"], path + ("name",), source)
    if ("authz_matrix" in raw) == ("request" in raw):
        raise source.error(path, "a check needs exactly one of 'request' or 'authz_matrix'")
    if "max_body" in raw:
        # The limit applies to every probe the check expands to, matrix cells included.
        limit = _max_body(raw["max_body"], path + ("max_body",), source)
        rest = {key: item for key, item in raw.items() if key != "max_body"}
        return [replace(probe, max_body=limit)
                for probe in _check(rest, path, principals, source)]
    if "authz_matrix" in raw:
        severity = _severity(raw, path, source, default="security")
        return _matrix(raw["authz_matrix"], path + ("authz_matrix",), name, severity,
                       principals, source)
    expect = _expect(raw.get("expect", {}), path + ("expect",), source)
    default = "security" if expect.json_ids is not None else "functional"
    principal = _principal_ref(raw["as"], path + ("as",), principals, source) \
        if "as" in raw else None
    return [Probe(check=name, principal=principal,
                  request=_request(raw["request"], path + ("request",), source),
                  expectation=expect, severity=_severity(raw, path, source, default=default))]


def _max_body(value: Any, path: FieldPath, source: Source) -> int:
    try:
        return sizes.parse(value)
    except ValueError as error:
        raise source.error(path, str(error)) from None


def _severity(raw: Mapping[str, Any], path: FieldPath, source: Source, *, default: str) -> str:
    return schema.choice(raw.get("severity", default), path + ("severity",), source,
                         options=SEVERITIES)


def _matrix(value: Any, path: FieldPath, name: str, severity: str,
            principals: Mapping[str, Principal], source: Source) -> list[Probe]:
    raw = schema.record(value, path, source, MATRIX)
    who = [_principal_ref(item, path + ("principals", index), principals, source)
           for index, item in enumerate(schema.strings(raw["principals"],
                                                       path + ("principals",), source))]
    if not who:
        raise source.error(path + ("principals",), "a matrix needs at least one principal")
    resources = _resources(raw["resources"], path + ("resources",), source)
    allow = _allow(raw.get("allow", {}), path + ("allow",), who, resources, source)
    if not any(allow.values()):
        # The allowed pairs are the positive control: without one, an outage that refuses
        # everyone (404 to every request) would pass as a perfect deny.
        raise source.error(path + ("allow",) if "allow" in raw else path,
                           "a matrix needs at least one allowed pair under 'allow' (its "
                           "positive control: without one, an app that refuses everyone "
                           "passes)")
    probes = []
    for principal in who:
        for resource, (request, marker) in resources.items():
            granted = resource in allow.get(principal.name, ())
            expectation: Expectation = Allowed(marker) if granted else Denied(marker)
            probes.append(Probe(check=name, principal=principal, request=request,
                                expectation=expectation, severity=severity))
    return probes


def _resources(value: Any, path: FieldPath,
               source: Source) -> dict[str, tuple[Request, str]]:
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    if not raw:
        raise source.error(path, "a matrix needs at least one resource")
    resources = {}
    for name, spec in raw.items():
        where = path + (name,)
        fields = schema.record(spec, where, source, RESOURCE)
        resources[name] = (_request(fields["request"], where + ("request",), source),
                           schema.string(fields["marker"], where + ("marker",), source))
    return resources


def _allow(value: Any, path: FieldPath, who: list[Principal],
           resources: Mapping[str, Any], source: Source) -> dict[str, tuple[str, ...]]:
    names = {principal.name for principal in who}
    raw = schema.mapping(value or {}, path, source, allowed=names)
    allow = {}
    for principal, granted in raw.items():
        items = schema.strings(granted or [], path + (principal,), source)
        for index, resource in enumerate(items):
            if resource not in resources:
                raise source.error(path + (principal, index), f"unknown resource {resource!r}")
        allow[principal] = items
    return allow


def _principal_ref(value: Any, path: FieldPath, principals: Mapping[str, Principal],
                   source: Source) -> Principal:
    name = schema.string(value, path, source)
    if name not in principals:
        raise source.error(path, f"unknown principal {name!r} (not under 'principals')")
    return principals[name]


def _request(value: Any, path: FieldPath, source: Source) -> Request:
    text = schema.string(value, path, source)
    method, _, target = text.partition(" ")
    if method not in METHODS or not target.startswith("/"):
        raise source.error(path, f"expected 'METHOD /path', got {text!r}")
    return Request(method, target.strip())


def _expect(value: Any, path: FieldPath, source: Source) -> Expect:
    raw = schema.record(value, path, source, EXPECT)
    status = raw.get("status", 200)
    statuses = tuple(status) if isinstance(status, list) else (status,)
    for code in statuses:
        schema.integer(code, path + ("status",), source, minimum=100)
    json = raw.get("json", {})
    schema.mapping(json, path + ("json",), source, allowed=json if isinstance(json, dict) else ())
    return Expect(status=statuses, json=json,
                  json_ids=_json_ids(raw["json_ids"], path + ("json_ids",), source)
                  if "json_ids" in raw else None)


def _json_ids(value: Any, path: FieldPath, source: Source) -> JsonIds:
    raw = schema.record(value, path, source, JSON_IDS)
    if ("subset_of" in raw) == ("equals" in raw):
        raise source.error(path, "json_ids needs exactly one of 'subset_of' or 'equals'")
    json_path = schema.string(raw["path"], path + ("path",), source)
    if not json_path.startswith("$"):
        raise source.error(path + ("path",), f"expected a JSON path starting with $, got "
                                             f"{json_path!r}")
    key = "subset_of" if "subset_of" in raw else "equals"
    ids = schema.strings(raw[key] or [], path + (key,), source) if raw[key] != [] else ()
    return JsonIds(path=json_path, **{key: ids})
