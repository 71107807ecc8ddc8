"""`metalflow machine`: inspect machines and their event history, and assign them to tenant
projects."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.text import Text

from metalflow.cli import render
from metalflow.cli.client import Json, resource
from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import ExitCode
from metalflow.cli.options import pairs

app = typer.Typer(
    no_args_is_help=True, help="Inspect machines and their events; assign them to projects."
)


@app.command("list")
def list_machines(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="Only machines in this state.", show_default=False)
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Only machines with this label; repeat for more.",
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(help="Only machines assigned to this project id.", show_default=False),
    ] = None,
) -> None:
    """List machines."""
    cli = cli_context(ctx)
    labels = [f"{key}={value}" for key, value in pairs(label, "--label").items()]
    params = {"state": state, "label": labels, "project": project}
    cli.out.emit(cli.api.get(resource("machines"), params=params), render.machines)


@app.command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Machine name.")]) -> None:
    """Show one machine: state, interfaces, disks and BMC."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("machines", name)), render.machine)


def _assigned(machine: Json) -> RenderableType:
    project = machine.get("project_id")
    owner = "the provider" if project is None else f"project {project}"
    return Text(f"machine/{machine['name']} assigned to {owner}")


def _assign(ctx: typer.Context, name: str, project: str | None) -> None:
    cli = cli_context(ctx)
    machine = cli.api.put(
        resource("machines", name, "project"),
        json={"project": project},
        check=f"check with `metalflow machine show {name}`",
    )
    cli.out.emit(machine, _assigned)


@app.command("assign")
def assign(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Machine name.")],
    project: Annotated[
        str, typer.Option(help="The tenant project's id (`metalflow project list`).")
    ],
) -> None:
    """Give a machine to a tenant project: its users see it, and power and provision it as
    their roles allow."""
    _assign(ctx, name, project)


@app.command("unassign")
def unassign(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Machine name.")]
) -> None:
    """Give a machine back to the provider."""
    _assign(ctx, name, None)


@app.command("transition")
def transition(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Machine name.")],
    event: Annotated[
        str,
        typer.Argument(help="maintenance, rescue, release, inspect, inspected, fail, ..."),
    ],
    reason: Annotated[
        str | None, typer.Option(help="Why, shown with the state.", show_default=False)
    ] = None,
) -> None:
    """Move a machine by hand (e.g. into maintenance and back with release)."""
    cli = cli_context(ctx)
    body = {"event": event, "reason": reason}
    cli.out.emit(cli.api.post(resource("machines", name, "transition"), json=body), render.machine)


@app.command("delete")
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Machine name.")]) -> None:
    """Delete a machine that no workflow holds, with its workflows and tokens."""
    cli = cli_context(ctx)
    cli.api.delete(resource("machines", name))
    cli.out.write(f"machine/{name} deleted\n")


@app.command("events")
def events(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Machine name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="At most this many past events.", show_default=False),
    ] = None,
) -> None:
    """Show a machine's events, oldest first."""
    cli = cli_context(ctx)
    params = {"machine": name, "limit": limit}
    if not follow:
        cli.out.emit(cli.api.get(resource("events"), params=params), render.events)
        return
    try:
        for event in cli.api.events(params):
            if cli.out.human:
                cli.out.print(render.event_line(event))
            else:
                cli.out.line(event)
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.OK) from None
