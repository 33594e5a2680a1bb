"""What every `newspulse` command shares, written once.

* :func:`settings_or_exit` reads the settings once and sets up logging from them;
* :class:`CommandGroup` turns an expected error (:class:`~newspulse.errors.NewsPulseError`: a bad
  setting, a missing model, an unreachable store, an unreadable input file) into one clear line
  on stderr and exit code 2, in every sub-command, instead of a traceback;
* (a long-running command stops cleanly on SIGINT or SIGTERM through
  :func:`newspulse.signals.stop_on_signals`, which the Kafka consumer shares).

It sits in the command-line layer: it may be imported by every sub-app (``models/cli.py``,
``ingest/cli.py``, ``newspulse/alerts/cli.py``) and imports none of them, so the CLI has no cycles.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from newspulse.errors import NewsPulseError
from newspulse.logs import configure_logging
from newspulse.settings import Settings, get_settings

#: Exit code of a command that stopped on an expected error (bad input, setting or environment).
EXIT_ERROR = 2

class CommandGroup(TyperGroup):
    """A Typer group whose sub-commands end with one line and exit 2 on an expected error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsPulseError as err:
            typer.echo(f"{_command_name(ctx)}: {err}", err=True)
            raise typer.Exit(EXIT_ERROR) from None


def _command_name(ctx: click.Context) -> str:
    """``newspulse model train``, however the program was started (``python -m newspulse.cli`` too)."""
    names = [ctx.invoked_subcommand] if ctx.invoked_subcommand else []
    while ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["newspulse", *names])


def command_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer (sub-)app with the project's conventions: help when called bare, errors as one line."""
    return typer.Typer(help=help, cls=CommandGroup, no_args_is_help=True, pretty_exceptions_enable=False, **kwargs)


def settings_or_exit() -> Settings:
    """Validated settings, logging configured from them; a bad setting ends the command naming the
    variable (exit 2), also where a command runs outside :class:`CommandGroup`."""
    try:
        settings = get_settings()
    except NewsPulseError as err:
        typer.echo(f"newspulse: {err}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings
