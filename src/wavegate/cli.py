"""The command line's edge: the `wavegate` group, logging set up once, and the one place an
error becomes an exit code. Each command lives in `wavegate.commands.<name>`.

Every command ends the same way: `WavegateError` becomes one line on stderr and its exit code;
anything else is a bug, reported in one line (the traceback only with -v).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from wavegate.commands import (
    abort,
    check,
    completion,
    demo,
    deploy,
    fleet,
    history,
    plan,
    promote,
    report,
    resume,
    rollback,
    status,
)
from wavegate.errors import EXIT_NEEDS_HUMAN, WavegateError
from wavegate.outputs import logs

COMMANDS: tuple[click.Command, ...] = (
    plan.plan, deploy.deploy, resume.resume, promote.promote, abort.abort, rollback.rollback,
    status.status, history.history, check.check, fleet.fleet, completion.completion, demo.demo,
    report.report,
)


def _fail_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = command(*args, **kwargs)
        except WavegateError as error:
            click.echo(f"wavegate: {error}", err=True)
            sys.exit(error.exit_code)
        except Exception as error:
            if click.get_current_context().find_root().params.get("verbose"):
                raise
            click.echo(f"wavegate: internal error ({type(error).__name__}: {error}); "
                       "rerun with -v for details", err=True)
            sys.exit(EXIT_NEEDS_HUMAN)
        sys.exit(code or 0)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-format", type=click.Choice(["console", "json"]), default=None,
              help="Log lines as console text or JSON (default: JSON unless on a terminal).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs, and tracebacks for bugs.")
@click.version_option(package_name="wavegate")
@click.pass_context
def main(context: click.Context, log_format: str | None, verbose: bool) -> None:
    """Roll releases out in waves, prove authorization after every cluster, roll back alone."""
    interactive = sys.stdout.isatty()
    logs.configure(fmt=log_format or ("console" if interactive else "json"), verbose=verbose)
    context.obj = {"interactive": interactive and log_format != "json"}


def _guard(command: click.Command) -> click.Command:
    """Every leaf command's callback through `_fail_cleanly`; a group's own callback runs
    before its subcommand, so it is left as it is."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _guard(sub)
    elif command.callback is not None:
        command.callback = _fail_cleanly(command.callback)
    return command


for _command in COMMANDS:
    main.add_command(_guard(_command))
