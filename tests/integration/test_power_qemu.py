"""The QEMU driver against real QEMU processes: tiny VMs with no network backend (no traffic
leaves them), SeaBIOS's console in a file, and for the guest that powers off a one-sector
"OS" that waits for the ACPI power button and then switches the machine off."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    PowerAction,
    PowerError,
    PowerState,
    Unsupported,
)
from metalflow.power.qemu import QemuDriver, QmpClient
from metalflow.sandbox.vm import SERCON_PORT
from tests.integration.bootlab import wait_for
from tests.prerequisites import needs_tool, unavailable

IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")

GUEST_ARMED = "OS: power button armed"
"""What the guest prints once a power button press reaches it: QEMU drops a press that comes
while the guest has not enabled the power button event (in the firmware, or before an OS's ACPI
driver loads)."""

POWER_BUTTON_GUEST = (
    bytes.fromhex(
        "ba0206"  # mov dx, 0x602     PIIX4 PM1a enable register (SeaBIOS puts PM at 0x600)
        "b80001"  # mov ax, 0x100     PWRBTN_EN: let the power button set its status bit
        "ef"  # out dx, ax
        "31c0"  # xor ax, ax
        "8ed8"  # mov ds, ax
        "fc"  # cld
        "be397c"  # mov si, 0x7c39    the message below (the sector is loaded at 0x7c00)
        "ac"  # lodsb              print:
        "84c0"  # test al, al
        "7412"  # jz armed
        "88c3"  # mov bl, al
        "bafd03"  # mov dx, 0x3fd     COM1 line status register
        "ec"  # in al, dx          ready:
        "a820"  # test al, 0x20     THRE: the transmitter takes a byte
        "74fb"  # jz ready
        "baf803"  # mov dx, 0x3f8     COM1 data register
        "88d8"  # mov al, bl
        "ee"  # out dx, al
        "ebe9"  # jmp print
        "ba0006"  # mov dx, 0x600     armed: PM1a status register
        "ed"  # in ax, dx          wait:
        "a90001"  # test ax, 0x100     PWRBTN_STS
        "74fa"  # jz wait
        "ba0406"  # mov dx, 0x604     PM1a control register
        "b80020"  # mov ax, 0x2000    SLP_EN with SLP_TYP 0: soft off (S5)
        "ef"  # out dx, ax
        "f4"  # hlt
        "ebfd"  # jmp hlt
    )
    + f"{GUEST_ARMED}\r\n\0".encode()
).ljust(510, b"\0") + b"\x55\xaa"
"""A boot sector, so that SeaBIOS boots something that answers system_powerdown: it enables
the power button, says so on the serial console, waits for a press and switches off."""


class Vm:
    """One QEMU started for a test (and ended by its PID), its QMP socket and console."""

    def __init__(self, qemu: str, directory: Path, *devices: str) -> None:
        self.directory = directory
        self.qmp = directory / "qmp.sock"
        self.console = directory / "console.log"
        sercon = directory / "sercon-port"
        sercon.write_bytes(SERCON_PORT)
        self.stderr = directory / "qemu.stderr"
        with self.stderr.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    qemu,
                    "-accel",
                    "tcg",
                    "-m",
                    "64",
                    "-display",
                    "none",
                    "-nodefaults",
                    "-no-shutdown",
                    "-S",
                    "-qmp",
                    f"unix:{self.qmp},server=on,wait=off",
                    "-serial",
                    f"file:{self.console}",
                    "-fw_cfg",
                    f"name=etc/sercon-port,file={sercon}",
                    *devices,
                ],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        wait_for(self._listening, timeout=30)
        self.driver = QemuDriver(Bmc(driver="qemu", host=str(self.qmp)))

    def _listening(self) -> bool:
        """QEMU answers on its QMP socket (the file appears at bind, before QEMU listens)."""
        if self.process.poll() is not None:
            raise AssertionError(f"QEMU exited: {self.stderr.read_text()}")
        try:
            with QmpClient.connect(str(self.qmp)) as client:
                client.handshake()
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        return True

    def status(self) -> str:
        """What QEMU itself says, on a QMP session of the test's own."""
        with QmpClient.connect(str(self.qmp)) as client:
            client.handshake()
            status: str = client.execute("query-status")["status"]
            return status

    def block(self) -> list[dict[str, object]]:
        with QmpClient.connect(str(self.qmp)) as client:
            client.handshake()
            blocks: list[dict[str, object]] = client.execute("query-block")
            return blocks

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_vm() -> Iterator[Callable[..., Vm]]:
    qemu = needs_tool("qemu-system-x86_64", "qemu-system-x86")
    started: list[Vm] = []
    # A short directory: a unix socket path has at most 107 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="mf-qemu-") as directory:

        def start(*devices: str) -> Vm:
            workdir = Path(directory) / str(len(started))
            workdir.mkdir()
            vm = Vm(qemu, workdir, *devices)
            started.append(vm)
            return vm

        yield start
        for vm in started:
            vm.end()


def boots(vm: Vm) -> int:
    """How many times the firmware has started since QEMU did."""
    return vm.text().count("SeaBIOS (version")


def test_on_off_reset_and_cycle_track_the_vm(start_vm: Callable[..., Vm]) -> None:
    vm = start_vm()
    driver = vm.driver
    assert driver.power_state() is PowerState.OFF
    assert vm.status() == "prelaunch"

    driver.set_power(PowerAction.ON)
    assert driver.power_state() is PowerState.ON
    assert vm.status() == "running"
    wait_for(lambda: boots(vm) == 1)

    driver.set_power(PowerAction.OFF)
    assert driver.power_state() is PowerState.OFF
    assert vm.status() == "prelaunch"
    driver.set_power(PowerAction.OFF)
    assert vm.status() == "prelaunch"

    driver.set_power(PowerAction.CYCLE)
    assert driver.power_state() is PowerState.ON
    wait_for(lambda: boots(vm) == 2)

    driver.set_power(PowerAction.RESET)
    assert driver.power_state() is PowerState.ON
    wait_for(lambda: boots(vm) == 3)

    driver.set_power(PowerAction.CYCLE)
    assert vm.status() == "running"
    wait_for(lambda: boots(vm) == 4)

    driver.set_power(PowerAction.OFF)
    driver.set_power(PowerAction.RESET)
    assert vm.status() == "running"
    wait_for(lambda: boots(vm) == 5)
    assert vm.process.poll() is None


def test_a_vm_whose_qemu_is_gone_reads_off(start_vm: Callable[..., Vm]) -> None:
    vm = start_vm()
    vm.driver.set_power(PowerAction.ON)
    vm.end()
    assert vm.driver.power_state() is PowerState.OFF
    vm.driver.set_power(PowerAction.OFF)
    with pytest.raises(PowerError, match="cannot start one") as raised:
        vm.driver.set_power(PowerAction.ON)
    assert not raised.value.transient


def test_soft_off_lets_the_guest_power_down_and_on_boots_it_again(
    start_vm: Callable[..., Vm], tmp_path: Path
) -> None:
    disk = tmp_path / "guest.raw"
    disk.write_bytes(POWER_BUTTON_GUEST.ljust(1 << 20, b"\0"))
    vm = start_vm(
        "-drive",
        f"file={disk},format=raw,if=none,id=d0",
        "-device",
        "virtio-blk-pci,drive=d0,id=disk0,bootindex=1",
    )
    vm.driver.set_power(PowerAction.ON)
    # Pressed before the guest enabled it, the button would be lost (GUEST_ARMED).
    wait_for(lambda: GUEST_ARMED in vm.text(), timeout=60)

    vm.driver.set_power(PowerAction.SOFT_OFF)
    wait_for(lambda: vm.driver.power_state() is PowerState.OFF)
    assert vm.status() == "shutdown"
    assert vm.process.poll() is None

    vm.driver.set_power(PowerAction.ON)
    assert vm.driver.power_state() is PowerState.ON
    wait_for(lambda: vm.text().count(GUEST_ARMED) == 2, timeout=60)


BOOT_ENTRY = re.compile(r"Booting from (ROM|Hard Disk|DVD/CD)")
"""SeaBIOS's line for each boot entry it tries: iPXE's ROM, the disk, the CD."""


def first_entry(vm: Vm, boot: int) -> str | None:
    """The boot entry the firmware tried first in its `boot`th start (1 is the first)."""
    starts = vm.text().split("SeaBIOS (version")
    found = BOOT_ENTRY.search(starts[boot]) if len(starts) > boot else None
    return found.group(1) if found else None


def tried_something(vm: Vm, boot: int) -> Callable[[], bool]:
    def tried() -> bool:
        return first_entry(vm, boot) is not None

    return tried


def test_boot_device_reorders_what_the_firmware_tries_first(
    start_vm: Callable[..., Vm], tmp_path: Path
) -> None:
    if not IPXE_ROM.is_file():
        unavailable(f"{IPXE_ROM} is missing: apt-get install ipxe-qemu")
    disk = tmp_path / "blank.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    vm = start_vm(
        "-device",
        "virtio-net-pci,id=nic0,bootindex=2",
        "-drive",
        f"file={disk},format=raw,if=none,id=d0",
        "-device",
        "virtio-blk-pci,drive=d0,id=disk0,bootindex=1",
        "-drive",
        "if=none,id=cd0,media=cdrom",
        "-device",
        "ide-cd,drive=cd0,id=cdrom0",
    )
    driver = vm.driver
    steps = [
        (BootRequest(BootDevice.PXE), PowerAction.ON, "ROM"),
        (BootRequest(BootDevice.DISK, persistent=True), PowerAction.RESET, "Hard Disk"),
        (BootRequest(BootDevice.CDROM), PowerAction.CYCLE, "DVD/CD"),
    ]
    for boot, (request, action, entry) in enumerate(steps, start=1):
        driver.set_boot_device(request)
        driver.set_power(action)
        wait_for(tried_something(vm, boot), timeout=60)
        assert first_entry(vm, boot) == entry, request

    with pytest.raises(Unsupported, match="firmware setup"):
        driver.set_boot_device(BootRequest(BootDevice.BIOS))
    probe = driver.probe()
    assert probe.boot_device and probe.virtual_media
    assert probe.details["boot-order"].startswith("cdrom:/machine/peripheral/cdrom0=1 ")


def test_a_vm_without_a_nic_cannot_netboot(start_vm: Callable[..., Vm]) -> None:
    vm = start_vm()
    with pytest.raises(Unsupported, match="no nic"):
        vm.driver.set_boot_device(BootRequest(BootDevice.PXE))


def test_virtual_media_goes_into_the_cd_drive_and_out(start_vm: Callable[..., Vm]) -> None:
    vm = start_vm("-drive", "if=none,id=cd0,media=cdrom", "-device", "ide-cd,drive=cd0")
    image = vm.directory / "hook.iso"
    image.write_bytes(b"\0" * 2048 * 16)

    def medium() -> object:
        (cd,) = [block for block in vm.block() if block.get("removable")]
        inserted = cd.get("inserted")
        return inserted.get("file") if isinstance(inserted, dict) else None

    vm.driver.insert_media(image.as_uri())
    assert medium() == str(image)
    vm.driver.eject_media()
    assert medium() is None
    vm.driver.eject_media()

    with pytest.raises(PowerError, match="No such file") as raised:
        vm.driver.insert_media(str(vm.directory / "missing.iso"))
    assert not raised.value.transient


def test_a_vm_without_a_cd_drive_has_no_virtual_media(start_vm: Callable[..., Vm]) -> None:
    vm = start_vm()
    probe = vm.driver.probe()
    assert (probe.power, probe.boot_device, probe.virtual_media) == (True, False, False)
    assert probe.details["status"] == "prelaunch"
    with pytest.raises(Unsupported, match="no CD drive"):
        vm.driver.insert_media("/srv/hook.iso")
