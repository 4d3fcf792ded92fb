"""The small JSONPath subset checks need: `$`, `.key`, `['key']`, `[n]` and `[*]`."""

from __future__ import annotations

import re
from typing import Any

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[\*\]|\[(\d+)\]|\['([^']*)'\]")


def select(document: Any, path: str) -> list[Any]:
    """Every value `path` reaches in `document`; ValueError for a path outside the subset."""
    if not path.startswith("$"):
        raise ValueError(f"a JSON path starts with $: {path!r}")
    values = [document]
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if not match:
            raise ValueError(f"unsupported JSON path step at {path[position:]!r}")
        values = [item for value in values for item in _step(value, match)]
        position = match.end()
    return values


def _step(value: Any, match: re.Match[str]) -> list[Any]:
    key, index, quoted = match.group(1), match.group(2), match.group(3)
    if key is not None or quoted is not None:
        name = key if key is not None else quoted
        return [value[name]] if isinstance(value, dict) and name in value else []
    if index is not None:
        position = int(index)
        return [value[position]] if isinstance(value, list) and position < len(value) else []
    if isinstance(value, list):
        return list(value)
    return list(value.values()) if isinstance(value, dict) else []
