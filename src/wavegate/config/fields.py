"""Reading user-written YAML into typed values, one field at a time.

Each reader takes the raw value, its field path and the `Source`, and raises an `InputError`
naming file, line and field. Keeping the readers tiny and shared is what makes every config
error read the same way. `record` reads a mapping whose fields a `shapes.Obj` declares, so the
fields wavegate accepts and those its JSON Schema lists are one list.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from wavegate.config import durations, shapes
from wavegate.config.yamlsource import FieldPath, Source


def mapping(
    value: Any, path: FieldPath, source: Source, *, allowed: Collection[str],
    required: Collection[str] = (),
) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise source.error(path, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise source.error(path + (str(key),), f"unknown field (expected one of: {hint})")
    for key in required:
        if key not in value:
            raise source.error(path, f"missing required field {key!r}")
    return value


def record(value: Any, path: FieldPath, source: Source, shape: shapes.Obj) -> Mapping[str, Any]:
    """A mapping of the fields `shape` declares (an empty one if it is nullable and empty)."""
    if value is None and shape.nullable:
        return {}
    return mapping(value, path, source, allowed=shape.allowed, required=shape.required)


def string(value: Any, path: FieldPath, source: Source) -> str:
    if not isinstance(value, str) or not value:
        raise source.error(path, f"expected a non-empty string, got {_kind(value)}")
    return value


def integer(value: Any, path: FieldPath, source: Source, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise source.error(path, f"expected a whole number >= {minimum}, got {value!r}")
    return value


def duration(value: Any, path: FieldPath, source: Source) -> float:
    try:
        return durations.parse(value)
    except ValueError as error:
        raise source.error(path, str(error)) from None


def choice(value: Any, path: FieldPath, source: Source, *, options: Collection[str]) -> str:
    if value not in options:
        raise source.error(path, f"expected one of {', '.join(options)}, got {value!r}")
    return str(value)


def strings(value: Any, path: FieldPath, source: Source) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise source.error(path, f"expected a list, got {_kind(value)}")
    return tuple(string(item, path + (index,), source) for index, item in enumerate(value))


def sequence(value: Any, path: FieldPath, source: Source) -> list[Any]:
    if not isinstance(value, list):
        raise source.error(path, f"expected a list, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
