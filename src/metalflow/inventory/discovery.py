"""What an unknown machine's agent reports, read as inventory: pure, and never trusting the shape.

A discovery boot (`metalflow up --discovery`) brings a machine that is in no inventory into the
install environment; its agent sends its hardware attributes, and the machine enters the
inventory in state `new` with the NICs and disks it reported, as MAAS enlistment and Ironic
inspection do. The attributes are free JSON from the machine, so every field is optional here
and anything malformed is left out instead of refused: the interface the machine booted from is
enough to register it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metalflow.inventory.schemas import normalize_mac

NAME_PREFIX = "discovered-"
MAX_INTERFACES = 64
MAX_DISKS = 256


@dataclass(frozen=True)
class DiscoveredMachine:
    name: str
    macs: tuple[str, ...]
    """The booting interface first, then the other NICs reported, each once."""
    disks: tuple[dict[str, Any], ...]
    """As `MachineSpec.disks` stores them: {"device": "/dev/...", "size_bytes": N}."""
    arch: str
    uefi: bool


def discovered_name(mac: str) -> str:
    """A stable name from the booting MAC: discovering the same machine twice finds it again."""
    return NAME_PREFIX + mac.replace(":", "")


def _mac_or_none(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return normalize_mac(value)
    except ValueError:
        return None


def _entries(attributes: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, list):
            return [entry for entry in value if isinstance(entry, dict)]
    return []


def _disk(entry: dict[str, Any]) -> dict[str, Any] | None:
    device = entry.get("device") or entry.get("path") or entry.get("name")
    if not isinstance(device, str) or not device or "/" in device.removeprefix("/dev/"):
        return None
    size = entry.get("size_bytes", entry.get("size"))
    disk: dict[str, Any] = {"device": device if device.startswith("/dev/") else f"/dev/{device}"}
    disk["size_bytes"] = size if isinstance(size, int) and size >= 0 else None
    return disk


def read_discovery(mac: str, attributes: dict[str, Any]) -> DiscoveredMachine:
    """`mac` is the normalised MAC the agent booted from."""
    macs = [mac]
    for entry in _entries(attributes, "nics", "interfaces"):
        other = _mac_or_none(entry.get("mac"))
        if other is not None and other not in macs and len(macs) < MAX_INTERFACES:
            macs.append(other)
    disks = [disk for entry in _entries(attributes, "disks") if (disk := _disk(entry))]
    arch = attributes.get("arch")
    uefi = attributes.get("uefi")
    return DiscoveredMachine(
        name=discovered_name(mac),
        macs=tuple(macs),
        disks=tuple(disks[:MAX_DISKS]),
        arch=arch if arch in ("x86_64", "aarch64") else "x86_64",
        uefi=uefi if isinstance(uefi, bool) else True,
    )
