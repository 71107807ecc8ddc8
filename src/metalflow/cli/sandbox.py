"""`metalflow sandbox`: VMs provisioned end to end by metalflow on a private network on this host.

It is the shortest way to see metalflow work: a lab namespace (metalflow.sandbox.lab), metalflow
started in it, demo machines and a template applied, and QEMU VMs that netboot, get the test OS
written to their disks and boot it. The command shows each VM's way there, then removes
everything it created.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from types import FrameType
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
from metalflow.sandbox import lab as lab_setup
from metalflow.sandbox import vm as vm_setup
from metalflow.sandbox.lab import BRIDGE, PREFIX_LENGTH, SERVER_IP, Lab, LabError
from metalflow.sandbox.osimage import (
    HOST_TOOLS,
    BuildError,
    MissingPrerequisite,
    OsImage,
    build_os_image,
    require_tool,
)
from metalflow.sandbox.run import (
    DEMO_TEMPLATE,
    Sandbox,
    SandboxError,
    demo_template,
    machine_manifest,
    vm_address,
    vm_mac,
)
from metalflow.sandbox.vm import OVMF_CODE, OVMF_VARS, Vm, VmError

MAX_VMS = 8
IMAGE_CACHE = "sandbox-cache"
"""Under the data dir, beside the install environment, so that both are reused across runs."""
TAG_BASE = 10000
TAG_SPAN = 1000
"""Lab tags 10000-10999: the end-to-end tests' tags (f"{pid % 1000}{n}") stay below 10000 and
bench/e2e.py's default range is 11000-11999 (all distinct modulo lab.LINKS)."""
POLL_SECONDS = 1.0
EVENT_PAGE = 1000
INTERRUPTED = 130
"""What a shell reports for a command ended by Ctrl-C."""
MARKER = re.compile(r"OSIMG-MARKER ([^\r\n]*)\r?\n")
NO_MARKER = ("OSIMG-NO-MARKER", "OSIMG-NO-BOOT-PARTITION")
WORKFLOW_ENDED_BADLY = ("workflow.failed", "workflow.timeout", "workflow.cancelled")


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    MIXED = "mixed"
    """Odd-numbered VMs BIOS, even-numbered UEFI."""

    def uefi(self, index: int) -> bool:
        return self is Firmware.UEFI or (self is Firmware.MIXED and index % 2 == 0)


class Rank(IntEnum):
    """A phase only follows one of a lower rank: a late event or the second boot's DHCP never
    moves a VM backwards."""

    FIRMWARE = 0
    DHCP = 10
    IPXE = 20
    INSTALL_ENVIRONMENT = 30
    INSTALL_ENVIRONMENT_UP = 35
    AGENT = 40
    ACTION = 50
    """Plus the action's index."""
    REBOOTING = 90
    DISK = 100
    DISK_BOOTED = 110
    MARKER = 120


@dataclass
class Watch:
    """One VM's way from firmware to its own disk, as metalflow's events and its serial tell."""

    name: str
    uefi: bool
    vm: Vm
    phases: list[tuple[str, float]] = field(default_factory=list)
    rank: int = -1
    marker: str | None = None
    failure: str | None = None
    last_action_failure: str = ""
    ended: float | None = None

    @property
    def firmware(self) -> str:
        return "uefi" if self.uefi else "bios"

    @property
    def phase(self) -> str:
        return self.phases[-1][0] if self.phases else ""

    @property
    def booted(self) -> bool:
        return self.marker is not None and self.failure is None

    def elapsed(self, now: float) -> float:
        return (self.ended or now) - self.vm.started

    def enter(self, rank: int, label: str, now: float) -> None:
        """Move on to a phase, unless the VM is past it already."""
        if self.ended is None and rank >= self.rank and label != self.phase:
            self.rank = rank
            self.phases.append((label, now))

    def fail(self, message: str, now: float) -> None:
        """End the VM's run as failed; QEMU is stopped at once, leaving the CPUs to the others."""
        if self.ended is None:
            self.failure = message
            self.phases.append((f"FAILED: {message}", now))
            self.ended = now
            self.vm.stop()

    def phase_times(self) -> list[tuple[str, float]]:
        """Seconds spent in each phase but the last, which is how the run ended."""
        return [
            (label, round(following[1] - entered, 1))
            for (label, entered), following in zip(self.phases, self.phases[1:], strict=False)
        ]


class Interrupted(Exception):
    """SIGTERM arrived: unwinds like Ctrl-C, so that the cleanup runs."""


@contextmanager
def terminable() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A second Ctrl-C must not cut the cleanup short and leave a namespace or a VM behind."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
            box = Sandbox(work.absolute(), Lab(lab_tag()), kernel, initrd, image)
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


def fresh(workdir: Path) -> bool:
    """Absent or an empty directory: an earlier run's database and disks must not mix in."""
    return not workdir.exists() or (workdir.is_dir() and not any(workdir.iterdir()))


def prerequisites(firmware: Firmware) -> list[str]:
    """Everything this machine lacks for the sandbox, each with its fix, so one look says all."""
    missing = [*lab_setup.requirements(), *vm_setup.requirements()]
    if firmware is not Firmware.BIOS:
        missing += [
            f"{path} not found: install the Debian package ovmf"
            for path in (OVMF_CODE, OVMF_VARS)
            if not path.is_file()
        ][:1]
    for tool, package in HOST_TOOLS.items():
        try:
            require_tool(tool, package)
        except MissingPrerequisite as exc:
            missing.append(str(exc))
    return list(dict.fromkeys(missing))


def prepare(console: Console, data_dir: Path) -> tuple[Path, Path, OsImage]:
    """The install environment and the test OS image: built by the first run, reused after."""
    data_dir = data_dir.absolute()
    if installenv.built(data_dir) is None:
        console.print("building the install environment (first run: ~1 min)...")
    else:
        console.print("checking the install environment...")
    try:
        env = installenv.build(data_dir)
    except installenv.InstallEnvError as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None
    for warning in env.warnings:
        console.print(f"warning: {warning}")
    how = "reused" if env.cached else "built"
    console.print(f"{how} the install environment ({env.seconds:.0f} s): {env.kernel_path.parent}")

    cache = data_dir / IMAGE_CACHE
    before = set((cache / "images").glob("*"))
    if before:
        console.print("checking the test OS image...")
    else:
        console.print("building the test OS image (first run: ~30 s)...")
    started = time.monotonic()
    try:
        image = build_os_image(cache)
    except MissingPrerequisite as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None
    except BuildError as exc:
        raise CliError(str(exc)) from None
    how = "reused" if image.raw.parent in before else "built"
    console.print(f"{how} the test OS image ({time.monotonic() - started:.0f} s): {image.zst}")
    return env.kernel_path, env.initrd_path, image


def lab_tag() -> str:
    """A tag in the sandbox's range that no namespace uses yet, starting from this PID's."""
    taken = namespaces()
    for step in range(TAG_SPAN):
        tag = str(TAG_BASE + (os.getpid() + step) % TAG_SPAN)
        if Lab(tag).namespace not in taken:
            return tag
    raise CliError("every sandbox lab tag is taken: remove stale mfsb* namespaces")


def namespaces() -> set[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False, timeout=30
    )
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


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
        watches = launch(box, console, vms, firmware, bmc=bmc)
        follow(box, watches, console, live=out.live, timeout=timeout)
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


def launch(
    box: Sandbox, console: Console, vms: int, firmware: Firmware, *, bmc: bool = False
) -> list[Watch]:
    """The lab, metalflow in it, the demo machines provisioned and their VMs started (with
    `bmc`: started off first, then powered on by their workflows through QMP)."""
    console.print(
        f"lab: namespace {box.lab.namespace}, boot network {SERVER_IP}/{PREFIX_LENGTH} on {BRIDGE}"
    )
    console.print(f"workdir: {box.workdir}")
    box.lab.create()
    console.print("starting metalflow...")
    box.start()
    console.print(f"metalflow is up: {box.lab.api_url}")
    machines = [(f"sandbox-vm{index}", index, firmware.uefi(index)) for index in range(1, vms + 1)]
    watches = []

    def start(name: str, index: int, uefi: bool) -> None:
        watch = Watch(name, uefi, box.start_vm(name, vm_mac(index), uefi=uefi, bmc=bmc))
        watch.enter(Rank.FIRMWARE, "firmware", watch.vm.started)
        watches.append(watch)

    manifests = []
    for name, index, uefi in machines:
        manifest = machine_manifest(name, vm_mac(index), vm_address(index), uefi=uefi)
        if bmc:
            start(name, index, uefi)
            manifest += f"  bmc: {{driver: qemu, address: {watches[-1].vm.spec.qmp_socket}}}\n"
        manifests.append(manifest)
    box.apply("---\n".join([*manifests, demo_template(box.image.zst_sha256)]))
    for name, _, _ in machines:
        box.provision(name)
    listed = ", ".join(f"{name} ({'uefi' if uefi else 'bios'})" for name, _, uefi in machines)
    how = ", powered on by their BMCs" if bmc else ""
    console.print(f"provisioning {listed} with template {DEMO_TEMPLATE}{how}")
    if not bmc:
        for name, index, uefi in machines:
            start(name, index, uefi)
    return watches


def follow(
    box: Sandbox, watches: list[Watch], console: Console, *, live: bool, timeout: float
) -> None:
    """Until every VM is done: a live table on a terminal, else one line per phase change."""
    feed = EventFeed(box)
    by_name = {watch.name: watch for watch in watches}
    shown = dict.fromkeys(by_name, 0)
    deadline = time.monotonic() + timeout
    display = Live(console=console, auto_refresh=False) if live else None
    with display or contextlib.nullcontext():
        while True:
            now = time.monotonic()
            if box.process is not None and box.process.poll() is not None:
                raise SandboxError(f"metalflow exited with code {box.process.returncode}")
            for event in feed.new():
                watch = by_name.get(event.get("machine") or "")
                if watch is not None:
                    on_event(watch, event, now)
            for watch in watches:
                on_serial(watch, now)
                if now > deadline:
                    watch.fail(f"timed out after {timeout:.0f} s in phase {watch.phase}", now)
            if display is not None:
                display.update(progress_table(watches, now), refresh=True)
            else:
                for watch in watches:
                    for label, entered in watch.phases[shown[watch.name] :]:
                        console.print(
                            f"[{entered - watch.vm.started:4.0f} s] {watch.name}: {label}"
                        )
                    shown[watch.name] = len(watch.phases)
            if all(watch.ended is not None for watch in watches):
                return
            time.sleep(POLL_SECONDS)


@dataclass
class EventFeed:
    """metalflow's events since the previous call, oldest first."""

    box: Sandbox
    last: int = 0

    def new(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            try:
                page: list[dict[str, Any]] = self.box.call(
                    "GET", "/api/v1/events", params={"after": self.last, "limit": EVENT_PAGE}
                )["items"]
            except httpx.HTTPError:
                return found  # a busy server answers on the next round
            found += page
            if page:
                self.last = page[-1]["id"]
            if len(page) < EVENT_PAGE:
                return found


def on_event(watch: Watch, event: dict[str, Any], now: float) -> None:
    kind, data = event["kind"], event.get("data") or {}
    if kind in ("dhcp.offer", "dhcp.ack") and watch.rank >= Rank.REBOOTING:
        watch.enter(Rank.DISK, "booting the disk", now)  # the lease has no boot file now
    elif kind in ("dhcp.offer", "dhcp.ack"):
        watch.enter(Rank.DHCP, "DHCP", now)
    elif kind == "boot.script" and data.get("script") == "install":
        watch.enter(Rank.IPXE, "iPXE script", now)
    elif kind == "boot.script" and data.get("script") == "exit":
        watch.enter(Rank.DISK, "booting the disk", now)
    elif kind == "boot.asset":
        watch.enter(Rank.INSTALL_ENVIRONMENT, "loading the install environment", now)
    elif kind == "agent.hello":
        watch.enter(Rank.AGENT, "agent hello", now)
    elif kind == "workflow.action.started":
        index = int(data.get("index", 0))
        label = f"action {data.get('action')} ({index + 1}/{data.get('total')})"
        watch.enter(Rank.ACTION + index, label, now)
    elif kind == "workflow.action.failed":
        state = str(data.get("state", "FAILED")).lower()
        message = data.get("message") or f"exit code {data.get('exit_code')}"
        watch.last_action_failure = f"action {data.get('action')} {state}: {message}"
    elif kind == "workflow.succeeded":
        watch.enter(Rank.REBOOTING, "rebooting", now)
    elif kind in WORKFLOW_ENDED_BADLY:
        ended = f"workflow {kind.removeprefix('workflow.')}: {data.get('reason') or 'no reason'}"
        watch.fail(watch.last_action_failure or ended, now)


def on_serial(watch: Watch, now: float) -> None:
    running = watch.vm.running()  # before reading: what QEMU wrote before exiting is in the file
    serial = watch.vm.serial()
    if "metalflow-init" in serial:
        watch.enter(Rank.INSTALL_ENVIRONMENT_UP, "install environment booting", now)
    if "OSIMG-BOOTED" in serial:
        watch.enter(Rank.DISK_BOOTED, "disk booted", now)
    found = MARKER.search(serial)
    if found is not None and watch.marker is None:
        watch.marker = found.group(1)
        watch.enter(Rank.MARKER, f'disk booted, marker "{watch.marker}"', now)
    if any(line in serial for line in NO_MARKER):
        watch.fail("the disk booted but shows no marker", now)
    elif "OSIMG-POWEROFF" in serial or not running:
        if watch.marker is not None:
            watch.ended = now
        elif running:
            watch.fail("the test OS powered off without showing the marker", now)
        else:
            stderr = watch.vm.stderr().strip().splitlines()
            said = f": {stderr[-1]}" if stderr else ""
            watch.fail(f"QEMU exited with code {watch.vm.process.returncode}{said}", now)


def progress_table(watches: list[Watch], now: float) -> Table:
    grid = render.table("VM", "FIRMWARE", "PHASE", "ELAPSED")
    for watch in watches:
        grid.add_row(watch.name, watch.firmware, phase_text(watch), f"{watch.elapsed(now):.0f} s")
    return grid


def phase_text(watch: Watch) -> Text:
    if watch.failure is not None:
        return Text(watch.phase, style="red")
    return Text(watch.phase, style="green" if watch.marker is not None else "")


def summary(watches: list[Watch]) -> dict[str, Any]:
    now = time.monotonic()
    return {
        "vms": [
            {
                "name": watch.name,
                "firmware": watch.firmware,
                "booted": watch.booted,
                "marker": watch.marker,
                "failure": watch.failure,
                "seconds": round(watch.elapsed(now), 1),
                "phases": [
                    {"phase": label, "seconds": seconds} for label, seconds in watch.phase_times()
                ],
            }
            for watch in watches
        ]
    }


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
