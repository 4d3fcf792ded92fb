"""`wavegate completion`: the shell completion script for bash, zsh or fish."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(context: click.Context, shell: str) -> int:
    """Print the shell completion script: eval "$(wavegate completion bash)"."""
    completer = get_completion_class(shell)
    assert completer is not None  # click ships all three
    root = context.find_root().command  # every command, as registered on `wavegate`
    click.echo(completer(root, {}, "wavegate", "_WAVEGATE_COMPLETE").source())
    return 0
