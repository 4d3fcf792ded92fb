"""`wavegate schema fleet|checks|app`: a file kind's JSON Schema on stdout."""

from __future__ import annotations

import json

import click

from wavegate.config import schemas


@click.command()
@click.argument("kind", type=click.Choice(sorted(schemas.KINDS)))
def schema(kind: str) -> int:
    """Print the JSON Schema of a fleet file, a checks file or an app.yaml.

    For editors: save it and point the file at it with a first line such as
    `# yaml-language-server: $schema=./fleet.schema.json`.
    """
    click.echo(json.dumps(schemas.schema(kind), indent=2))
    return 0
