"""What one probe sends: a method and a path, or a whole request (query, headers, JSON body).

A check's `request` is either `"GET /api/spaces"` or a mapping
`{method, path, query: {k: v}, headers: {k: v}, json: BODY}`, so POST search and GraphQL
endpoints can be checked too. Header values may carry template values (`${...}`, filled before
this module sees the file) but never a credential: tokens come only from principals, which is
what keeps them out of checks files, reports and logs. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

from wavegate.config import fields as schema
from wavegate.config.yamlsource import FieldPath, Source

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Headers that carry credentials; a checks file that sets one would put a secret in a file.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
CREDENTIAL_WORDS = ("token", "secret", "password", "api-key", "apikey", "auth")
ID_PLACEHOLDER = "{id}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None  # JSON text, sent as application/json
    # How reports and logs name the request when it differs from what is sent (a read of an
    # id the report must not show in clear).
    shown: str | None = field(default=None, compare=False)

    @property
    def target(self) -> str:
        """Path and query, as sent."""
        return f"{self.path}?{urlencode(self.query)}" if self.query else self.path

    def __str__(self) -> str:
        return self.shown or f"{self.method} {self.target}"

    def with_id(self, value: str, *, shown: bool) -> Request:
        """This request with `{id}` filled in; `shown=False` keeps the id out of its name."""
        path = self.path.replace(ID_PLACEHOLDER, quote(value, safe=""))
        query = tuple((k, v.replace(ID_PLACEHOLDER, value)) for k, v in self.query)
        body = self.body.replace(ID_PLACEHOLDER, json.dumps(value)[1:-1]) if self.body else None
        return replace(self, path=path, query=query, body=body,
                       shown=None if shown else str(self))

    @property
    def names_id(self) -> bool:
        return ID_PLACEHOLDER in self.path or any(ID_PLACEHOLDER in v for _, v in self.query) \
            or (self.body is not None and ID_PLACEHOLDER in self.body)


def parse(value: Any, path: FieldPath, source: Source) -> Request:
    if isinstance(value, dict):
        return _from_mapping(value, path, source)
    text = schema.string(value, path, source)
    method, _, target = text.partition(" ")
    if method not in METHODS or not target.startswith("/"):
        raise source.error(path, f"expected 'METHOD /path', got {text!r} (or a mapping: "
                                 "method, path, query, headers, json)")
    return Request(method, target.strip())


def _from_mapping(value: Mapping[str, Any], path: FieldPath, source: Source) -> Request:
    raw = schema.mapping(value, path, source,
                         allowed=("method", "path", "query", "headers", "json"),
                         required=("path",))
    method = schema.choice(raw.get("method", "GET"), path + ("method",), source,
                           options=METHODS)
    target = schema.string(raw["path"], path + ("path",), source)
    if not target.startswith("/") or "?" in target:
        raise source.error(path + ("path",), f"expected a path starting with / and no query "
                                             f"(give it under 'query'), got {target!r}")
    body = None
    if "json" in raw:
        body = json.dumps(raw["json"], sort_keys=True, separators=(",", ":"), default=str)
    return Request(method, target, query=_query(raw.get("query", {}), path + ("query",), source),
                   headers=_headers(raw.get("headers", {}), path + ("headers",), source),
                   body=body)


def _query(value: Any, path: FieldPath, source: Source) -> tuple[tuple[str, str], ...]:
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    return tuple((str(key), _scalar(item, path + (str(key),), source))
                 for key, item in raw.items())


def _headers(value: Any, path: FieldPath, source: Source) -> tuple[tuple[str, str], ...]:
    raw = schema.mapping(value, path, source, allowed=value if isinstance(value, dict) else ())
    headers = []
    for key, item in raw.items():
        name = str(key)
        lowered = name.lower()
        if lowered in CREDENTIAL_HEADERS or any(word in lowered for word in CREDENTIAL_WORDS):
            raise source.error(path + (name,), "a checks file may not set a credential header: "
                                               "tokens come only from principals")
        text = _scalar(item, path + (name,), source)
        if text.lower().startswith(("bearer ", "basic ")):
            raise source.error(path + (name,), "a header value may not carry a credential: "
                                               "tokens come only from principals")
        headers.append((name, text))
    return tuple(headers)


def _scalar(value: Any, path: FieldPath, source: Source) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise source.error(path, f"expected a string or a number, got {value!r}")
    return str(value)
