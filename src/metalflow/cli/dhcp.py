"""`metalflow dhcp`: what the DHCP server has handed out."""

from __future__ import annotations

from typing import Annotated

import typer

from metalflow.cli import render
from metalflow.cli.client import resource
from metalflow.cli.context import cli_context

app = typer.Typer(no_args_is_help=True, help="Inspect DHCP leases of the dynamic pools.")


@app.command("leases")
def leases(
    ctx: typer.Context,
    subnet: Annotated[
        str | None, typer.Option(help="Only this subnet, e.g. 192.0.2.0/24.", show_default=False)
    ] = None,
) -> None:
    """List pool leases (machines in inventory have reservations, not leases)."""
    cli = cli_context(ctx)
    params = {"subnet": subnet} if subnet else None
    cli.out.emit(cli.api.get(resource("dhcp", "leases"), params=params), render.leases)
