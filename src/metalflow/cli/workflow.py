"""`metalflow workflow`: create, inspect, watch and steer workflows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from metalflow.cli import render
from metalflow.cli.client import ApiClient, Json, resource
from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import ExitCode
from metalflow.cli.options import HardwareMap, pairs
from metalflow.cli.output import Output

app = typer.Typer(no_args_is_help=True, help="Create, inspect, watch and steer workflows.")

WorkflowId = Annotated[str, typer.Argument(metavar="ID", help="Workflow ID or name.")]
RECONNECT_DELAY = 1.0
"""Seconds to wait before reopening an event stream the server closed early."""


@app.command("create")
def create(
    ctx: typer.Context,
    machine: Annotated[str, typer.Option(help="Machine to run on.", show_default=False)],
    template: Annotated[str, typer.Option(help="Template to run.", show_default=False)],
    hardware_map: HardwareMap = None,
    name: Annotated[
        str | None, typer.Option(help="Workflow name (default chosen by the server).")
    ] = None,
) -> None:
    """Create a workflow running a template on a machine."""
    cli = cli_context(ctx)
    body = {
        "machine": machine,
        "template": template,
        "hardware_map": pairs(hardware_map, "--map"),
        "name": name,
    }
    cli.out.emit(cli.api.post(resource("workflows"), json=body), render.workflow_created)


@app.command("list")
def list_workflows(
    ctx: typer.Context,
    machine: Annotated[
        str | None, typer.Option(help="Only workflows of this machine.", show_default=False)
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="Only workflows in this state.", show_default=False)
    ] = None,
) -> None:
    """List workflows."""
    cli = cli_context(ctx)
    params = {"machine": machine, "state": state}
    cli.out.emit(cli.api.get(resource("workflows"), params=params), render.workflows)


@app.command("show")
def show(ctx: typer.Context, workflow_id: WorkflowId) -> None:
    """Show a workflow and its actions."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("workflows", workflow_id)), render.workflow)


@app.command("watch")
def watch(ctx: typer.Context, workflow_id: WorkflowId) -> None:
    """Follow a workflow until it ends; exit 0 if it succeeded, 1 otherwise."""
    cli = cli_context(ctx)
    workflow = cli.api.get(resource("workflows", workflow_id))
    updates = follow(cli.api, workflow)
    if cli.out.live:
        workflow = _watch_live(cli.out, workflow, updates)
    else:
        for event, current in updates:
            workflow = current
            if cli.out.human:
                cli.out.print(render.event_line(event))
    if cli.out.human:
        cli.out.print(render.workflow_state(workflow))
    else:
        cli.out.document(workflow)
    raise typer.Exit(ExitCode.OK if workflow["state"] == "SUCCESS" else ExitCode.FAILURE)


@app.command("cancel")
def cancel(ctx: typer.Context, workflow_id: WorkflowId) -> None:
    """Cancel a workflow."""
    _transition(ctx, workflow_id, "cancel")


@app.command("resume")
def resume(ctx: typer.Context, workflow_id: WorkflowId) -> None:
    """Resume a failed or timed-out workflow from the action that stopped it."""
    _transition(ctx, workflow_id, "resume")


@app.command("rerun")
def rerun(ctx: typer.Context, workflow_id: WorkflowId) -> None:
    """Run a finished workflow again from its first action."""
    _transition(ctx, workflow_id, "rerun")


@app.command("delete")
def delete(ctx: typer.Context, workflow_id: WorkflowId) -> None:
    """Delete a finished workflow and its journal."""
    cli = cli_context(ctx)
    cli.api.delete(resource("workflows", workflow_id))
    cli.out.write(f"workflow/{workflow_id} deleted\n")


def _transition(ctx: typer.Context, workflow_id: str, verb: str) -> None:
    cli = cli_context(ctx)
    cli.out.emit(cli.api.post(resource("workflows", workflow_id, verb)), render.workflow_state)


def follow(api: ApiClient, workflow: Json) -> Iterator[tuple[Json, Json]]:
    """Each event of a workflow with the workflow as it is after it, until it ends."""
    last_id: int | None = None
    while workflow["state"] not in render.TERMINAL_STATES:
        for event in api.events({"workflow": workflow["id"]}, after=last_id):
            last_id = event.get("id", last_id)
            workflow = api.get(resource("workflows", workflow["id"]))
            yield event, workflow
            if workflow["state"] in render.TERMINAL_STATES:
                return
        workflow = api.get(resource("workflows", workflow["id"]))
        if workflow["state"] not in render.TERMINAL_STATES:
            time.sleep(RECONNECT_DELAY)


def _watch_live(out: Output, workflow: Json, updates: Iterator[tuple[Json, Json]]) -> Json:
    """A progress bar of done/total actions with the current one; event lines scroll above."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out.console,
    )
    done, total = render.counts(workflow)
    task = bar.add_task(render.current_action(workflow), total=total or None, completed=done)
    with bar:
        for event, current in updates:
            bar.console.print(render.event_line(event))
            done, total = render.counts(current)
            bar.update(
                task,
                completed=done,
                total=total or None,
                description=render.current_action(current),
            )
            workflow = current
    return workflow
