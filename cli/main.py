"""The ``llmstd`` Typer application: registers one command per module and the global options."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from llmstd.cli import check, convert, inspect, maps, validate
from llmstd.cli.errors import DEBUG_ENV

from llmstd import __version__

app = typer.Typer(
    name="llmstd",
    help="Convert language-model checkpoints through one canonical format, and prove the result is the same model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmstd {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


app.command("convert")(convert.convert)
app.command("inspect")(inspect.inspect)
app.command("check")(check.check)
app.command("validate")(validate.validate)
app.add_typer(maps.app, name="maps")


def run() -> None:
    """Console-script entry point."""
    app()
