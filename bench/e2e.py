#!/usr/bin/env python3
"""End-to-end provisioning phase by phase: metalflow vs a static stand-in, same lab, same VM.

Measured: the wall time from QEMU's start to the test OS printing the marker file on its serial
console (OSIMG-MARKER), split into phases (firmware + DHCP, iPXE script, kernel + initrd fetch,
agent start, each action, reboot to disk), for two paths that provision the same VM (SeaBIOS,
virtio-net + virtio-blk, 768 MiB, a blank 64 MiB disk: sandbox/vm.py's VmSpec defaults) with the
same test OS image bytes, in one lab namespace (sandbox/lab.py), `--rounds` times each, the two
paths alternating (the order flips every round); medians are reported.

- `metalflow`: Sandbox as tests/e2e/test_provision.py drives it: `metalflow up` on the lab
  bridge (its DHCP, HTTP and IPv6 router answers), the install environment tests/e2e builds, the
  demo template (image2disk with sha256 + writefile into the FAT partition + reboot) run by the
  agent; after the workflow, DHCP offers no boot file and iPXE falls through to the disk.
- `stand-in`: dnsmasq (DHCP only; iPXE, told apart by option 175 or user class "iPXE", gets an
  http:// script URL) and a stdlib http.server serving a static boot.ipxe, the same kernel file,
  a busybox initramfs and the same .raw.zst. Its /init loads the virtio, fat and nls modules it
  needs (files and load order from the install environment's initrd), runs udhcpc with the flags
  metalflow's /init uses, then `wget -O - IMAGE | zstd -dc | dd of=/dev/vda bs=4M conv=fsync`
  (the host's zstd with its libraries; no sha256 is checked), `blockdev --rereadpt`, mounts
  /dev/vda1 (vfat), writes the marker, unmounts, GETs /done and runs `reboot -f`. On /done the
  server replaces boot.ipxe with `exit`, the static-script way to send the second boot to the
  disk. /init also GETs /step/start and /step/image-done: its action boundaries are then request
  arrival times, like metalflow's (the agent's next and status calls). The server process also
  answers IPv6 router solicitations as metalflow does (an advertisement announcing nothing), so
  that iPXE's ~13 s wait for a router, which metalflow removed, is off both paths; with
  `--no-ipv6-ra` neither answers (and metalflow runs with --no-ipv6-ra) and both wait.

Phase boundaries: metalflow's events (`GET /api/v1/events`: dhcp.ack, boot.script, agent.hello,
workflow.action.started/succeeded), dnsmasq's --log-dhcp lines and the stand-in server's request
log (both stamped by this script as they arrive), and for both paths the first appearance of
serial-console lines (the file is polled every 0.1 s): iPXE's fetch lines, /init's lines,
firmware banners, OSIMG-*. All are this machine's wall clock. Needs root, QEMU, QEMU's iPXE ROM
and dnsmasq; builds (or reuses) the install environment in /tmp/metalflow-installenv-test/
e2e-data and the test OS image in /tmp/metalflow-e2e-cache exactly as tests/e2e does. Traffic
stays on the lab's 192.0.2.0/24 bridge and its management link (lab.py); only processes this
script started are stopped (by PID) and only the namespace it created is deleted, also on
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import gzip
import ipaddress
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dhcp import SetupError, log, raise_on_sigterm  # bench/dhcp.py (same directory)

from metalflow.boot.ra import ADVERTISEMENT
from metalflow.config import DEFAULT_CONSOLE
from metalflow.installenv import BuildResult, InstallEnvError, build, cpio, init, rootfs
from metalflow.sandbox import lab as lab_module
from metalflow.sandbox import vm as vm_module
from metalflow.sandbox.lab import BRIDGE, SERVER_IP, Lab, LabError
from metalflow.sandbox.osimage import (
    MARKER_FILE,
    BuildError,
    MissingPrerequisite,
    OsImage,
    build_os_image,
)
from metalflow.sandbox.run import (
    DISK_BYTES,
    IMAGE_ASSET,
    Sandbox,
    SandboxError,
    demo_template,
    machine_manifest,
    summary,
    vm_address,
    vm_mac,
)
from metalflow.sandbox.vm import Vm, VmSpec

MACHINE = "vm1"
MAC = vm_mac(1)
ADDRESS = vm_address(1)
PATHS = ("metalflow", "stand-in")
INSTALLENV_DATA = Path("/tmp/metalflow-installenv-test/e2e-data")
"""tests/e2e's install environment: reused, not rebuilt (unless its inputs changed)."""
IMAGE_CACHE = Path(os.environ.get("METALFLOW_E2E_CACHE") or "/tmp/metalflow-e2e-cache")
STANDIN_PORT = 8080
STANDIN_URL = f"http://{SERVER_IP}:{STANDIN_PORT}"
BOOT_SCRIPT = "boot.ipxe"
EXIT_SCRIPT = "#!ipxe\nexit\n"
STANDIN_MARKER = "provisioned by stand-in"
METALFLOW_MARKER = f"provisioned by metalflow for {MACHINE}"
STANDIN_MODULES = (
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "fat",
    "vfat",
    "nls_cp437",
    "nls_ascii",
)
"""What the stand-in needs: NIC, disk, vfat (nls_ascii: the kernel's default iocharset)."""
POLL_SECONDS = 0.1
RESOLUTION = 0.1
"""Seconds: the serial poll interval, about the boot events' batching delay too."""
CHECK_SECONDS = 1.0
WORKFLOW_ENDED_BADLY = ("FAILED", "TIMEOUT", "CANCELLED")
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")

STANDIN_INIT = r"""#!/bin/sh
# bench/e2e.py stand-in: wget | zstd -dc | dd the image, write the marker, reboot.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
BASE=@BASE@
say() { echo "standin-init: $*"; }
report() { wget -q -O /dev/null "$BASE/$1" || say "warning: could not report $1"; }
fail() {
    say "FATAL: $*"
    report step/failed
    while :; do sleep 60; done
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say "starting ($(uname -r))"
for module in @MODULES@; do
    insmod "$module" || say "warning: insmod $module failed"
done
ip link set lo up
dev=
for path in /sys/class/net/*; do
    if [ "${path##*/}" != lo ]; then
        dev=${path##*/}
        break
    fi
done
[ -n "$dev" ] || fail "no network interface"
ip link set "$dev" up
udhcpc -i "$dev" -n -t 3 -T 4 -A 2 -s @UDHCPC_SCRIPT@ || fail "no DHCP lease"
say "network up on $dev"
report step/start
set -o pipefail
wget -q -O - "$BASE/@IMAGE@" | zstd -dcq | dd of=/dev/vda bs=4M conv=fsync ||
    fail "writing the image failed"
blockdev --rereadpt /dev/vda || fail "cannot re-read the partition table of /dev/vda"
report step/image-done
tries=50
while [ ! -b /dev/vda1 ] && [ "$tries" -gt 0 ]; do
    sleep 0.1
    tries=$((tries - 1))
done
mount -t vfat /dev/vda1 /mnt || fail "cannot mount /dev/vda1"
echo -n "@MARKER@" >/mnt/@MARKER_FILE@ || fail "cannot write the marker"
umount /mnt || fail "cannot unmount /dev/vda1"
say "done, rebooting"
report done
reboot -f
"""


# --------------------------------------------------------------------------------------------
# what is watched: serial lines, child process output, phases


@dataclass(frozen=True)
class Marker:
    """A serial-console line; `after` names the marker it must follow (the second boot
    repeats the firmware's lines)."""

    name: str
    pattern: str
    after: str | None = None


MARKERS = (
    Marker("ipxe", r"iPXE \(PCI [^)]*\) starting execution"),
    Marker("config_ok", r"Configuring \(net0 [^)]*\)[^\r\n]*ok", "ipxe"),
    Marker("kernel_fetch", r"/vmlinuz\.\.\.", "config_ok"),
    Marker("kernel_ok", r"/vmlinuz\.\.\.[^\r\n]*ok", "config_ok"),  # progress: "36%\b\b\b\b"
    Marker("initrd_fetch", r"/initrd\.img\.\.\.", "kernel_fetch"),
    Marker("initrd_ok", r"/initrd\.img\.\.\.[^\r\n]*ok", "kernel_fetch"),
    Marker("kernel_go", r": starting the kernel", "config_ok"),
    Marker("linux", r"Linux version", "kernel_go"),
    Marker("unpacked", r"Freeing initrd memory", "linux"),
    Marker("init", r"-init: starting \(", "linux"),
    Marker("dhcp_start", r"udhcpc: started", "init"),
    Marker("net_up", r"-init: network up", "init"),
    Marker("agent_log", r"msg='metalflow-agent \S+ talking to", "net_up"),
    Marker("bios2", r"SeaBIOS \(version", "net_up"),
    Marker("ipxe2", r"iPXE \(PCI [^)]*\) starting execution", "bios2"),
    Marker("config_ok2", r"Configuring \(net0 [^)]*\)[^\r\n]*ok", "ipxe2"),
    Marker("disk", r"Booting from Hard Disk", "ipxe2"),
    Marker("booted", r"OSIMG-BOOTED", "bios2"),
    Marker("marker", r"OSIMG-MARKER ([^\r\n]*)\r?\n", "bios2"),
)


class SerialWatch(threading.Thread):
    """Reads a VM's serial log every POLL_SECONDS and keeps the wall time each marker first
    showed: the harness's own clock for what only the console tells."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="serial-watch", daemon=True)
        self.path = path
        self.text = ""
        self.seen: dict[str, tuple[float, re.Match[str]]] = {}
        self.halt = threading.Event()
        self._patterns = [(marker, re.compile(marker.pattern)) for marker in MARKERS]

    def run(self) -> None:
        with self.path.open("rb") as serial:
            while not self.halt.wait(POLL_SECONDS):
                chunk = serial.read()
                if chunk:
                    self._scan(chunk.decode("latin-1"), time.time())

    def _scan(self, new: str, now: float) -> None:
        self.text += new
        for marker, pattern in self._patterns:  # in order: an `after` is scanned first
            if marker.name in self.seen:
                continue
            start = 0
            if marker.after is not None:
                if marker.after not in self.seen:
                    continue
                start = self.seen[marker.after][1].end()
            found = pattern.search(self.text, start)
            if found is not None:
                self.seen[marker.name] = (now, found)

    def times(self) -> dict[str, float]:
        return {name: seen[0] for name, seen in self.seen.items()}

    def marker_text(self) -> str | None:
        found = self.seen.get("marker")
        return found[1].group(1) if found else None

    def tail(self, chars: int = 4000) -> str:
        return re.sub(r"[\x00-\x08\x0b-\x1f]", "", self.text[-chars:])


class LineLog(threading.Thread):
    """A child's output, line by line, each stamped with the wall time it was read."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(name="line-log", daemon=True)
        self.stream = stream
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        for line in self.stream:
            self.lines.append((time.time(), line.rstrip("\n")))

    def first(self, pattern: str, since: float) -> float | None:
        compiled = re.compile(pattern)
        found = (t for t, line in list(self.lines) if t >= since and compiled.search(line))
        return next(found, None)

    def wait_for(self, pattern: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.first(pattern, 0) is None:
            if time.monotonic() > deadline or not self.is_alive():
                return self.first(pattern, 0) is not None
            time.sleep(POLL_SECONDS)
        return True

    def tail(self, count: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-count:])


@dataclass(frozen=True)
class Phase:
    """A table row: the sum of the spans between named boundaries."""

    label: str
    spans: tuple[tuple[str, str], ...]
    sub: bool = False


PHASES = (
    Phase("firmware + DHCP (VM start → DHCP ack)", (("vm_start", "dhcp_ack"),)),
    Phase("VM start → iPXE runs", (("vm_start", "ipxe"),), sub=True),
    Phase("iPXE runs → DHCP ack", (("ipxe", "dhcp_ack"),), sub=True),
    Phase("script (DHCP ack → script request)", (("dhcp_ack", "script"),)),
    Phase("kernel + initrd fetch (→ 'starting the kernel')", (("script", "kernel_go"),)),
    Phase("script → kernel fetch starts", (("script", "kernel_fetch"),), sub=True),
    Phase("kernel transfer", (("kernel_fetch", "kernel_ok"),), sub=True),
    Phase("initrd transfer", (("initrd_fetch", "initrd_ok"),), sub=True),
    Phase("agent start (→ agent hello | first request)", (("kernel_go", "agent"),)),
    Phase("→ 'Linux version' on the console", (("kernel_go", "linux"),), sub=True),
    Phase("→ initramfs unpacked ('Freeing initrd memory')", (("linux", "unpacked"),), sub=True),
    Phase("→ /init starts", (("unpacked", "init"),), sub=True),
    Phase("/init: insmod (→ udhcpc starts)", (("init", "dhcp_start"),), sub=True),
    Phase("udhcpc (→ network up)", (("dhcp_start", "net_up"),), sub=True),
    Phase("→ agent's first log line (python3, imports)", (("net_up", "agent_log"),), sub=True),
    Phase("→ agent hello recorded", (("agent_log", "agent"),), sub=True),
    Phase("agent hello → first action started", (("agent", "image_start"),)),
    Phase("action stream-image", (("image_start", "image_end"),)),
    Phase("action write-marker", (("marker_start", "marker_end"),)),
    Phase(
        "between actions (succeeded → next started)",
        (("image_end", "marker_start"), ("marker_end", "reboot")),
    ),
    Phase("reboot to disk (reboot action → OSIMG-BOOTED)", (("reboot", "booted"),)),
    Phase("→ firmware restarts (SeaBIOS banner)", (("reboot", "bios2"),), sub=True),
    Phase("→ iPXE runs", (("bios2", "ipxe2"),), sub=True),
    Phase("iPXE 2nd pass → 'Booting from Hard Disk'", (("ipxe2", "disk"),), sub=True),
    Phase("disk boot → OSIMG-BOOTED", (("disk", "booted"),), sub=True),
    Phase("OSIMG-BOOTED → OSIMG-MARKER", (("booted", "marker"),)),
)
TOTAL = Phase("total (VM start → OSIMG-MARKER)", (("vm_start", "marker"),))


@dataclass
class Run:
    path: str
    bounds: dict[str, float] = field(default_factory=dict)
    ipv6_waits: tuple[float | None, float | None] = (None, None)
    """Per boot: iPXE's 'Configuring ... ok' minus its DHCP ack (the IPv6 router wait)."""
    event_lag: float | None = None
    """metalflow: the boot.script event's time minus its log line's (the recorder's batching)."""
    asset_offsets: tuple[float, float] | None = None
    """metalflow: the initrd's boot.asset event minus the serial fetch start, minus its end."""
    error: str | None = None

    def seconds(self, phase: Phase) -> float | None:
        try:
            return sum(self.bounds[end] - self.bounds[start] for start, end in phase.spans)
        except KeyError:
            return None


@dataclass
class Context:
    """What every run shares: the lab, the inputs, the stand-in's files and the settings."""

    workdir: Path
    lab: Lab
    env: BuildResult
    image: OsImage
    dnsmasq: str
    www: Path
    timeout: float
    ipv6_ra: bool


# --------------------------------------------------------------------------------------------
# processes


def which(tool: str) -> str | None:
    """shutil.which, also in /usr/sbin (dnsmasq's place), which a sudo PATH may lack."""
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def spawn(
    argv: list[str], *, stdout: int | IO[Any], stderr: int | IO[Any]
) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=True)


def stop(process: subprocess.Popen[str]) -> None:
    """Stop one process this script started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_for_marker(
    vm: Vm, watch: SerialWatch, failure: Callable[[], str | None], timeout: float
) -> str | None:
    """None once OSIMG-MARKER showed; else why not (failure() is asked every CHECK_SECONDS)."""
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    while "marker" not in watch.seen:
        if not vm.running():
            time.sleep(2 * POLL_SECONDS)  # the watcher reads what QEMU wrote before it exited
            return None if "marker" in watch.seen else f"QEMU exited:\n{vm.stderr()[-1000:]}"
        if time.monotonic() > deadline:
            return f"no OSIMG-MARKER within {timeout:g} s"
        if time.monotonic() - checked >= CHECK_SECONDS:
            checked = time.monotonic()
            reason = failure()
            if reason is not None:
                return reason
        time.sleep(POLL_SECONDS)
    return None


def finish(run: Run, watch: SerialWatch, expected: str) -> None:
    """Add the serial boundaries to the run and check the marker's text."""
    run.bounds.update(watch.times())
    if run.error is None and watch.marker_text() != expected:
        run.error = f"OSIMG-MARKER {watch.marker_text()!r}, expected {expected!r}"


def ipv6_waits(
    bounds: dict[str, float], ack_after: Callable[[float], float | None]
) -> tuple[float | None, float | None]:
    """Per boot, iPXE's 'Configuring ... ok' minus the DHCP ack it got."""
    waits: list[float | None] = []
    for ok, since in (("config_ok", "vm_start"), ("config_ok2", "bios2")):
        ack = ack_after(bounds[since]) if since in bounds else None
        waits.append(bounds[ok] - ack if ok in bounds and ack is not None else None)
    return waits[0], waits[1]


# --------------------------------------------------------------------------------------------
# metalflow


def event_time(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["time"]).timestamp()


def first_event(
    events: list[dict[str, Any]], kind: str, since: float = 0.0, **data: str
) -> float | None:
    for event in events:
        found = event["kind"] == kind and event_time(event) >= since
        if found and all((event.get("data") or {}).get(k) == v for k, v in data.items()):
            return event_time(event)
    return None


def script_log_time(metalflow_log: str) -> float | None:
    """When metalflow logged the install script's request (asctime: local time, ms)."""
    found = re.search(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*event=boot\.script .*kind=install",
        metalflow_log,
        re.MULTILINE,
    )
    if found is None:
        return None
    seconds = time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
    return seconds + int(found.group(2)) / 1e3


def run_metalflow(ctx: Context, round_: int) -> Run:
    run = Run("metalflow")
    box = Sandbox(
        ctx.workdir / f"metalflow-{round_}",
        ctx.lab,
        ctx.env.kernel_path,
        ctx.env.initrd_path,
        ctx.image,
    )
    watch: SerialWatch | None = None
    try:
        box.start([] if ctx.ipv6_ra else ["--no-ipv6-ra"])
        box.apply(
            machine_manifest(MACHINE, MAC, ADDRESS, uefi=False)
            + "---\n"
            + demo_template(ctx.image.zst_sha256)
        )
        workflow = box.provision(MACHINE)["id"]

        def failure() -> str | None:
            state = box.workflow(workflow)
            if state["state"] in WORKFLOW_ENDED_BADLY:
                return f"the workflow ended {summary(state)}"
            return None

        run.bounds["vm_start"] = time.time()
        vm = box.start_vm(MACHINE, MAC, uefi=False)
        watch = SerialWatch(vm.serial_path)
        watch.start()
        run.error = wait_for_marker(vm, watch, failure, ctx.timeout)
        events = sorted(box.events(MACHINE), key=lambda event: (event_time(event), event["id"]))
        finish(run, watch, METALFLOW_MARKER)
        state = box.workflow(workflow)
        if run.error is None and state["state"] != "SUCCESS":
            run.error = f"the disk booted, but the workflow is {summary(state)}"
        started, succeeded = "workflow.action.started", "workflow.action.succeeded"
        found = {
            "dhcp_ack": first_event(events, "dhcp.ack"),
            "script": first_event(events, "boot.script", script="install"),
            "agent": first_event(events, "agent.hello"),
            "image_start": first_event(events, started, action="stream-image"),
            "image_end": first_event(events, succeeded, action="stream-image"),
            "marker_start": first_event(events, started, action="write-marker"),
            "marker_end": first_event(events, succeeded, action="write-marker"),
            "reboot": first_event(events, started, action="reboot"),
        }
        run.bounds.update({name: t for name, t in found.items() if t is not None})
        run.ipv6_waits = ipv6_waits(run.bounds, lambda t: first_event(events, "dhcp.ack", t))
        logged = script_log_time(box.log())
        if logged is not None and "script" in run.bounds:
            run.event_lag = run.bounds["script"] - logged
        asset = first_event(events, "boot.asset", name="initrd.img")
        if asset is not None and {"initrd_fetch", "initrd_ok"} <= run.bounds.keys():
            run.asset_offsets = (
                asset - run.bounds["initrd_fetch"],
                asset - run.bounds["initrd_ok"],
            )
    except (SandboxError, LabError, vm_module.VmError) as exc:
        run.error = str(exc)
    finally:
        box.stop()
        if watch is not None:
            watch.halt.set()
        if run.error is not None:
            log(f"metalflow round {round_} failed: {run.error}")
            log(f"metalflow log (tail):\n{box.log()[-3000:]}")
            if watch is not None:
                log(f"serial (tail):\n{watch.tail()}")
    return run


# --------------------------------------------------------------------------------------------
# the stand-in


def read_newc(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each member of a newc archive, up to its trailer."""
    offset = 0
    while True:
        if data[offset : offset + 6] != b"070701":
            raise SetupError(f"the install environment's initrd is not newc at byte {offset}")
        fields = [int(data[offset + 6 + i * 8 : offset + 14 + i * 8], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + name_size - 1].decode()
        body = offset + 110 + name_size + (-(110 + name_size) % 4)
        if name == "TRAILER!!!":
            return
        yield name, data[body : body + size]
        offset = body + size + (-size % 4)


def host_program(program: str) -> list[cpio.Entry]:
    """The host's program and what `ldd` lists (libraries, loader), where the loader looks."""
    listing = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    paths = [program, *re.findall(r"(/\S+) \(0x[0-9a-f]+\)", listing)]
    return [
        cpio.file(rootfs.initramfs_path(PurePosixPath(path)), Path(path).resolve(), 0o755)
        for path in paths
    ]


def standin_initrd(env: BuildResult, zstd: str, out: Path) -> None:
    """The stand-in initramfs: the install environment's busybox and module files, the host's
    zstd, and STANDIN_INIT; gzip -9 like the install environment's (cloud flavour)."""
    members = dict(read_newc(gzip.decompress(env.initrd_path.read_bytes())))
    by_module = {
        PurePosixPath(name).name.removesuffix(".ko"): name
        for name in members
        if name.endswith(".ko")
    }
    order = [name for name in env.modules if name in STANDIN_MODULES]
    missing = sorted(set(STANDIN_MODULES) - set(order) - set(by_module))
    if missing or "usr/bin/busybox" not in members:
        raise SetupError(f"the install environment's initrd lacks {missing or 'usr/bin/busybox'}")
    modules = [by_module[name] for name in order]
    script = (
        STANDIN_INIT.replace("@BASE@", STANDIN_URL)
        .replace("@MODULES@", " ".join(f"/{path}" for path in modules))
        .replace("@UDHCPC_SCRIPT@", init.UDHCPC_SCRIPT)
        .replace("@IMAGE@", IMAGE_ASSET)
        .replace("@MARKER@", STANDIN_MARKER)
        .replace("@MARKER_FILE@", MARKER_FILE)
    )
    entries = [
        *(cpio.directory(name) for name in ("proc", "sys", "dev", "run", "tmp", "mnt", "etc")),
        *(cpio.symlink(name, f"usr/{name}") for name in rootfs.MERGED),
        cpio.char_device("dev/console", 5, 1),
        cpio.file("usr/bin/busybox", members["usr/bin/busybox"], 0o755),
        *(cpio.symlink(f"usr/bin/{applet}", "busybox") for applet in init.BUSYBOX_APPLETS),
        cpio.file(init.UDHCPC_SCRIPT.lstrip("/"), init.render_udhcpc_script().encode(), 0o755),
        *(cpio.file(path, members[path]) for path in modules),
        *host_program(zstd),
        cpio.file("init", script.encode(), 0o755),
    ]
    with (
        out.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz,
    ):
        cpio.write(entries, gz)


def install_script() -> str:
    """The static boot.ipxe: the same console arguments as metalflow's install script."""
    return (
        "#!ipxe\n"
        "echo standin: fetching the kernel\n"
        f"kernel {STANDIN_URL}/vmlinuz {DEFAULT_CONSOLE} initrd=initrd.img\n"
        "echo standin: fetching the initrd\n"
        f"initrd --name initrd.img {STANDIN_URL}/initrd.img\n"
        "echo standin: starting the kernel\n"
        "boot\n"
    )


def write_atomically(path: Path, text: str) -> None:
    """iPXE may GET the file at any moment: it sees the old text or the new, never half."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.replace(path)


class StandinHandler(SimpleHTTPRequestHandler):
    """Static files, plus /step/* (a no-op the stand-in's /init reports to) and /done (boot.ipxe
    becomes `exit`); one JSON line per request on stdout, the harness's request log."""

    lock = threading.Lock()

    def do_GET(self) -> None:
        start = time.time()
        if self.path == "/done" or self.path.startswith("/step/"):
            if self.path == "/done":
                write_atomically(Path(self.directory) / BOOT_SCRIPT, EXIT_SCRIPT)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            super().do_GET()
        line = json.dumps({"path": self.path, "start": start, "end": time.time()})
        with self.lock:
            print(line, flush=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the JSON lines are the log."""


def answer_router_solicitations(interface: str) -> None:
    """Answer each IPv6 router solicitation on `interface` as metalflow's boot/ra.py does."""
    index = socket.if_nametoindex(interface)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        for option in (socket.IPV6_UNICAST_HOPS, socket.IPV6_MULTICAST_HOPS):
            sock.setsockopt(socket.IPPROTO_IPV6, option, 255)  # RFC 4861 drops any other
        group = socket.inet_pton(socket.AF_INET6, "ff02::2") + struct.pack("@I", index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        while True:
            packet, sender = sock.recvfrom(2048)
            if packet[:2] == b"\x85\x00":  # type 133, code 0
                sock.sendto(ADVERTISEMENT, (sender[0], 0, 0, index))


def serve(directory: Path, port: int, ra_interface: str | None) -> int:
    """The stand-in's servers (run inside the lab namespace by the harness)."""
    if ra_interface is not None:
        threading.Thread(
            target=answer_router_solicitations, args=(ra_interface,), daemon=True
        ).start()
    handler = functools.partial(StandinHandler, directory=str(directory))
    with ThreadingHTTPServer((SERVER_IP, port), handler) as server:
        print(json.dumps({"listening": port}), flush=True)
        server.serve_forever()
    return 0


def requests_since(server_log: LineLog, since: float) -> list[dict[str, Any]]:
    entries = (json.loads(line) for _, line in list(server_log.lines))
    return [entry for entry in entries if "path" in entry and entry["start"] >= since]


def dnsmasq_argv(dnsmasq: str, workdir: Path) -> list[str]:
    """DHCP only (no DNS, no TFTP); iPXE gets the script URL, the VM metalflow's address."""
    return [
        dnsmasq,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        f"--interface={BRIDGE}",
        "--bind-interfaces",
        "--dhcp-range=192.0.2.50,192.0.2.60,255.255.255.0",
        f"--dhcp-host={MAC},{ADDRESS}",
        "--dhcp-match=set:ipxe,175",
        "--dhcp-userclass=set:ipxe,iPXE",
        f"--dhcp-boot=tag:ipxe,{STANDIN_URL}/{BOOT_SCRIPT}",
        "--dhcp-authoritative",
        "--no-ping",
        "--log-dhcp",
        "--log-facility=-",
        f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
        f"--pid-file={workdir / 'dnsmasq.pid'}",
    ]


def run_standin(ctx: Context, round_: int) -> Run:
    run = Run("stand-in")
    workdir = ctx.workdir / f"stand-in-{round_}"
    workdir.mkdir(parents=True)
    write_atomically(ctx.www / BOOT_SCRIPT, install_script())
    serve_argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(ctx.www)]
    if ctx.ipv6_ra:
        serve_argv += ["--ra", BRIDGE]
    errors = workdir / "http.stderr"
    with errors.open("w") as stderr:
        server = spawn(ctx.lab.inside(serve_argv), stdout=subprocess.PIPE, stderr=stderr)
    dnsmasq = spawn(
        ctx.lab.inside(dnsmasq_argv(ctx.dnsmasq, workdir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert server.stdout is not None and dnsmasq.stderr is not None
    server_log, dhcp_log = LineLog(server.stdout), LineLog(dnsmasq.stderr)
    server_log.start()
    dhcp_log.start()
    vm: Vm | None = None
    watch: SerialWatch | None = None
    try:
        if not server_log.wait_for(r'"listening"', 60):
            raise SetupError(f"the stand-in's HTTP server did not start: {errors.read_text()}")
        if not dhcp_log.wait_for(r"DHCP, IP range", 30):
            raise SetupError(f"dnsmasq did not start:\n{dhcp_log.tail()}")
        disk = workdir / "disk.raw"
        with disk.open("wb") as blank:
            blank.truncate(DISK_BYTES)
        spec = VmSpec(MACHINE, MAC, ctx.lab.tap(), disk, workdir / "vm", uefi=False)
        since = run.bounds["vm_start"] = time.time()

        def failure() -> str | None:
            failed = any(e["path"] == "/step/failed" for e in requests_since(server_log, since))
            return "the stand-in's /init failed (see the serial tail)" if failed else None

        vm = Vm.start(spec, ctx.lab.inside)
        watch = SerialWatch(vm.serial_path)
        watch.start()
        run.error = wait_for_marker(vm, watch, failure, ctx.timeout)
        finish(run, watch, STANDIN_MARKER)
        requests = requests_since(server_log, since)

        def arrived(path: str) -> float | None:
            return next((entry["start"] for entry in requests if entry["path"] == path), None)

        ack = rf"DHCPACK\({BRIDGE}\) \S+ {re.escape(MAC)}"
        found = {
            "dhcp_ack": dhcp_log.first(ack, since),
            "script": arrived(f"/{BOOT_SCRIPT}"),
            "agent": arrived("/step/start"),
            "image_start": arrived("/step/start"),
            "image_end": arrived("/step/image-done"),
            "marker_start": arrived("/step/image-done"),
            "marker_end": arrived("/done"),
            "reboot": arrived("/done"),
        }
        run.bounds.update({name: t for name, t in found.items() if t is not None})
        if "net_up" in run.bounds:
            run.bounds["agent_log"] = run.bounds["net_up"]  # no agent to start
        run.ipv6_waits = ipv6_waits(run.bounds, lambda after: dhcp_log.first(ack, after))
    except (SetupError, LabError, vm_module.VmError) as exc:
        run.error = str(exc)
    finally:
        if vm is not None:
            vm.stop()
        if watch is not None:
            watch.halt.set()
        stop(dnsmasq)
        stop(server)
        if run.error is not None:
            log(f"stand-in round {round_} failed: {run.error}")
            log(f"dnsmasq (tail):\n{dhcp_log.tail()}")
            if watch is not None:
                log(f"serial (tail):\n{watch.tail()}")
    return run


# --------------------------------------------------------------------------------------------
# setup, report, main


def requirements() -> list[str]:
    missing = [*lab_module.requirements(), *vm_module.requirements()]
    for tool, package in (("dnsmasq", "dnsmasq-base"), ("zstd", "zstd"), ("ldd", "libc-bin")):
        if which(tool) is None:
            missing.append(f"{tool} not found: install the Debian package {package}")
    return missing


def install_environment(data: Path) -> BuildResult:
    """As the install_env fixture of tests/e2e: the shared .deb cache linked in, then build."""
    cache = data / "installenv" / "cache"
    if not cache.exists():
        shared = data.parent / "data" / "installenv" / "cache"
        shared.mkdir(parents=True, exist_ok=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(shared)
    return build(data)


def existing_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cell(value: float | None) -> str:
    return f"{value:9.2f}" if value is not None else f"{'?':>9}"


def seconds(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "? s"


def ratio(mine: float | None, theirs: float | None) -> str:
    """mine / theirs; '-' when either is below the resolution (then only the seconds say much)."""
    if mine is None or theirs is None:
        return f"{'?':>7}"
    if min(mine, theirs) < RESOLUTION:
        return f"{'-':>7}"
    return f"{mine / theirs:6.2f}x"


def medians(runs: list[Run], value: Callable[[Run], float | None]) -> dict[str, float | None]:
    """Per path, the median of value(run) over the runs that succeeded."""
    found: dict[str, list[float]] = {path: [] for path in PATHS}
    for run in runs:
        if run.error is None and (measured := value(run)) is not None:
            found[run.path].append(measured)
    return {path: median(values) for path, values in found.items()}


def without_waits(total: float | None, waits: tuple[float | None, ...]) -> float | None:
    return None if total is None else total - sum(wait for wait in waits if wait is not None)


def report(runs: list[Run], ctx: Context, standin_initrd_bytes: int) -> str:
    counts = {path: sum(run.path == path and run.error is None for run in runs) for path in PATHS}
    width = 52
    ra = "both answer" if ctx.ipv6_ra else "neither answers"
    out = [
        f"end-to-end provisioning (SeaBIOS + iPXE, BIOS; IPv6 router solicitations: {ra}),"
        f" {counts['metalflow']} metalflow and {counts['stand-in']} stand-in runs; medians in s",
        f"{'phase':<{width}} {'metalflow':>9} {'stand-in':>9} {'ratio':>7}",
    ]
    for phase in (*PHASES, TOTAL):
        found = medians(runs, functools.partial(Run.seconds, phase=phase))
        label = f"  {phase.label}" if phase.sub else phase.label
        out.append(
            f"{label:<{width}} {cell(found['metalflow'])} {cell(found['stand-in'])}"
            f" {ratio(found['metalflow'], found['stand-in'])}"
        )
    for path in PATHS:
        totals = [run.seconds(TOTAL) for run in runs if run.path == path and run.error is None]
        listed = ", ".join(f"{total:.1f}" for total in totals if total is not None)
        out.append(f"{path} totals per run: {listed or 'none'} s")
    waits: dict[str, tuple[float | None, ...]] = {}
    for path in PATHS:
        first = medians(runs, lambda run: run.ipv6_waits[0])[path]
        second = medians(runs, lambda run: run.ipv6_waits[1])[path]
        waits[path] = (first, second)
        out.append(
            f"iPXE IPv6 router wait ({path}; 'Configuring ... ok' minus its DHCP ack):"
            f" first boot {seconds(first)}, second boot {seconds(second)}"
        )
    lag = medians(runs, lambda run: run.event_lag)["metalflow"]
    offsets = [run.asset_offsets for run in runs if run.asset_offsets and run.error is None]
    after_start = median([offset[0] for offset in offsets])
    before_end = median([-offset[1] for offset in offsets])
    out += [
        "boundaries: metalflow = its events (`time`: ISO 8601 UTC with microseconds, e.g."
        " 2026-12-01T14:10:58.123456+00:00) and serial lines; stand-in = dnsmasq's DHCPACK line,"
        " its HTTP server's request arrival times and serial lines (polled every 0.1 s); a"
        " ratio of '-': a side below that resolution",
        "metalflow's boot events (dhcp.*, boot.*) are stamped when its recorder writes its 0.2 s"
        f" batch: boot.script's came {seconds(lag)} after the log line of the same request, so"
        " the DHCP ack and script boundaries read about that much late for metalflow",
        "boot.asset is recorded when the request arrives, not when the transfer ends: the"
        f" initrd's came {seconds(after_start)} after iPXE printed the fetch and"
        f" {seconds(before_end)} before it printed 'ok' (so the transfers above are iPXE's"
        " serial lines, for both paths)",
        f"initrd: metalflow {ctx.env.size_bytes / 1e6:.1f} MB ({ctx.env.compression}, Python +"
        f" agent + tools + {len(ctx.env.modules)} modules), stand-in"
        f" {standin_initrd_bytes / 1e6:.1f} MB (gzip, busybox + zstd + {len(STANDIN_MODULES)}"
        f" modules); kernel: the same file ({ctx.env.kernel_bytes / 1e6:.1f} MB)",
        "stand-in: no sha256 check of the image (metalflow's image2disk verifies it), no hardware"
        " report, no retries, no disk wipe; its second boot fetches an `exit` script, metalflow's"
        " DHCP offers no boot file then (iPXE: 'Nothing to boot')",
    ]
    total = medians(runs, lambda run: run.seconds(TOTAL))
    if not ctx.ipv6_ra:
        trimmed = {path: without_waits(total[path], waits[path]) for path in PATHS}
        out.append(
            "ratio without the IPv6 router waits (total minus both boots' waits): "
            + ratio(trimmed["metalflow"], trimmed["stand-in"]).strip()
        )
    out.append(
        "ratio (metalflow / stand-in, total VM start → marker): "
        + ratio(total["metalflow"], total["stand-in"]).strip()
    )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each path")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per VM run")
    parser.add_argument(
        "--no-ipv6-ra",
        action="store_true",
        help="nobody answers iPXE's router solicitations (metalflow up --no-ipv6-ra)",
    )
    parser.add_argument(
        "--tag",
        default=f"11{os.getpid() % 1000:03d}",
        help="lab tag (namespace mfsb<tag>); tests/e2e's are PID mod 1000, then a counter",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ra", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    try:
        ipaddress.IPv4Address(Lab(args.tag).api_address)
    except ValueError:
        parser.error(f"--tag {args.tag!r}: Lab makes no management address of it (see lab.py)")
    args.ipv6_ra = not args.no_ipv6_ra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        return serve(args.serve, STANDIN_PORT, args.ra)
    raise_on_sigterm()
    for variable in PROXY_VARIABLES:
        os.environ.pop(variable, None)  # httpx would send the API calls through it
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-e2e."))
    lab = Lab(args.tag)
    try:
        missing = requirements()
        if missing:
            raise SetupError("; ".join(missing))
        if lab.namespace in existing_namespaces():
            raise SetupError(f"namespace {lab.namespace} exists already; pick another --tag")
        log("install environment and test OS image (built once, then cached)")
        env = install_environment(INSTALLENV_DATA)
        image = build_os_image(IMAGE_CACHE)
        www = workdir / "www"
        www.mkdir()
        zstd, dnsmasq = which("zstd"), which("dnsmasq")
        assert zstd is not None and dnsmasq is not None
        standin_initrd(env, zstd, www / "initrd.img")
        (www / "vmlinuz").symlink_to(env.kernel_path)
        (www / IMAGE_ASSET).symlink_to(image.zst)
        lab.create()
        ctx = Context(workdir, lab, env, image, dnsmasq, www, args.timeout, args.ipv6_ra)
        log(f"lab {lab.namespace}, work dir {workdir}")
        runners = {"metalflow": run_metalflow, "stand-in": run_standin}
        runs: list[Run] = []
        for round_ in range(1, args.rounds + 1):
            for path in PATHS if round_ % 2 else PATHS[::-1]:
                log(f"round {round_}: {path}")
                run = runners[path](ctx, round_)
                runs.append(run)
                if run.error is None:
                    log(f"round {round_}: {path} reached the marker in {run.seconds(TOTAL):.1f} s")
        print(report(runs, ctx, (www / "initrd.img").stat().st_size), flush=True)
        return 1 if any(run.error for run in runs) else 0
    except (SetupError, InstallEnvError, MissingPrerequisite, BuildError, LabError) as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        lab.close()
        if args.keep:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
