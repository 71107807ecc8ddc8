"""`metalflow power ACTION MACHINE` and `metalflow bmc ...`: a machine's BMC from the shell.

Power actions are jobs on the server (queued, one per BMC, verified by polling the BMC): the
command waits for the job's end by default and exits 1 when it failed, with the BMC's words.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from metalflow.cli.client import ApiClient, Json, resource
from metalflow.cli.context import cli_context
from metalflow.cli.exit_codes import CliError, ExitCode

power_app = typer.Typer(no_args_is_help=True, help="Power a machine on or off through its BMC.")
bmc_app = typer.Typer(no_args_is_help=True, help="Ask a machine's BMC what it can do; media.")

Machine = Annotated[str, typer.Argument(metavar="MACHINE", help="Machine name.")]
Wait = Annotated[
    bool,
    typer.Option("--wait/--no-wait", help="Wait for the job to end (exit 1 if it failed)."),
]
Timeout = Annotated[float, typer.Option(metavar="SECONDS", help="Give up waiting after this long.")]
POLL_SECONDS = 25.0
"""Each long poll of the job; below any proxy's idle timeout."""


def _job_line(job: Json) -> RenderableType:
    text = Text(f"{job['operation']} {job['machine']}: ")
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(job["state"], "")
    text.append(job["state"], style=style)
    if job.get("message"):
        text.append(f" ({job['message']})")
    return text


def _finish(cli: Any, job: Json, wait: bool, timeout: float) -> None:
    api: ApiClient = cli.api
    deadline = time.monotonic() + timeout
    while wait and job["state"] in ("queued", "running") and time.monotonic() < deadline:
        left = max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
        job = api.get(resource("power-jobs", job["id"]), params={"wait": str(left)})
    cli.out.emit(job, _job_line)
    if wait and job["state"] in ("queued", "running"):
        raise CliError(f"power job {job['id']} still {job['state']} after {timeout:.0f}s")
    if wait and job["state"] != "succeeded":
        raise CliError(f"{job['operation']} {job['machine']}: {job['message']}", ExitCode.FAILURE)


def _power(action: str, help_text: str) -> None:
    def command(
        ctx: typer.Context, machine: Machine, wait: Wait = True, timeout: Timeout = 600.0
    ) -> None:
        cli = cli_context(ctx)
        job = cli.api.post(
            resource("machines", machine, "power"),
            json={"action": action},
            params={"wait": str(min(POLL_SECONDS, timeout)) if wait else "0"},
        )
        _finish(cli, job, wait, timeout)

    command.__doc__ = help_text
    power_app.command(action)(command)


for _action, _help in (
    ("on", "Power the machine on (verified: the BMC reports on)."),
    ("off", "Power the machine off at once (verified: the BMC reports off)."),
    ("soft-off", "Ask the OS to shut down (ACPI); verified off, with a longer timeout."),
    ("cycle", "Power off and on again (on, if it was off)."),
    ("reset", "Hard reset, without going through off."),
):
    _power(_action, _help)


def _status_view(data: Json) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_row("machine", data["machine"])
    table.add_row("driver", data.get("driver") or "-")
    table.add_row("power", data.get("state") or "unknown")
    table.add_row("as of", data.get("state_at") or "never read")
    if data.get("error"):
        table.add_row("error", Text(data["error"], style="red"))
    for what, seconds in (data.get("typical_seconds") or {}).items():
        table.add_row(f"typical {what}", f"{seconds:.1f}s")
    for job in data.get("jobs") or []:
        table.add_row("job", _job_line(job))
    return table


@power_app.command("status")
def status(ctx: typer.Context, machine: Machine) -> None:
    """The power state as the BMC last reported it, and the machine's recent power jobs."""
    cli = cli_context(ctx)
    cli.out.emit(cli.api.get(resource("machines", machine, "power")), _status_view)


@bmc_app.command("probe")
def probe(ctx: typer.Context, machine: Machine) -> None:
    """What the BMC supports: power, boot device, virtual media, and its own details."""
    cli = cli_context(ctx)
    data = cli.api.post(resource("machines", machine, "bmc", "probe"))

    def view(found: Json) -> RenderableType:
        table = Table.grid(padding=(0, 2))
        table.add_row("driver", found["driver"])
        for key in ("power", "boot_device", "virtual_media"):
            table.add_row(key.replace("_", " "), "yes" if found[key] else "no")
        for key, value in sorted((found.get("details") or {}).items()):
            table.add_row(key, str(value))
        return table

    cli.out.emit(data, view)


@bmc_app.command("boot-device")
def boot_device(
    ctx: typer.Context,
    machine: Machine,
    device: Annotated[str, typer.Argument(metavar="DEVICE", help="pxe, disk, cdrom or bios.")],
    persistent: Annotated[
        bool, typer.Option(help="Every boot from now on (default: the next boot only).")
    ] = False,
    efi: Annotated[bool, typer.Option("--efi/--legacy", help="UEFI or legacy BIOS boot.")] = True,
    wait: Wait = True,
    timeout: Timeout = 600.0,
) -> None:
    """Set the device the machine boots from (a job, like power actions)."""
    cli = cli_context(ctx)
    job = cli.api.post(
        resource("machines", machine, "boot-device"),
        json={"device": device, "persistent": persistent, "efi": efi},
        params={"wait": str(min(POLL_SECONDS, timeout)) if wait else "0"},
    )
    _finish(cli, job, wait, timeout)


@bmc_app.command("insert-media")
def insert_media(
    ctx: typer.Context,
    machine: Machine,
    url: Annotated[str, typer.Argument(metavar="URL", help="ISO image the BMC fetches.")],
) -> None:
    """Attach an ISO image as the machine's virtual CD."""
    cli = cli_context(ctx)
    data = cli.api.post(resource("machines", machine, "bmc", "media"), json={"url": url})
    cli.out.emit(data, lambda found: Text(f"{found['machine']}: virtual CD {found['media']}"))


@bmc_app.command("eject-media")
def eject_media(ctx: typer.Context, machine: Machine) -> None:
    """Detach the machine's virtual CD."""
    cli = cli_context(ctx)
    cli.api.delete(resource("machines", machine, "bmc", "media"))
    if cli.out.human:
        cli.out.write(f"{machine}: virtual CD ejected\n")
