"""`metalflow up`: run the server in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import CliError, ExitCode
from metalflow.config import Settings

OPTIONS = {"data_dir": "--data-dir", "database": "--database", "http": "--http"}


def up(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where SQLite, keys and tokens live.", show_default=False),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL, e.g. postgresql://...; default is SQLite in the data dir.",
            show_default=False,
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR:PORT", help="Address of the API and boot HTTP server.", show_default=False
        ),
    ] = None,
) -> None:
    """Run the metalflow server (API, boot services, controllers) until interrupted."""
    given: dict[str, Any] = {
        "data_dir": data_dir or cli_context(ctx).data_dir,
        "database": database,
        "http": http,
    }
    try:
        settings = Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise CliError(settings_error(exc), ExitCode.BAD_INPUT) from None
    from metalflow.server import serve

    serve(settings)


def settings_error(exc: ValidationError) -> str:
    """The first invalid setting, named as the option (or environment variable) that set it."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    option = OPTIONS.get(name, f"METALFLOW_{name.upper()}")
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if option in message else f"{option}: {message}"
