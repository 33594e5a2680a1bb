"""`newspulse model ...` commands (training, evaluation, registry)."""

import typer

app = typer.Typer(help="Train, evaluate and manage sentiment models.", no_args_is_help=True)
