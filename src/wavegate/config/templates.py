"""`${name}` placeholders, filled from a flat mapping; `$${` writes a literal `${`.

An unknown placeholder is an input error naming the template's file and line, so a typo never
reaches a cluster as a literal `${replcias}`.

`render` fills plain text. `render_yaml` fills a YAML template so that every value stays inside
the scalar (or key) it was written in: the template alone decides the structure, and a `--set`
or fleet value holding a newline, `: `, `---` or quotes cannot add keys, objects or documents.
It keeps every line where it was, so errors in the rendered text point at the template's lines.
A template's structure is parsed once (`_scan`, cached per text) and only its scalars are filled
for each cluster: a fleet of a thousand clusters parses each template once, not a thousand times.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from wavegate.config import yamlsource
from wavegate.errors import InputError

_PLACEHOLDER = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
# Tags a plain scalar may keep when its filled text resolves to them (`replicas: ${replicas}`
# stays a number); anything else becomes a quoted string.
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool", "null"))
# Anchors and tags written before a scalar (`&name`, `!!str`) are kept as written.
_PROPERTIES = re.compile(r"^(?:[&!]\S*\s+)*")
_RESOLVER = yaml.resolver.Resolver()  # the implicit types SafeLoader gives plain scalars
# Text a double-quoted YAML scalar holds unchanged: no escapes, no line folding.
_QUOTES_AS_IS = re.compile(r"[A-Za-z0-9 ._:/@+=,-]*")


def render(text: str, variables: Mapping[str, str], *, file: Path) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        return _value(match, text, variables, file)

    return _PLACEHOLDER.sub(substitute, text)


def placeholders(text: str) -> set[str]:
    return {match.group(2) for match in _PLACEHOLDER.finditer(text) if not match.group(1)}


@dataclass(frozen=True)
class _Filled:
    """A scalar of a template that holds placeholders: where it is and how it was written."""

    start: int
    end: int
    value: str  # the scalar's value, placeholders as tokens
    plain: bool  # written without quotes or block style
    written: str  # its text in the template (tokenised)


@dataclass(frozen=True)
class _Scan:
    """A template read once: placeholders numbered as tokens, and the scalars holding them."""

    tokenised: str
    scalars: tuple[_Filled, ...]


def render_yaml(text: str, variables: Mapping[str, str], *, file: Path) -> str:
    """`text` (YAML) with its placeholders filled inside their scalars, lines kept."""
    prefix = _unused_prefix(text)
    if any(prefix in value for value in variables.values()):
        prefix = _unused_prefix(text + "".join(variables.values()))
    # Every placeholder is known before the YAML is read: an unknown one is the error to show.
    fills = {f"{prefix}{index}q": "${" + match.group(2) + "}" if match.group(1)
             else _value(match, text, variables, file)
             for index, match in enumerate(_PLACEHOLDER.finditer(text))}
    if not fills:
        return text
    scan = _scan(text, prefix, file)
    edits = {scalar.start: (scalar.end, _scalar(scalar, prefix, fills))
             for scalar in scan.scalars}
    return _unfilled(_apply(scan.tokenised, edits), prefix, text, fills)


@functools.lru_cache(maxsize=64)
def _scan(text: str, prefix: str, file: Path) -> _Scan:
    tokens = iter(range(len(text)))
    # Letters and digits: a token is a plain scalar wherever the placeholder was written.
    tokenised = _PLACEHOLDER.sub(lambda match: f"{prefix}{next(tokens)}q", text)
    scalars: list[_Filled] = []
    done: set[int] = set()
    for document in yamlsource.compose_all(tokenised, file):
        _collect(document, tokenised, prefix, scalars, done)
    return _Scan(tokenised, tuple(scalars))


def _value(match: re.Match[str], text: str, variables: Mapping[str, str], file: Path) -> str:
    name = match.group(2)
    if name not in variables:
        line = text.count("\n", 0, match.start()) + 1
        known = ", ".join(sorted(variables))
        raise InputError(f"unknown placeholder ${{{name}}} (known: {known})",
                         file=file, line=line)
    return variables[name]


def _unused_prefix(text: str) -> str:
    prefix = "wgfill"
    while prefix in text:
        prefix += "x"
    return prefix


def _collect(node: yaml.Node, text: str, prefix: str, scalars: list[_Filled],
             done: set[int]) -> None:
    """Note each scalar holding a placeholder."""
    if id(node) in done:
        return  # an aliased node is written (and filled) once
    done.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if prefix in node.value:
            start, end = node.start_mark.index, node.end_mark.index
            scalars.append(_Filled(start, end, node.value, node.style is None,
                                   text[start:end]))
        return
    children = (node.value if isinstance(node, yaml.SequenceNode)
                else [part for pair in node.value for part in pair])
    for child in children:
        _collect(child, text, prefix, scalars, done)


def _scalar(scalar: _Filled, prefix: str, fills: Mapping[str, str]) -> str:
    """The filled scalar as YAML text, spanning as many lines as the one it replaces."""
    value = re.sub(rf"{prefix}\d+q", lambda match: fills.get(match[0], match[0]), scalar.value)
    properties = _PROPERTIES.match(scalar.written)
    kept = properties[0] if properties else ""
    if scalar.plain and "\n" not in value and _implicit_tag(value) in _PLAIN_TAGS:
        filled = value
    elif _QUOTES_AS_IS.fullmatch(value):
        filled = f'"{value}"'  # what the dumper below writes for it, a thousand times faster
    else:
        filled = yaml.safe_dump(value, default_style='"', width=2**31, allow_unicode=True)
        filled = filled.removesuffix("\n").removesuffix("...").rstrip("\n")
    return kept + filled + "\n" * scalar.written.count("\n")


def _implicit_tag(value: str) -> str:
    tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    return str(tag)


def _apply(text: str, edits: Mapping[int, tuple[int, str]]) -> str:
    parts, position = [], 0
    for start in sorted(edits):
        end, replacement = edits[start]
        parts += [text[position:start], replacement]
        position = end
    return "".join(parts) + text[position:]


def _unfilled(rendered: str, prefix: str, original: str, fills: Mapping[str, str]) -> str:
    """Placeholders outside any scalar (in a comment) are put back as written: no value is
    ever inserted where YAML would read it as structure."""
    written = iter(match[0] for match in _PLACEHOLDER.finditer(original))
    originals = {token: next(written) for token in fills}
    return re.sub(rf"{prefix}\d+q", lambda match: originals.get(match[0], match[0]), rendered)
