"""`metalflow provision`, `deprovision` and `agent-token`: a machine's life in one verb each."""

from __future__ import annotations

from typing import Annotated

import typer

from metalflow.cli import render
from metalflow.cli.client import resource
from metalflow.cli.context import cli_context
from metalflow.cli.options import HardwareMap, pairs

Machine = Annotated[str, typer.Argument(metavar="MACHINE", help="Machine name.")]


def provision(
    ctx: typer.Context,
    machine: Machine,
    template: Annotated[str, typer.Option(help="Template to run.", show_default=False)],
    hardware_map: HardwareMap = None,
    power: Annotated[
        bool | None,
        typer.Option(
            "--power/--no-power",
            help="Power the machine into PXE through its BMC first. [default: when it has one]",
            show_default=False,
        ),
    ] = None,
    reboot: Annotated[
        bool, typer.Option(help="After the workflow, reboot it into its disk through the BMC.")
    ] = False,
) -> None:
    """Start a provisioning workflow on a machine."""
    cli = cli_context(ctx)
    body = {
        "template": template,
        "hardware_map": pairs(hardware_map, "--map"),
        "power": power,
        "reboot": reboot,
    }
    response = cli.api.post(resource("machines", machine, "provision"), json=body)
    cli.out.emit(response, render.workflow_created)


def deprovision(
    ctx: typer.Context,
    machine: Machine,
    template: Annotated[
        str | None,
        typer.Option(
            help="Template of a wipe workflow to run (default: none).", show_default=False
        ),
    ] = None,
) -> None:
    """Release a machine, optionally running a deprovisioning workflow."""
    cli = cli_context(ctx)
    response = cli.api.post(
        resource("machines", machine, "deprovision"), json={"template": template}
    )
    cli.out.emit(response, render.deprovisioned)


def agent_token(ctx: typer.Context, machine: Machine) -> None:
    """Print a token for the machine's agent (and nothing else)."""
    cli = cli_context(ctx)
    response = cli.api.post(resource("machines", machine, "agent-token"))
    if cli.out.human:
        cli.out.write(f"{response['token']}\n")
    else:
        cli.out.document(response)
