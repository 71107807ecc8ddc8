"""Hardware attributes for hello, read from procfs and sysfs under a root directory.

Read by hand: the usual tools (lshw, dmidecode, lsblk --json) are not in a minimal
initramfs and their output differs by version, and py-cpuinfo/psutil are not stdlib. The
files read here are stable kernel ABI, and a root argument lets tests use fake trees.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

SKIP_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "sr", "fd", "md", "nbd")
DMI_FIELDS = (
    "sys_vendor",
    "product_name",
    "product_serial",
    "product_uuid",
    "board_vendor",
    "board_name",
    "bios_version",
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpu(root: Path) -> dict[str, Any]:
    """Model, sockets, cores and threads; ``cpu cores`` is per socket in /proc/cpuinfo."""
    text = _read(root / "proc/cpuinfo") or ""
    threads = 0
    model: str | None = None
    cores: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    physical = "0"
    per_socket: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            threads += 1
            physical = "0"
        elif key in ("model name", "Model", "cpu model") and model is None:
            model = value
        elif key == "physical id":
            physical = value
            sockets.add(value)
        elif key == "core id":
            cores.add((physical, value))
        elif key == "cpu cores":
            per_socket[physical] = _int(value) or 0
    core_count = len(cores) or sum(per_socket.values()) or threads
    return {
        "model": model,
        "sockets": len(sockets) or (1 if threads else 0),
        "cores": core_count,
        "threads": threads,
    }


def memory_bytes(root: Path) -> int | None:
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            kib = _int(fields[1]) if len(fields) > 1 else None
            return kib * 1024 if kib is not None else None
    return None


def disks(root: Path, *, include_virtual: bool = False) -> list[dict[str, Any]]:
    """Block devices; /sys/block/*/size is always in 512-byte sectors, whatever the disk's."""
    base = root / "sys/block"
    found = []
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        name = entry.name
        if not include_virtual and name.startswith(SKIP_DISK_PREFIXES):
            continue
        device = entry / "device"
        sectors = _int(_read(entry / "size")) or 0
        found.append(
            {
                "name": name,
                "path": f"/dev/{name}",
                "size_bytes": sectors * 512,
                "model": _read(device / "model"),
                "serial": _read(device / "serial") or _read(entry / "serial"),
                "wwn": _read(device / "wwid") or _read(entry / "wwid") or _read(device / "wwn"),
                "rotational": _read(entry / "queue/rotational") == "1",
                "removable": _read(entry / "removable") == "1",
            }
        )
    return found


def nics(root: Path) -> list[dict[str, Any]]:
    """Interfaces that have a MAC, except lo; carrier is only readable while the link is up."""
    base = root / "sys/class/net"
    found = []
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if entry.name == "lo":
            continue
        mac = _read(entry / "address")
        if not mac or mac == "00:00:00:00:00:00":
            continue
        driver_link = entry / "device/driver"
        driver = os.path.basename(os.readlink(driver_link)) if driver_link.is_symlink() else None
        speed = _int(_read(entry / "speed"))
        found.append(
            {
                "name": entry.name,
                "mac": mac.lower(),
                "operstate": _read(entry / "operstate"),
                "carrier": _read(entry / "carrier") == "1",
                "speed_mbps": speed if speed is not None and speed > 0 else None,
                "driver": driver,
            }
        )
    return found


def dmi(root: Path) -> dict[str, str | None]:
    base = root / "sys/class/dmi/id"
    return {field: _read(base / field) for field in DMI_FIELDS}


def collect(root: Path = Path("/"), *, arch: str | None = None) -> dict[str, Any]:
    """Everything hello sends, as JSON-able values; unreadable parts come out empty or None."""
    return {
        "arch": arch or platform.machine(),
        "uefi": (root / "sys/firmware/efi").exists(),
        "cpu": cpu(root),
        "memory_bytes": memory_bytes(root),
        "disks": disks(root),
        "nics": nics(root),
        "dmi": dmi(root),
    }


def macs_by_preference(attributes: dict[str, Any]) -> list[str]:
    """NIC MACs with a carrier first: the one that booted is most likely up."""
    found = attributes.get("nics", [])
    ordered = sorted(found, key=lambda nic: not nic.get("carrier"))
    return [str(nic["mac"]) for nic in ordered]
