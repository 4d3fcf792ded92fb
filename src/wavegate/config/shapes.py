"""The shapes of the files users write, declared once: what the readers accept, as data.

Each config module declares its file's shape beside its readers (`fleet.SHAPE`,
`checks.SHAPE`, `app.SHAPE`) and the readers take their field names from it
(`fields.record`): the fields a mapping allows, which are required, which exclude each other.
The same declaration becomes the JSON Schema that `wavegate schema` prints (`json_schema`), so
an editor's schema and wavegate's own reading cannot disagree on the fields. What a reader
checks beyond a shape (a wave's clusters exist, a matrix has an allowed pair) stays in the
reader and its error; the schema says what it can and is never stricter than wavegate.

Pure data and one pure function: nothing is read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# What `durations.parse` and `sizes.parse` accept, for editors (wavegate reads them itself).
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|d|h|m|s))+\s*$"
SIZE_PATTERN = r"^\s*\d+\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$"
JsonSchema = dict[str, Any]


@dataclass(frozen=True)
class Str:
    description: str = ""
    pattern: str | None = None


@dataclass(frozen=True)
class Int:
    description: str = ""
    minimum: int = 0


@dataclass(frozen=True)
class Bool:
    description: str = ""


@dataclass(frozen=True)
class Choice:
    description: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class Duration:
    description: str = ""


@dataclass(frozen=True)
class Size:
    description: str = ""


@dataclass(frozen=True)
class Anything:
    description: str = ""


@dataclass(frozen=True)
class Strings:
    description: str = ""
    min_items: int = 0


@dataclass(frozen=True)
class ListOf:
    description: str
    item: Shape
    min_items: int = 0


@dataclass(frozen=True)
class MapOf:
    """A mapping whose keys the user chooses (cluster values, principals, resources)."""

    description: str
    value: Shape
    min_items: int = 0


@dataclass(frozen=True)
class OneOf:
    """A value that may take one of several shapes (`status: 200` or `status: [200, 204]`)."""

    description: str
    options: tuple[Shape, ...]


@dataclass(frozen=True)
class Obj:
    """A mapping with named fields; any other key is an error."""

    description: str
    fields: Mapping[str, Shape]
    required: tuple[str, ...] = ()
    exactly_one: tuple[tuple[str, ...], ...] = ()  # groups of fields: one of each, no more
    at_most_one: tuple[tuple[str, ...], ...] = ()
    nullable: bool = False  # `name:` with nothing after it reads as an empty mapping
    examples: tuple[Any, ...] = field(default=())

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(self.fields)


Shape = (Str | Int | Bool | Choice | Duration | Size | Anything | Strings | ListOf | MapOf
         | OneOf | Obj)


def json_schema(shape: Shape, *, title: str, id_: str | None = None) -> JsonSchema:
    """A whole file's JSON Schema (draft 2020-12)."""
    document: JsonSchema = {"$schema": DIALECT}
    if id_:
        document["$id"] = id_
    document["title"] = title
    document.update(_schema(shape))
    return document


def _schema(shape: Shape) -> JsonSchema:
    described = {"description": shape.description} if shape.description else {}
    return {**described, **_body(shape)}


def _body(shape: Shape) -> JsonSchema:
    match shape:
        case Str(pattern=pattern):
            return {"type": "string", "minLength": 1, **({"pattern": pattern} if pattern else {})}
        case Int(minimum=minimum):
            return {"type": "integer", "minimum": minimum}
        case Bool():
            return {"type": "boolean"}
        case Choice(options=options):
            return {"enum": list(options)}
        case Duration():
            return {"anyOf": [{"type": "string", "pattern": DURATION_PATTERN},
                              {"const": 0}]}
        case Size():
            return {"anyOf": [{"type": "string", "pattern": SIZE_PATTERN},
                              {"type": "integer", "minimum": 1}]}
        case Anything():
            return {}
        case Strings(min_items=least):
            return {"type": "array", "items": {"type": "string", "minLength": 1},
                    **({"minItems": least} if least else {})}
        case ListOf(item=item, min_items=least):
            return {"type": "array", "items": _schema(item),
                    **({"minItems": least} if least else {})}
        case MapOf(value=value, min_items=least):
            return {"type": "object", "additionalProperties": _schema(value),
                    **({"minProperties": least} if least else {})}
        case OneOf(options=options):
            return {"anyOf": [_schema(option) for option in options]}
        case Obj():
            return _object(shape)
    raise TypeError(f"not a shape: {shape!r}")


def _object(shape: Obj) -> JsonSchema:
    schema: JsonSchema = {
        "type": "object",
        "properties": {name: _schema(inner) for name, inner in shape.fields.items()},
        "additionalProperties": False,
    }
    if shape.required:
        schema["required"] = list(shape.required)
    rules: list[JsonSchema] = [{"oneOf": [{"required": [name]} for name in group]}
                               for group in shape.exactly_one]
    rules += [{"not": {"anyOf": [{"required": [first, second]}
                                 for index, first in enumerate(group)
                                 for second in group[index + 1:]]}}
              for group in shape.at_most_one]
    if rules:
        schema["allOf"] = rules
    return {"anyOf": [{"type": "null"}, schema]} if shape.nullable else schema
