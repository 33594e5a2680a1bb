"""`newspulse alerts ...` commands."""

import typer

app = typer.Typer(help="Run the alerter and inspect alerts.", no_args_is_help=True)
