"""Hardware facts from fake /proc and /sys trees."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import struct
from pathlib import Path

from metalflow.agent import hardware

CPUINFO = "".join(
    f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) E-2278G\n"
    f"physical id\t: {n // 4}\ncore id\t\t: {n % 4 // 2}\ncpu cores\t: 2\n\n"
    for n in range(8)
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_tree(root: Path) -> Path:
    write(root / "proc/cpuinfo", CPUINFO)
    write(root / "proc/meminfo", "MemTotal:       16303416 kB\nMemFree:  1 kB")
    sda = root / "sys/block/sda"
    write(sda / "size", "1953525168")
    write(sda / "device/model", "Samsung SSD 870")
    write(sda / "device/serial", "S6PNNS0T")
    write(sda / "device/wwid", "naa.5002538f")
    write(sda / "queue/rotational", "0")
    write(sda / "removable", "0")
    write(root / "sys/block/nvme0n1/size", "2048")
    write(root / "sys/block/nvme0n1/queue/rotational", "1")
    for skipped in ("loop0", "ram0", "zram0", "dm-0"):
        write(root / f"sys/block/{skipped}/size", "8")
    eth = root / "sys/class/net/eno1"
    write(eth / "address", "3C:EC:EF:4C:4F:54")
    write(eth / "operstate", "up")
    write(eth / "carrier", "1")
    write(eth / "speed", "10000")
    drivers = root / "sys/bus/pci/drivers/ixgbe"
    drivers.mkdir(parents=True)
    (eth / "device").mkdir()
    os.symlink(drivers, eth / "device/driver")
    down = root / "sys/class/net/eno2"
    write(down / "address", "3c:ec:ef:4c:4f:55")
    write(down / "operstate", "down")
    write(down / "speed", "-1")
    write(root / "sys/class/net/lo/address", "00:00:00:00:00:00")
    dmi = root / "sys/class/dmi/id"
    for field, value in {
        "sys_vendor": "Supermicro",
        "product_name": "SYS-5019C",
        "product_serial": "S123",
        "product_uuid": "00000000-0000-0000-0000-3cecef4c4f54",
        "board_vendor": "Supermicro",
        "board_name": "X11SCM-F",
    }.items():
        write(dmi / field, value)
    (root / "sys/firmware/efi").mkdir(parents=True)
    return root


def test_collects_a_full_tree(tmp_path: Path) -> None:
    found = hardware.collect(fake_tree(tmp_path), arch="x86_64")
    assert found["arch"] == "x86_64" and found["uefi"] is True
    assert found["cpu"] == {
        "model": "Intel(R) Xeon(R) E-2278G",
        "sockets": 2,
        "cores": 4,
        "threads": 8,
    }
    assert found["memory_bytes"] == 16303416 * 1024
    assert [d["name"] for d in found["disks"]] == ["nvme0n1", "sda"]
    sda = found["disks"][1]
    assert sda == {
        "name": "sda",
        "path": "/dev/sda",
        "size_bytes": 1953525168 * 512,
        "model": "Samsung SSD 870",
        "serial": "S6PNNS0T",
        "wwn": "naa.5002538f",
        "rotational": False,
        "removable": False,
    }
    assert found["disks"][0]["rotational"] is True and found["disks"][0]["model"] is None
    eno1, eno2 = found["nics"]
    assert eno1 == {
        "name": "eno1",
        "mac": "3c:ec:ef:4c:4f:54",
        "operstate": "up",
        "carrier": True,
        "speed_mbps": 10000,
        "driver": "ixgbe",
    }
    assert eno2["carrier"] is False and eno2["speed_mbps"] is None and eno2["driver"] is None
    assert found["dmi"]["board_name"] == "X11SCM-F" and found["dmi"]["bios_version"] is None
    json.dumps(found)


def test_virtual_disks_on_request(tmp_path: Path) -> None:
    names = [d["name"] for d in hardware.disks(fake_tree(tmp_path), include_virtual=True)]
    assert {"loop0", "dm-0", "sda"} <= set(names)


def test_empty_root_gives_empty_facts(tmp_path: Path) -> None:
    found = hardware.collect(tmp_path, arch="aarch64")
    assert found["uefi"] is False and found["disks"] == [] and found["nics"] == []
    assert found["cpu"] == {"model": None, "sockets": 0, "cores": 0, "threads": 0}
    assert found["memory_bytes"] is None


def test_single_socket_arm_cpuinfo(tmp_path: Path) -> None:
    write(tmp_path / "proc/cpuinfo", "processor : 0\nBogoMIPS : 50\n\nprocessor : 1\n")
    assert hardware.cpu(tmp_path) == {"model": None, "sockets": 1, "cores": 2, "threads": 2}


def test_macs_with_carrier_come_first(tmp_path: Path) -> None:
    found = hardware.collect(fake_tree(tmp_path))
    found["nics"].reverse()
    assert hardware.macs_by_preference(found) == ["3c:ec:ef:4c:4f:54", "3c:ec:ef:4c:4f:55"]


def test_real_host_facts_match_what_the_kernel_reports() -> None:
    """The running host, read through libc and the socket API rather than /proc and /sys."""
    for _ in range(5):  # interfaces other processes add or remove between the two readings
        found = hardware.collect()
        macs = {nic["name"]: nic["mac"] for nic in found["nics"] if len(nic["mac"]) == 17}
        if macs == ethernet_macs():
            break
    assert macs == ethernet_macs()
    assert json.loads(json.dumps(found)) == found
    assert found["arch"] == platform.machine()
    assert found["cpu"]["threads"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert found["memory_bytes"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1


def ethernet_macs() -> dict[str, str]:
    """Non-zero Ethernet addresses as the SIOCGIFHWADDR ioctl reports them, by interface."""
    macs = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                reply = fcntl.ioctl(
                    sock.fileno(), SIOCGIFHWADDR, struct.pack("256s", name.encode())
                )
            except OSError:
                continue  # gone since it was listed
            family, address = struct.unpack_from("=H6s", reply, 16)
            if family == ARPHRD_ETHER and any(address):
                macs[name] = address.hex(":")
    return macs
