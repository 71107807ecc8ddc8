"""The machines as the boot and metadata services see them: plain values, looked up in memory.

DHCP, TFTP, iPXE scripts and the metadata service answer from a `MachineIndex`, never with a
query per packet or request. Nothing here does I/O (`index.store` loads and refreshes it), so the
pure protocol cores can use these types without pulling in a database driver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from metalflow.index.instance import Instance


@dataclass(frozen=True, slots=True)
class BootOptions:
    """Per-machine overrides of the iPXE script: its own script, a chain URL, kernel args."""

    ipxe_script: str | None = None
    ipxe_url: str | None = None
    kernel_args: str = ""
    console: str | None = None


@dataclass(frozen=True, slots=True)
class InterfaceView:
    mac: str
    ip: ipaddress.IPv4Address | None
    netmask: ipaddress.IPv4Address | None
    gateway: ipaddress.IPv4Address | None
    nameservers: tuple[ipaddress.IPv4Address, ...]
    hostname: str | None
    lease_time: int | None
    allow_pxe: bool
    allow_workflow: bool


@dataclass(frozen=True, slots=True)
class MachineView:
    id: str
    name: str
    hostname: str | None
    arch: str
    uefi: bool
    state: str
    agent_token_generation: int
    has_active_workflow: bool
    interfaces: tuple[InterfaceView, ...]
    boot: BootOptions = field(default_factory=BootOptions)
    instance: Instance | None = None
    """What the metadata service tells the machine's OS."""
    workflow_id: str | None = None
    """The active workflow, whose start a boot token names."""
    workflow_start: int = 0

    def interface(self, mac: str) -> InterfaceView | None:
        return next((iface for iface in self.interfaces if iface.mac == mac), None)

    def host_name(self, mac: str) -> str:
        iface = self.interface(mac)
        return (iface.hostname if iface else None) or self.hostname or self.name


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_id: dict[str, MachineView]
    by_mac: dict[str, MachineView]
    by_ip: dict[ipaddress.IPv4Address, tuple[MachineView, InterfaceView]]
    by_address: dict[str, MachineView]
    """Every address of a machine, its interfaces' and its metadata's, as text (IPv4, IPv6)."""


def _snapshot(views: Iterable[MachineView]) -> _Snapshot:
    by_id = {view.id: view for view in views}
    by_mac: dict[str, MachineView] = {}
    by_ip: dict[ipaddress.IPv4Address, tuple[MachineView, InterfaceView]] = {}
    by_address: dict[str, MachineView] = {}
    for view in by_id.values():
        for iface in view.interfaces:
            by_mac[iface.mac] = view
            if iface.ip is not None:
                by_ip[iface.ip] = (view, iface)
                by_address[str(iface.ip)] = view
        if view.instance is not None:
            for address in view.instance.addresses:
                by_address.setdefault(address.address, view)
    return _Snapshot(by_id, by_mac, by_ip, by_address)


class MachineIndex:
    """Lookups by MAC and by IPv4 address. One snapshot is replaced whole, by one assignment
    on the event loop, so a reader never sees one map new and another old."""

    def __init__(self) -> None:
        self._snapshot = _snapshot(())

    def __len__(self) -> int:
        return len(self._snapshot.by_id)

    def by_mac(self, mac: str) -> MachineView | None:
        return self._snapshot.by_mac.get(mac)

    def by_id(self, machine_id: str) -> MachineView | None:
        return self._snapshot.by_id.get(machine_id)

    def by_ip(self, ip: ipaddress.IPv4Address) -> tuple[MachineView, InterfaceView] | None:
        return self._snapshot.by_ip.get(ip)

    def by_address(self, address: str) -> MachineView | None:
        """The machine holding `address` (canonical text form, e.g. from ipaddress)."""
        return self._snapshot.by_address.get(address)

    def replace_all(self, views: Iterable[MachineView]) -> None:
        self._snapshot = _snapshot(views)

    def update(self, machine_ids: Iterable[str], views: Iterable[MachineView]) -> None:
        """Replace `machine_ids` with `views`; an id without a view was deleted."""
        merged = dict(self._snapshot.by_id)
        for machine_id in machine_ids:
            merged.pop(machine_id, None)
        merged.update({view.id: view for view in views})
        self._snapshot = _snapshot(merged.values())
