"""The checks file: who probes (principals), what they try (checks), what must come back.

`load` parses `checks.yaml` (already rendered for a version) into a `Suite`; `Suite.probes`
expands it into the flat list of single requests a verification sends: every principal of an
authz matrix against every resource, each expected to be allowed or denied. `access_drift`
checks are kept apart (`Suite.drifts`): their probes depend on what the live release answered
before the change, so `decide.drift` expands them once that baseline is known. Pure: no tokens
are read here and nothing is sent. `SHAPE` declares the file's fields: the readers take theirs
from it and `wavegate schema checks` prints it (a new check kind is one more field of `CHECK`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wavegate.config import fields as schema
from wavegate.config import requests, shapes, sizes
from wavegate.config.requests import METHODS as METHODS  # re-exported for callers
from wavegate.config.requests import Request as Request
from wavegate.config.yamlsource import FieldPath, Source, parse

SEVERITIES = ("security", "functional")
DENIAL_STATUSES = (401, 403, 404)
DEFAULT_MAX_BODY = sizes.MIB  # an answer larger than this is an error, never read whole
TOKEN_SOURCES = ("token_env", "token_file", "token_command")
DEFAULT_MAX_IDS = 50  # access_drift reads: ids per request, sampled evenly
MAX_SAMPLES = 100

PRINCIPAL = shapes.Obj("Who probes, and where its token comes from (none: anonymous)", {
    "token_env": shapes.Str("Environment variable holding the token"),
    "token_file": shapes.Str("File holding the token (relative to the checks file)"),
    "token_command": shapes.Strings("Command whose stdout is the token, or JSON {token, "
                                    "expires_at}", min_items=1),
}, at_most_one=(TOKEN_SOURCES,), nullable=True)
REQUEST = shapes.OneOf("'METHOD /path', or the request in parts", (
    shapes.Str("'METHOD /path'", pattern=rf"^({'|'.join(METHODS)}) /"),
    shapes.Obj("A request in parts (headers may not carry credentials)", {
        "method": shapes.Choice("HTTP method (default GET)", METHODS),
        "path": shapes.Str("Path, starting with /, without the query", pattern=r"^/"),
        "query": shapes.MapOf("Query parameters", shapes.Anything()),
        "headers": shapes.MapOf("Extra headers (never tokens)", shapes.Anything()),
        "json": shapes.Anything("JSON body"),
    }, required=("path",)),
))
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
DRIFT = shapes.Obj("Nobody sees more than the live release showed them before the change", {
    "principals": shapes.Strings("Principals to ask", min_items=1),
    "requests": shapes.MapOf("Requests by name, and where their answers list ids", shapes.Obj(
        "A listing or search, the ids it shows, and optionally how to read one id", {
            "request": REQUEST,
            "ids": shapes.Str("JSON path of the ids, such as $.spaces[*].id", pattern=r"^\$"),
            "read": REQUEST,
        }, required=("request", "ids")), min_items=1),
    "allow_new": shapes.MapOf("Principal -> ids this release may newly show it",
                              shapes.Strings()),
    "max_ids": shapes.Int("Most ids read per principal in the baseline (default 50)",
                          minimum=1),
}, required=("principals", "requests"))
CHECK = shapes.Obj("One check: a request and its expectation, an authz matrix, or access drift", {
    "name": shapes.Str("Shown in reports"),
    "request": REQUEST,
    "as": shapes.Str("The principal sending the request"),
    "expect": EXPECT,
    "authz_matrix": MATRIX,
    "severity": shapes.Choice("How a failure is reported", SEVERITIES),
    "access_drift": DRIFT,
    "max_body": shapes.Size("Largest answer read (default 1MiB)"),
    "samples": shapes.Int("Send each probe this many times; one failing answer fails it",
                          minimum=1),
}, required=("name",), exactly_one=(("request", "authz_matrix", "access_drift"),))
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


@dataclass(frozen=True)
class Seen:
    """What the live release answered one principal before the change: whether it served the
    request and, for a listing, the fingerprints of the ids it showed (never the ids)."""

    served: bool
    ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Unchanged:
    """access_drift: grant no more than the release before did. `before` None: no baseline
    (`note` says why), so there is nothing to compare and the probe passes unless it errors."""

    ids: str | None  # a listing's JSON path; None for a read of `target`
    before: Seen | None
    salt: str = ""
    version: str | None = None  # the release that answered `before`
    allow_new: frozenset[str] = frozenset()  # ids this release may newly show this principal
    target: str | None = None  # the id a read asks for
    note: str | None = None
    asks: str = ""  # the name of the check's request this probe repeats

    def saw(self, value: str) -> bool:
        return self.before is not None and fingerprint(self.salt, value) in self.before.ids


Expectation = Expect | Allowed | Denied | Unchanged


def fingerprint(salt: str, value: str) -> str:
    """How a baseline keeps an id: salted per run, so it is never written in clear and two
    runs' journals cannot be compared id by id."""
    return hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Probe:
    check: str
    principal: Principal | None
    request: Request
    expectation: Expectation
    severity: str
    max_body: int = DEFAULT_MAX_BODY
    samples: int = 1  # sent this many times (behind an ingress: several replicas); one bad
    # answer fails the probe


@dataclass(frozen=True)
class DriftRequest:
    """One question an access_drift check asks every principal: a listing, the JSON path of
    the ids it shows, and optionally how to read one of those ids directly."""

    name: str
    request: Request
    ids: str
    read: Request | None = None


@dataclass(frozen=True)
class AccessDrift:
    """An `access_drift` check: no principal may gain access the live release did not give."""

    check: str
    principals: tuple[Principal, ...]
    requests: tuple[DriftRequest, ...]
    allow_new: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_ids: int = DEFAULT_MAX_IDS
    samples: int = 1
    max_body: int = DEFAULT_MAX_BODY


@dataclass(frozen=True)
class Suite:
    principals: Mapping[str, Principal]
    probes: tuple[Probe, ...]
    file: Path
    drifts: tuple[AccessDrift, ...] = ()

    @property
    def senders(self) -> tuple[Principal, ...]:
        """Every principal some check sends as, probes and access_drift alike."""
        found = [probe.principal for probe in self.probes if probe.principal is not None]
        found += [who for drift in self.drifts for who in drift.principals]
        return tuple(dict.fromkeys(found))


def load(text: str, file: Path) -> Suite:
    data, source = parse(text, file)
    root = schema.record(data, (), source, SHAPE)
    principals = _principals(root.get("principals", {}), source)
    probes: list[Probe] = []
    drifts: list[AccessDrift] = []
    items = schema.sequence(root["checks"], ("checks",), source)
    if not items:
        raise source.error(("checks",), "a checks file needs at least one check")
    for index, item in enumerate(items):
        if isinstance(item, dict) and "access_drift" in item:
            drifts.append(_drift_check(item, ("checks", index), principals, source))
        else:
            probes.extend(_check(item, ("checks", index), principals, source))
    return Suite(principals=principals, probes=tuple(probes), file=file, drifts=tuple(drifts))


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
        raise source.error(path, "a check needs exactly one of 'request', 'authz_matrix' or "
                                 "'access_drift'")
    if "samples" in raw:
        count = _samples(raw["samples"], path + ("samples",), source)
        rest = {key: item for key, item in raw.items() if key != "samples"}
        return [replace(probe, samples=count)
                for probe in _check(rest, path, principals, source)]
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


def _samples(value: Any, path: FieldPath, source: Source) -> int:
    count = schema.integer(value, path, source, minimum=1)
    if count > MAX_SAMPLES:
        raise source.error(path, f"at most {MAX_SAMPLES} samples, got {count}")
    return count


def _drift_check(value: Any, path: FieldPath, principals: Mapping[str, Principal],
                 source: Source) -> AccessDrift:
    raw = schema.mapping(value, path, source,
                         allowed=("name", "access_drift", "max_body", "samples"),
                         required=("name",))
    name = schema.string(raw["name"], path + ("name",), source)
    where = path + ("access_drift",)
    spec = schema.mapping(raw["access_drift"], where, source,
                          allowed=("principals", "requests", "allow_new", "max_ids"),
                          required=("principals", "requests"))
    who = tuple(_principal_ref(item, where + ("principals", index), principals, source)
                for index, item in enumerate(schema.strings(spec["principals"],
                                                            where + ("principals",), source)))
    if not who:
        raise source.error(where + ("principals",), "access_drift needs at least one principal")
    return AccessDrift(
        check=name, principals=who,
        requests=_drift_requests(spec["requests"], where + ("requests",), source),
        allow_new=_allow_new(spec.get("allow_new", {}), where + ("allow_new",), who, source),
        max_ids=schema.integer(spec.get("max_ids", DEFAULT_MAX_IDS), where + ("max_ids",),
                               source, minimum=1),
        samples=_samples(raw.get("samples", 1), path + ("samples",), source),
        max_body=_max_body(raw["max_body"], path + ("max_body",), source)
        if "max_body" in raw else DEFAULT_MAX_BODY)


def _drift_requests(value: Any, path: FieldPath, source: Source) -> tuple[DriftRequest, ...]:
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    if not raw:
        raise source.error(path, "access_drift needs at least one request")
    found = []
    for name, spec in raw.items():
        where = path + (str(name),)
        fields = schema.mapping(spec, where, source, allowed=("request", "ids", "read"),
                                required=("request", "ids"))
        ids = schema.string(fields["ids"], where + ("ids",), source)
        if not ids.startswith("$"):
            raise source.error(where + ("ids",), f"expected a JSON path starting with $, got "
                                                 f"{ids!r}")
        read = _request(fields["read"], where + ("read",), source) if "read" in fields else None
        if read is not None and not read.names_id:
            raise source.error(where + ("read",), "a read must name the id it reads: {id}")
        found.append(DriftRequest(str(name), _request(fields["request"], where + ("request",),
                                                      source), ids, read))
    return tuple(found)


def _allow_new(value: Any, path: FieldPath, who: tuple[Principal, ...],
               source: Source) -> dict[str, frozenset[str]]:
    names = {principal.name for principal in who}
    raw = schema.mapping(value or {}, path, source, allowed=names)
    return {name: frozenset(schema.strings(ids or [], path + (name,), source))
            for name, ids in raw.items()}


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
    return requests.parse(value, path, source)


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
