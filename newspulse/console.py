"""What every `newspulse` command shares, written once (the conventions are in docs/cli.md).

* :func:`settings_or_exit` reads the settings when a command runs (never for ``--help``, which
  works whatever the environment) and sets up logging from them;
* :class:`CommandGroup` turns an expected error (:class:`~newspulse.errors.NewsPulseError`: a bad
  setting, a missing model, an unreachable store, an unreadable input file) into one clear line
  on stderr and the :class:`~newspulse.errors.ExitCode` of its kind, in every sub-command, instead
  of a traceback, and gives the help pages metavars written for people;
* :func:`echo_json` is the one way a command prints its ``--json`` document, and
  :func:`open_existing_store` the one way a read command opens the store (it creates nothing);
* (a long-running command stops cleanly on SIGINT or SIGTERM through
  :func:`newspulse.signals.stop_on_signals`, which the Kafka consumer shares).

It sits in the command-line layer: it may be imported by every sub-app (``models/cli.py``,
``ingest/cli.py``, ``newspulse/alerts/cli.py``) and imports none of them, so the CLI has no cycles.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from newspulse.errors import ExitCode, NewsPulseError, NotFound
from newspulse.logs import configure_logging
from newspulse.settings import Settings, get_settings
from newspulse.store.base import Store

#: Loggers of the libraries the commands drive. Their lines (kafka-python logs every refused
#: connection as an ERROR, several times a second) drown the one line that says what went wrong,
#: and NewsPulse logs every failure that matters in its own words, so they are silenced unless
#: the user asks for them with ``newspulse -v``.
LIBRARY_LOGGERS = ("kafka", "elastic_transport", "elasticsearch", "urllib3", "httpx", "httpcore", "transformers", "onnxruntime", "streamlit", "trafilatura", "htmldate")


class CommandGroup(TyperGroup):
    """A Typer group whose sub-commands end with one line and their error's exit code on an
    expected error, and whose help pages show ``PATH``/``INTEGER``/``a|b`` instead of Python types."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NewsPulseError as err:
            typer.echo(f"{_command_name(ctx)}: {err}", err=True)
            raise typer.Exit(err.exit_code) from None

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            for param in command.get_params(ctx):  # with its --help option
                _humanize(param)
        return command

    def get_params(self, ctx: typer.Context) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            _humanize(param)
        return params


class _HumanOption(TyperOption):
    """Typer prints an option's Python type (``<bool>``, ``<list[Path]>``); people read the
    metavars of git or kubectl: none for a flag, ``PATH``, ``INTEGER``, ``store|kafka``."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None if self.is_flag else _metavar(self)


class _HumanArgument(TyperArgument):
    """An argument shows its name (``ALERT_ID``, ``[ALERT_ID]`` when optional) and no Python type
    beside it; Typer writes a required one as ``{ALERT_ID}``, which reads like a template."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _humanize(param: TyperOption | TyperArgument) -> None:
    """Give Typer's parameter its human help rendering (the class differs only in that)."""
    if type(param) is TyperOption:
        param.__class__ = _HumanOption
    elif type(param) is TyperArgument:
        param.__class__ = _HumanArgument
        param.metavar = param.metavar or (param.name or "").upper()


def _metavar(param: TyperOption) -> str:
    """The conventional placeholder of an option's value: ``a|b`` for a choice, else the kind."""
    if param.metavar:
        return param.metavar
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    kind = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
    if desc.is_path or desc.is_file or kind is Path:
        return "PATH"
    if kind is int:
        return "INTEGER"
    if kind is float:
        return "NUMBER"
    return "TEXT"


def _command_name(ctx: typer.Context) -> str:
    """``newspulse model train``, however the program was started (``python -m newspulse.cli`` too)."""
    names = [ctx.invoked_subcommand] if ctx.invoked_subcommand else []
    while ctx.parent is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["newspulse", *names])


def command_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer (sub-)app with the project's conventions: help when called bare, errors as one line."""
    return typer.Typer(help=help, cls=CommandGroup, no_args_is_help=True, pretty_exceptions_enable=False, **kwargs)


def quiet_libraries(verbose: bool) -> None:
    """Silence the library loggers (``verbose``: let them log at the configured level)."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.CRITICAL)


def settings_or_exit() -> Settings:
    """Validated settings, logging configured from them; a bad setting ends the command naming the
    variable (exit 3), also where a command runs outside :class:`CommandGroup`."""
    try:
        settings = get_settings()
    except NewsPulseError as err:
        typer.echo(f"newspulse: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def echo_json(doc: Any) -> None:
    """Print ``doc`` as the command's one JSON document on stdout (times as ISO 8601 strings)."""
    typer.echo(json.dumps(doc, sort_keys=True, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def echo_fields(doc: dict[str, Any]) -> None:
    """Print a result for people: one aligned ``name  value`` line per field, nested mappings
    flattened to dotted names (``throughput.production_int8.texts_per_s``), never a Python repr."""
    rows = list(_flatten(doc))
    width = max((len(name) for name, _ in rows), default=0)
    for name, value in rows:
        typer.echo(f"{name:{width}}  {value}")


def _flatten(doc: dict[str, Any], prefix: str = "") -> Any:
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, human(value)


def human(value: Any) -> str:
    """One value as a person reads it: ``-`` for nothing, items joined by commas, ISO 8601 times."""
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {human(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return ", ".join(human(v) for v in value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def open_existing_store(settings: Settings) -> Store:
    """The store for a command that only reads: an embedded SQLite file that does not exist is
    :class:`NotFound` (one line, exit 4) instead of a new empty database in the current folder."""
    from newspulse.wiring import open_store

    path = settings.sqlite_path
    if path is not None and not path.is_file():
        raise NotFound(
            f"no store at {path} (NEWSPULSE_STORE_URL={settings.store_url}); `newspulse store init` creates it, `newspulse replay` or `newspulse demo` fill it"
        )
    return open_store(settings)
