"""YAML documents that remember where each value was written.

Config errors must name the file, the line and the field. `load` returns the plain data and a
`Source` that maps a field path such as `("clusters", 2, "region")` to its line, so validation
can stay in plain Python and still point at the right place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wavegate.errors import InputError

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Source:
    file: Path
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line(self, path: FieldPath) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: FieldPath, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.line(path), field=dotted(path))


def dotted(path: Iterable[str | int]) -> str | None:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or None


def load(path: Path) -> tuple[Any, Source]:
    """The single document in `path`, as data plus its line map."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", file=path) from None
    return parse(text, path)


def parse(text: str, path: Path) -> tuple[Any, Source]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _syntax_error(error, path) from None
    source = Source(path)
    if node is not None:
        _record_lines(node, (), source)
    return data, source


def parse_all(text: str, path: Path) -> list[tuple[Any, Source]]:
    """Every document of a multi-document file (manifest templates)."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise _syntax_error(error, path) from None
    result = []
    for node, data in zip(nodes, documents, strict=True):
        source = Source(path)
        if node is not None:
            _record_lines(node, (), source)
        result.append((data, source))
    return result


def _syntax_error(error: yaml.YAMLError, path: Path) -> InputError:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "invalid YAML"
    line = mark.line + 1 if mark is not None else None
    return InputError(f"YAML syntax error: {problem}", file=path, line=line)


def _record_lines(node: yaml.Node, path: FieldPath, source: Source) -> None:
    """Note each field's line; a key written twice is an error (YAML would keep the last)."""
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = path + (str(key_node.value),)
            if key_node.value in seen:
                raise InputError(f"duplicate key {key_node.value!r}", file=source.file,
                                 line=key_node.start_mark.line + 1, field=dotted(key))
            seen.add(key_node.value)
            source.lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), source)
