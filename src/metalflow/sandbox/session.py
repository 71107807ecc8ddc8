"""One sandbox run's course and progress: the VMs launched, each VM's way to its own disk
followed through metalflow's events and its serial, and the outcome as data.

The `metalflow sandbox` command renders what this module tells through callbacks, so the run
itself knows nothing of terminals or tables.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from metalflow import installenv
from metalflow.sandbox import lab as lab_setup
from metalflow.sandbox import vm as vm_setup
from metalflow.sandbox.lab import BRIDGE, PREFIX_LENGTH, SERVER_IP, Lab
from metalflow.sandbox.osimage import (
    HOST_TOOLS,
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
from metalflow.sandbox.vm import OVMF_CODE, OVMF_VARS, Vm

IMAGE_CACHE = "sandbox-cache"
"""Under the data dir, beside the install environment, so that both are reused across runs."""
TAG_BASE = 10000
TAG_SPAN = 1000
"""Lab tags 10000-10999: the end-to-end tests' tags (f"{pid % 1000}{n}") stay below 10000 and
bench/e2e.py's default range is 11000-11999 (all distinct modulo lab.LINKS)."""
POLL_SECONDS = 1.0
EVENT_PAGE = 1000
MARKER = re.compile(r"OSIMG-MARKER ([^\r\n]*)\r?\n")
NO_MARKER = ("OSIMG-NO-MARKER", "OSIMG-NO-BOOT-PARTITION")
WORKFLOW_ENDED_BADLY = ("workflow.failed", "workflow.timeout", "workflow.cancelled")

Say = Callable[[str], None]
"""Where a run's progress messages go, one line each."""


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


def prepare(data_dir: Path, say: Say) -> tuple[Path, Path, OsImage]:
    """The install environment (kernel, initrd) and the test OS image: built by the first run,
    reused after.

    Raises InstallEnvError, MissingPrerequisite or BuildError.
    """
    data_dir = data_dir.absolute()
    if installenv.built(data_dir) is None:
        say("building the install environment (first run: ~1 min)...")
    else:
        say("checking the install environment...")
    env = installenv.build(data_dir)
    for warning in env.warnings:
        say(f"warning: {warning}")
    how = "reused" if env.cached else "built"
    say(f"{how} the install environment ({env.seconds:.0f} s): {env.kernel_path.parent}")

    cache = data_dir / IMAGE_CACHE
    before = set((cache / "images").glob("*"))
    if before:
        say("checking the test OS image...")
    else:
        say("building the test OS image (first run: ~30 s)...")
    started = time.monotonic()
    image = build_os_image(cache)
    how = "reused" if image.raw.parent in before else "built"
    say(f"{how} the test OS image ({time.monotonic() - started:.0f} s): {image.zst}")
    return env.kernel_path, env.initrd_path, image


def lab_tag() -> str:
    """A tag in the sandbox's range that no namespace uses yet, starting from this PID's."""
    taken = namespaces()
    for step in range(TAG_SPAN):
        tag = str(TAG_BASE + (os.getpid() + step) % TAG_SPAN)
        if Lab(tag).namespace not in taken:
            return tag
    raise SandboxError("every sandbox lab tag is taken: remove stale mfsb* namespaces")


def namespaces() -> set[str]:
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False, timeout=30
    )
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def launch(
    box: Sandbox, say: Say, vms: int, firmware: Firmware, *, bmc: bool = False
) -> list[Watch]:
    """The lab, metalflow in it, the demo machines provisioned and their VMs started (with
    `bmc`: started off first, then powered on by their workflows through QMP)."""
    say(f"lab: namespace {box.lab.namespace}, boot network {SERVER_IP}/{PREFIX_LENGTH} on {BRIDGE}")
    say(f"workdir: {box.workdir}")
    box.lab.create()
    say("starting metalflow...")
    box.start()
    say(f"metalflow is up: {box.lab.api_url}")
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
    say(f"provisioning {listed} with template {DEMO_TEMPLATE}{how}")
    if not bmc:
        for name, index, uefi in machines:
            start(name, index, uefi)
    return watches


def follow(
    box: Sandbox,
    watches: list[Watch],
    show: Callable[[list[Watch], float], None],
    *,
    timeout: float,
) -> None:
    """Until every VM is done, `show` is called with the watches after each round."""
    feed = EventFeed(box)
    by_name = {watch.name: watch for watch in watches}
    deadline = time.monotonic() + timeout
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
        show(watches, now)
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
