"""`metalflow sandbox`: VMs provisioned end to end by metalflow on a private network on this host.

It is the shortest way to see metalflow work: a lab namespace (metalflow.sandbox.lab), metalflow
started in it, demo machines and a template applied, and QEMU VMs that netboot, get the test OS
written to their disks and boot it. The command shows each VM's way there, then removes
everything it created. The run's course is metalflow.sandbox.session's; this module adds the
options, the exit codes and what a terminal shows.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from metalflow import installenv
from metalflow.cli import render
from metalflow.cli.context import TOKEN_FILE, cli_context
from metalflow.cli.exit_codes import CliError, ExitCode
from metalflow.cli.output import Output
from metalflow.config import DEFAULT_DATA_DIR
from metalflow.sandbox import session
from metalflow.sandbox.lab import Lab, LabError
from metalflow.sandbox.osimage import BuildError, MissingPrerequisite, OsImage
from metalflow.sandbox.run import Sandbox, SandboxError
from metalflow.sandbox.session import (
    POLL_SECONDS,
    Firmware,
    Interrupted,
    Watch,
    follow,
    fresh,
    lab_tag,
    launch,
    prerequisites,
    summary,
    terminable,
    uninterrupted,
)
from metalflow.sandbox.vm import VmError

MAX_VMS = 8
INTERRUPTED = 130
"""What a shell reports for a command ended by Ctrl-C."""


def sandbox(
    ctx: typer.Context,
    vms: Annotated[
        int, typer.Option(min=1, max=MAX_VMS, help="How many VMs to provision at once.")
    ] = 1,
    firmware: Annotated[
        Firmware,
        typer.Option(help="VM firmware; mixed alternates BIOS (odd VMs) and UEFI (even VMs)."),
    ] = Firmware.BIOS,
    timeout: Annotated[
        float,
        typer.Option(min=1, metavar="SECONDS", help="Give up on a VM this long after it started."),
    ] = 900,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep metalflow running after the VMs finish, until Ctrl-C."),
    ] = False,
    bmc: Annotated[
        bool,
        typer.Option(
            "--bmc",
            help="Give each VM a BMC (metalflow's qemu power driver over QMP): the VMs stay off"
            " until their workflows power them into PXE.",
        ),
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="New or empty directory for the run (default: a temporary one, removed after"
            " a successful run).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the install environment and the test OS image are built and reused"
            " (default: as for `metalflow installenv build`).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Provision VMs end to end on a private boot network on this machine, then clean up.

    Exit 0 when every VM booted the disk metalflow wrote, 1 otherwise.
    """
    cli = cli_context(ctx)
    out = cli.out
    console = out.console if out.human else out.err
    if workdir is not None and not fresh(workdir):
        raise CliError(f"--workdir {workdir} is not a new or empty directory", ExitCode.BAD_INPUT)
    missing = prerequisites(firmware)
    if missing:
        for problem in missing:
            out.error(problem)
        raise typer.Exit(ExitCode.BAD_INPUT)
    try:
        with terminable():
            kernel, initrd, image = prepare(console, data_dir or cli.data_dir or DEFAULT_DATA_DIR)
            work = workdir or Path(tempfile.mkdtemp(prefix="metalflow-sandbox-", dir="/tmp"))
            work.mkdir(parents=True, exist_ok=True)
            try:
                tag = lab_tag()
            except SandboxError as exc:
                raise CliError(str(exc)) from None
            box = Sandbox(work.absolute(), Lab(tag), kernel, initrd, image)
            code = run(
                box,
                out,
                vms=vms,
                firmware=firmware,
                timeout=timeout,
                keep=keep,
                temporary=workdir is None,
                bmc=bmc,
            )
    except (KeyboardInterrupt, Interrupted):
        console.print("interrupted")
        raise typer.Exit(INTERRUPTED) from None
    raise typer.Exit(code)


def prepare(console: Console, data_dir: Path) -> tuple[Path, Path, OsImage]:
    """The run's kernel, initrd and image; what this machine lacks is the user's to fix (exit 2),
    a build that fails is not."""
    try:
        return session.prepare(data_dir, console.print)
    except (installenv.InstallEnvError, MissingPrerequisite) as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None
    except BuildError as exc:
        raise CliError(str(exc)) from None


def run(
    box: Sandbox,
    out: Output,
    *,
    vms: int,
    firmware: Firmware,
    timeout: float,
    keep: bool,
    temporary: bool,
    bmc: bool = False,
) -> int:
    """The lab, metalflow and the VMs until they are done; everything is removed at the end."""
    console = out.console if out.human else out.err
    succeeded = False
    try:
        watches = launch(box, console.print, vms, firmware, bmc=bmc)
        show(box, watches, console, live=out.live, timeout=timeout)
        succeeded = all(watch.booted for watch in watches)
        out.emit(summary(watches), render_summary)
        if keep:
            hold(box, console)
    except (LabError, VmError, SandboxError, httpx.HTTPError) as exc:
        raise CliError(str(exc).splitlines()[0]) from None
    finally:
        with uninterrupted():
            box.close()
            if succeeded and temporary and not keep:
                shutil.rmtree(box.workdir, ignore_errors=True)
            elif succeeded:
                console.print(f"workdir kept: {box.workdir}")
            else:
                logs = "metalflow.log, vms/*/serial.log, vms/*/qemu.stderr"
                console.print(f"logs kept in {box.workdir}: {logs}")
    return ExitCode.OK if succeeded else ExitCode.FAILURE


def show(
    box: Sandbox, watches: list[Watch], console: Console, *, live: bool, timeout: float
) -> None:
    """The VMs followed until done: a live table on a terminal, else one line per phase change."""
    if live:
        with Live(console=console, auto_refresh=False) as display:

            def table(watches: list[Watch], now: float) -> None:
                display.update(progress_table(watches, now), refresh=True)

            follow(box, watches, table, timeout=timeout)
        return
    shown = {watch.name: 0 for watch in watches}

    def lines(watches: list[Watch], now: float) -> None:
        for watch in watches:
            for label, entered in watch.phases[shown[watch.name] :]:
                console.print(f"[{entered - watch.vm.started:4.0f} s] {watch.name}: {label}")
            shown[watch.name] = len(watch.phases)

    follow(box, watches, lines, timeout=timeout)


def progress_table(watches: list[Watch], now: float) -> Table:
    grid = render.table("VM", "FIRMWARE", "PHASE", "ELAPSED")
    for watch in watches:
        grid.add_row(watch.name, watch.firmware, phase_text(watch), f"{watch.elapsed(now):.0f} s")
    return grid


def phase_text(watch: Watch) -> Text:
    if watch.failure is not None:
        return Text(watch.phase, style="red")
    return Text(watch.phase, style="green" if watch.marker is not None else "")


def render_summary(data: dict[str, Any]) -> RenderableType:
    grid = render.table("VM", "FIRMWARE", "OUTCOME", "SECONDS")
    times = []
    for vm in data["vms"]:
        if vm["booted"]:
            outcome = Text(f'booted its disk, marker "{vm["marker"]}"', style="green")
        else:
            outcome = Text(f"FAILED: {vm['failure']}", style="red")
        grid.add_row(vm["name"], vm["firmware"], outcome, f"{vm['seconds']:.0f}")
        phases = ", ".join(f"{p['phase']} {p['seconds']:.0f} s" for p in vm["phases"])
        times.append(Text(f"{vm['name']}: {phases}", style="dim"))
    return Group(Text(""), grid, Text(""), *times)


def hold(box: Sandbox, console: Console) -> None:
    """--keep: metalflow stays up for a look around until Ctrl-C (or SIGTERM)."""
    data = box.data_dir
    console.print(
        "\nmetalflow keeps running; Ctrl-C stops it and removes the lab.\n"
        f"  API          {box.lab.api_url}\n"
        f"  admin token  {data / TOKEN_FILE}\n"
        f"  workdir      {box.workdir}\n"
        f"  try          metalflow --url {box.lab.api_url} --data-dir {data} machine list"
    )
    try:
        while box.process is not None and box.process.poll() is None:
            time.sleep(POLL_SECONDS)
        console.print(f"metalflow exited; its log is {box.log_path}")
    except (KeyboardInterrupt, Interrupted):
        console.print("stopping")
