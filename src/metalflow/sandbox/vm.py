"""QEMU virtual machines that network-boot like a server in a rack: NIC first, then the disk.

TCG emulation, not KVM: on the nested machines this runs on, /dev/kvm opens but is ~100x slower.
The NIC is virtio-net with QEMU's iPXE ROM (Debian package ipxe-qemu), the disk virtio-blk. Boot
order comes from `bootindex` (honoured by SeaBIOS and OVMF alike): when the iPXE script says
`exit`, the firmware moves on to the disk. The serial console goes to a file the caller reads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SERCON_PORT = b"\xf8\x03"
"""fw_cfg etc/sercon-port: the firmware's own console on ttyS0 (0x3f8)."""


OVMF_NO_NETWORK_STACK = (
    "-fw_cfg",
    "name=opt/org.tianocore/IPv4Support,string=no",
    "-fw_cfg",
    "name=opt/org.tianocore/IPv6Support,string=no",
)
"""OVMF's own PXE and HTTP boot entries sit between iPXE and the disk in the boot order (they
are on the same NIC), and after iPXE's `exit` they spend minutes on DHCP timeouts before the disk
gets its turn. Without OVMF's IP stack only iPXE (which brings its own) is left on the NIC."""


class VmError(RuntimeError):
    """QEMU or its firmware is missing, or QEMU would not start; the message says which."""


def firmware_args(workdir: Path, *, uefi: bool, firmware_log: bool = False) -> list[str]:
    """QEMU arguments for SeaBIOS (QEMU's default) or OVMF with a private copy of its variables."""
    args: list[str] = []
    if firmware_log:
        sercon = workdir / "sercon-port"
        sercon.write_bytes(SERCON_PORT)
        args += ["-fw_cfg", f"name=etc/sercon-port,file={sercon}"]
    if uefi:
        for path in (OVMF_CODE, OVMF_VARS):
            if not path.is_file():
                raise VmError(f"{path} not found: install the Debian package ovmf")
        variables = workdir / "OVMF_VARS_4M.fd"
        shutil.copyfile(OVMF_VARS, variables)
        args += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={variables}",
            *OVMF_NO_NETWORK_STACK,
        ]
    return args


def requirements() -> list[str]:
    """What this machine lacks to run the VMs, each with its fix."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} not found: install the Debian package qemu-system-x86")
    if not Path("/usr/lib/ipxe/qemu/efi-virtio.rom").is_file():
        missing.append("QEMU's iPXE ROM is missing: install the Debian package ipxe-qemu")
    return missing


@dataclass(frozen=True)
class VmSpec:
    name: str
    mac: str
    tap: str
    disk: Path
    workdir: Path
    uefi: bool = False
    memory_mib: int = 768
    """The install environment unpacks into RAM; 512 MiB is enough, 768 leaves room to spool."""
    firmware_log: bool = True
    bmc: bool = False
    """A QMP socket (`qmp_socket`) and `-no-shutdown`, so that the qemu power driver
    (power/qemu.py) powers the VM like a BMC. A guest poweroff then leaves QEMU running
    (`Vm.running()` stays true) so that it can be powered on again."""
    powered_off: bool = False
    """With `bmc`: start with the vCPUs stopped (`-S`), off until the driver turns it on."""

    @property
    def qmp_socket(self) -> Path:
        """For Bmc(driver="qemu", host=str(spec.qmp_socket)); a unix socket path holds at most
        107 bytes, so keep workdir short."""
        return self.workdir / "qmp.sock"


def bmc_args(spec: VmSpec) -> list[str]:
    if not spec.bmc:
        return []
    args = ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off", "-no-shutdown"]
    return [*args, "-S"] if spec.powered_off else args


def machine_args(serial_log: Path, memory_mib: int, qemu: str = QEMU) -> list[str]:
    """What every VM metalflow starts shares: TCG, the pc machine, one CPU, no display, and
    its first serial port (the console) written to `serial_log`."""
    return [
        qemu,
        "-accel",
        "tcg",
        "-machine",
        "pc",
        "-m",
        str(memory_mib),
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial_log}",
    ]


def qemu_argv(spec: VmSpec) -> list[str]:
    return [
        *machine_args(spec.workdir / "serial.log", spec.memory_mib),
        "-name",
        spec.name,
        "-nodefaults",
        *firmware_args(spec.workdir, uefi=spec.uefi, firmware_log=spec.firmware_log),
        *bmc_args(spec),
        "-netdev",
        f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev=n0,mac={spec.mac},bootindex=1,id=nic0",
        "-drive",
        f"file={spec.disk},format=raw,if=none,id=d0",
        "-device",
        "virtio-blk-pci,drive=d0,bootindex=2,id=disk0",
    ]


@dataclass
class Vm:
    """A running VM; `wrap` puts QEMU in the lab's namespace (where its tap lives)."""

    spec: VmSpec
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, spec: VmSpec, wrap: Callable[[Sequence[str]], list[str]]) -> Vm:
        if shutil.which(QEMU) is None:
            raise VmError(f"{QEMU} not found: install the Debian package qemu-system-x86")
        spec.workdir.mkdir(parents=True, exist_ok=True)
        (spec.workdir / "serial.log").write_bytes(b"")
        stderr = (spec.workdir / "qemu.stderr").open("wb")
        with stderr:
            process = subprocess.Popen(
                wrap(qemu_argv(spec)), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        return cls(spec, process)

    @property
    def serial_path(self) -> Path:
        return self.spec.workdir / "serial.log"

    def serial(self) -> str:
        return self.serial_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, pattern: str, timeout: float, *, after: int = 0) -> re.Match[str] | None:
        """The first match of `pattern` in the serial log past offset `after`, within `timeout`
        seconds; None when the time runs out or QEMU exits first."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            running = self.running()  # before reading: what QEMU wrote before exiting is in it
            found = compiled.search(self.serial(), after)
            if found is not None:
                return found
            if not running or time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def stop(self, timeout: float = 10) -> None:
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stderr(self) -> str:
        path = self.spec.workdir / "qemu.stderr"
        return path.read_text(errors="replace") if path.exists() else ""
