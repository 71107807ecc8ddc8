"""The test OS image is what the notes promise: one hybrid disk that boots under SeaBIOS and OVMF,
reports on ttyS0, shows the boot partition's marker file, phones home and powers off by itself."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import secrets
import shutil
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metalflow.sandbox.osimage import (
    DISK_ID,
    MARKER_FILE,
    PARTITION_START,
    VOLUME_ID,
    VOLUME_LABEL,
    Boot,
    OsImage,
    boot_disk,
)
from tests.prerequisites import needs_tool, unavailable

BOOT_TIMEOUT = 120
SLIRP_HOST = "10.0.2.2"  # QEMU user networking: the DHCP server id, which is the host's loopback
METADATA_PORT = 50061
PHONE_HOME_OVERRIDE = "/phone-home/override"
# The flags the variant image gets: a short DHCP wait and a phone-home URL of its own.
FLAGS = f"osimg.dhcp_timeout=2 osimg.ph=http://{SLIRP_HOST}:{METADATA_PORT}{PHONE_HOME_OVERRIDE}"
HOSTNAME = "osimg-test-vm"
MAC = "52:54:00:0e:57:01"


def boot(
    disk: Path,
    workdir: Path,
    *,
    uefi: bool,
    network: Sequence[str] = ("-nic", "none"),
    disk_bus: str = "virtio",
) -> Boot:
    """boot_disk with the serial log printed, so a failing test shows what the VM said."""
    result = boot_disk(
        disk, workdir, uefi=uefi, timeout=BOOT_TIMEOUT, network=network, disk_bus=disk_bus
    )
    print(f"--- serial log ({result.seconds} s, rc {result.returncode}) ---\n{result.log}")
    return result


def private_copy(image: OsImage, tmp_path: Path) -> Path:
    """QEMU may write to its disk, and the cached image must stay as built."""
    disk = tmp_path / "disk.raw"
    shutil.copyfile(image.raw, disk)
    return disk


def test_image_is_a_hybrid_mbr_disk_with_one_active_esp(os_image: OsImage) -> None:
    with os_image.raw.open("rb") as f:
        mbr = f.read(512)
        f.seek(PARTITION_START)
        boot_sector = f.read(512)
    assert mbr[510:] == b"\x55\xaa"
    assert mbr[:440].strip(b"\0"), "no boot code in the MBR"
    assert struct.unpack_from("<I", mbr, 440)[0] == DISK_ID
    status, ptype, start, sectors = (mbr[446], mbr[450], *struct.unpack_from("<II", mbr, 454))
    assert (status, ptype, start) == (0x80, 0xEF, PARTITION_START // 512)
    assert mbr[462:510] == bytes(48), "more than one partition"
    assert (start + sectors) * 512 <= os_image.raw_size
    assert boot_sector[54:62] == b"FAT16   "
    assert struct.unpack_from("<I", boot_sector, 39)[0] == int(VOLUME_ID, 16)
    assert boot_sector[43:54] == VOLUME_LABEL.ljust(11).encode()

    listing = subprocess.run(
        [needs_tool("mdir", "mtools"), "-i", f"{os_image.raw}@@1M", "-/", "-a", "-b", "::/"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout.split()
    for name in (
        "::/vmlinuz",
        "::/initrd.img",
        "::/syslinux.cfg",
        "::/ldlinux.sys",
        "::/ldlinux.c32",
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        "::/loader/entries/test.conf",
    ):
        assert name in listing


def test_compressed_copy_and_digests_match(os_image: OsImage) -> None:
    assert os_image.raw.stat().st_size == os_image.raw_size
    assert os_image.zst.stat().st_size == os_image.zst_size < os_image.raw_size
    assert hashlib.sha256(os_image.zst.read_bytes()).hexdigest() == os_image.zst_sha256
    unpacked = subprocess.run(
        [needs_tool("zstd", "zstd"), "-dc", os_image.zst], capture_output=True, check=True
    ).stdout
    assert hashlib.sha256(unpacked).hexdigest() == os_image.raw_sha256


@pytest.mark.usefixtures("qemu")
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_boots_from_disk_and_powers_off(os_image: OsImage, tmp_path: Path, firmware: str) -> None:
    result = boot(private_copy(os_image, tmp_path), tmp_path, uefi=firmware == "uefi")
    assert result.returncode is not None, f"no poweroff within {BOOT_TIMEOUT} s"
    assert "OSIMG-BOOTED cmdline=" in result.log
    assert os_image.cmdline in result.log
    assert "OSIMG-NO-MARKER device=/dev/vda1" in result.log
    assert "OSIMG-DHCP-FAILED reason=no-nic" in result.log
    assert result.powered_off


@pytest.mark.usefixtures("qemu")
@pytest.mark.parametrize("disk_bus", ["virtio", "ide"])
def test_shows_the_marker_file_of_its_boot_partition(
    os_image: OsImage, tmp_path: Path, disk_bus: str
) -> None:
    disk = private_copy(os_image, tmp_path)
    contents = f"written-by-metalflow {secrets.token_hex(8)}"
    marker = tmp_path / MARKER_FILE
    marker.write_text(contents + "\n")
    subprocess.run(
        [needs_tool("mcopy", "mtools"), "-i", f"{disk}@@1M", marker, f"::/{MARKER_FILE}"],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    result = boot(disk, tmp_path, uefi=False, disk_bus=disk_bus)
    assert f"OSIMG-MARKER {contents}\n" in result.log.replace("\r\n", "\n")
    assert result.powered_off


@dataclass
class MetadataServer:
    """What the VM asked the stand-in metadata service (reached through QEMU user networking)."""

    gets: list[str] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def metadata_server() -> Iterator[MetadataServer]:
    seen = MetadataServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.gets.append(self.path)
            found = self.path == "/2009-04-04/meta-data/hostname"
            self._reply(200 if found else 404, HOSTNAME.encode() if found else b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.posts.append((self.path, json.loads(body)))
            self._reply(200, b"{}")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the assertions say what was requested."""

    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", METADATA_PORT), Handler)
    except OSError as exc:
        unavailable(
            f"port {METADATA_PORT} on 127.0.0.1 is taken, the VM's phone-home needs it: {exc}"
        )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.usefixtures("qemu")
@pytest.mark.parametrize(
    ("extra_cmdline", "phone_home_path"),
    [("", "/phone-home"), (FLAGS, PHONE_HOME_OVERRIDE)],
    ids=["default", "flags"],
)
def test_phones_home_with_hostname_mac_and_ip(
    image_builder: Callable[[str], OsImage],
    metadata_server: MetadataServer,
    tmp_path: Path,
    extra_cmdline: str,
    phone_home_path: str,
) -> None:
    image = image_builder(extra_cmdline)
    network = [
        "-netdev",
        "user,id=n0",
        "-device",
        f"virtio-net-pci,netdev=n0,mac={MAC},romfile=",
    ]
    result = boot(private_copy(image, tmp_path), tmp_path, uefi=False, network=network)
    assert f"OSIMG-PHONE-HOME-OK hostname={HOSTNAME} mac={MAC}" in result.log
    assert metadata_server.gets == ["/2009-04-04/meta-data/hostname"]
    assert metadata_server.posts == [
        (phone_home_path, {"hostname": HOSTNAME, "mac": MAC, "ip": "10.0.2.15"})
    ]
    assert result.powered_off


@pytest.mark.usefixtures("qemu")
def test_gives_up_on_dhcp_after_the_timeout_flag(
    image_builder: Callable[[str], OsImage], tmp_path: Path
) -> None:
    image = image_builder(FLAGS)
    network = ["-device", f"virtio-net-pci,mac={MAC},romfile="]  # a NIC with no network behind
    result = boot(private_copy(image, tmp_path), tmp_path, uefi=False, network=network)
    assert "OSIMG-DHCP-FAILED iface=eth0 timeout=2" in result.log
    assert result.powered_off
