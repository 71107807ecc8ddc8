"""`metalflow template`: inspect workflow templates."""

from __future__ import annotations

from typing import Annotated

import typer

from metalflow.cli import render
from metalflow.cli.client import resource
from metalflow.cli.context import cli_context

app = typer.Typer(no_args_is_help=True, help="Inspect workflow templates.")


@app.command("list")
def list_templates(ctx: typer.Context) -> None:
    """List templates."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("templates")), render.templates)


@app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Template name.")]) -> None:
    """Delete a template (workflows keep the copy they were rendered from)."""
    cli = cli_context(ctx)
    cli.api.delete(resource("templates", name))
    cli.out.write(f"template/{name} deleted\n")


@app.command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Template name.")]) -> None:
    """Print a template's YAML as it was applied."""
    cli = cli_context(ctx)
    template = cli.api.get(resource("templates", name))
    if not cli.out.human:
        cli.out.document(template)
        return
    data = str(template.get("data") or "")
    cli.out.write(data if data.endswith("\n") or not data else data + "\n")
