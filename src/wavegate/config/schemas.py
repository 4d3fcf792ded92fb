"""The JSON Schemas of the files users write, built from the shapes their readers use.

`wavegate schema fleet|checks|app` prints them for editors (the yaml-language-server
`# yaml-language-server: $schema=...` line) and CI validators. Each comes from the `SHAPE` the
file's own module reads with, so a field wavegate accepts is a field the schema lists.
"""

from __future__ import annotations

from wavegate.config import app, checks, fleet, shapes

KINDS: dict[str, tuple[shapes.Obj, str]] = {
    "fleet": (fleet.SHAPE, "wavegate fleet file"),
    "checks": (checks.SHAPE, "wavegate checks file (checks.yaml)"),
    "app": (app.SHAPE, "wavegate app file (app.yaml)"),
}


def schema(kind: str) -> shapes.JsonSchema:
    """The JSON Schema of one kind of file (a key of `KINDS`)."""
    shape, title = KINDS[kind]
    return shapes.json_schema(shape, title=title)
