"""The boot and metadata services' view of the inventory, held in memory.

DHCP, TFTP, iPXE scripts and the metadata service answer from here, never with a query per
packet or request: the index loads every machine once, then reloads one machine whenever an
event names it (events from other processes arrive through the PostgreSQL relay), plus a full
reload every `FULL_RELOAD_SECONDS` as a safety net against a missed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, undefer

from metalflow.db.engine import Database
from metalflow.events import Event
from metalflow.inventory.tables import Machine
from metalflow.metadata.ec2 import Directory, tree
from metalflow.metadata.instance import Instance, InterfaceFields, instance_from
from metalflow.workflows.tables import ACTIVE, Workflow

log = logging.getLogger("metalflow.boot.index")
FULL_RELOAD_SECONDS = 60.0
IGNORED_EVENT_PREFIXES = (
    "workflow.action.log",
    "boot.",
    "dhcp.",
    "tftp.",
    "metadata.",
    "power.",
)
"""Events that never change what the boot services answer (and the ones they write)."""


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
    ec2_tree: Directory | None = None
    """The instance's EC2 tree, built once here rather than per request."""
    workflow_id: str | None = None
    """The active workflow, whose start a boot token names."""
    workflow_start: int = 0

    def interface(self, mac: str) -> InterfaceView | None:
        return next((iface for iface in self.interfaces if iface.mac == mac), None)

    def wants_netboot(self, mac: str) -> bool:
        """True when this interface may PXE boot and there is something to boot: a workflow the
        interface may run (Tinkerbell's allowWorkflow), or the machine's own script or URL."""
        iface = self.interface(mac)
        if iface is None or not iface.allow_pxe:
            return False
        has_own_script = self.boot.ipxe_script is not None or self.boot.ipxe_url is not None
        return has_own_script or (self.has_active_workflow and iface.allow_workflow)

    def host_name(self, mac: str) -> str:
        iface = self.interface(mac)
        return (iface.hostname if iface else None) or self.hostname or self.name


def _ipv4(value: str | None) -> ipaddress.IPv4Address | None:
    if not value:
        return None
    address = ipaddress.ip_address(value)
    return address if isinstance(address, ipaddress.IPv4Address) else None


def _netmask(value: str | None) -> ipaddress.IPv4Address | None:
    """Dotted or, as rows written before it was normalised may hold, a prefix length."""
    return ipaddress.IPv4Network(f"0.0.0.0/{value}").netmask if value else None


def _boot_options(raw: dict[str, Any] | None) -> BootOptions:
    raw = raw or {}
    return BootOptions(
        ipxe_script=raw.get("ipxe_script"),
        ipxe_url=raw.get("ipxe_url"),
        kernel_args=raw.get("kernel_args") or "",
        console=raw.get("console"),
    )


def view_of(machine: Machine, active: tuple[str, int] | None) -> MachineView:
    """The machine as the boot services need it, with its active workflow's (id, start) if any;
    raises ValueError on an unreadable address."""
    return MachineView(
        id=machine.id,
        name=machine.name,
        hostname=machine.hostname,
        arch=machine.arch,
        uefi=machine.uefi,
        state=machine.state,
        agent_token_generation=machine.agent_token_generation,
        has_active_workflow=active is not None,
        workflow_id=active[0] if active else None,
        workflow_start=active[1] if active else 0,
        interfaces=tuple(
            InterfaceView(
                mac=iface.mac,
                ip=_ipv4(iface.ip),
                netmask=_netmask(iface.netmask),
                gateway=_ipv4(iface.gateway),
                nameservers=tuple(
                    address for address in map(_ipv4, iface.nameservers) if address is not None
                ),
                hostname=iface.hostname,
                lease_time=iface.lease_time,
                allow_pxe=iface.allow_pxe,
                allow_workflow=iface.allow_workflow,
            )
            for iface in machine.interfaces
        ),
        boot=_boot_options(machine.boot),
        instance=(
            instance := instance_from(
                machine_id=machine.id,
                name=machine.name,
                hostname=machine.hostname,
                interfaces=[
                    InterfaceFields(
                        iface.mac,
                        iface.ip,
                        iface.netmask,
                        iface.gateway,
                        [str(server) for server in iface.nameservers],
                        iface.vlan,
                    )
                    for iface in machine.interfaces
                ],
                metadata=machine.instance_metadata or {},
                user_data=machine.user_data,
            )
        ),
        ec2_tree=tree(instance),
    )


def load_views(session: Session, machine_ids: Iterable[str] | None = None) -> list[MachineView]:
    """Machines with their interfaces and whether a workflow is active, in two queries."""
    query = select(Machine).options(
        selectinload(Machine.interfaces),
        undefer(Machine.instance_metadata),
        undefer(Machine.user_data),
    )
    active_query = select(Workflow.machine_id, Workflow.id, Workflow.starts).where(
        Workflow.state.in_(ACTIVE)
    )
    if machine_ids is not None:
        ids = list(machine_ids)
        query = query.where(Machine.id.in_(ids))
        active_query = active_query.where(Workflow.machine_id.in_(ids))
    active = {
        machine_id: (workflow_id, starts)
        for machine_id, workflow_id, starts in session.execute(active_query)
    }
    views = []
    for machine in session.scalars(query):
        try:
            views.append(view_of(machine, active.get(machine.id)))
        except ValueError as exc:
            log.error(
                "event=boot.index.machine_skipped machine=%s machine_id=%s reason=%s",
                machine.name,
                machine.id,
                exc,
            )
    return views


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


class BootIndex:
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


class IndexRefresher:
    """Keeps a BootIndex fresh from the event bus: changed machines are reloaded in a batch."""

    def __init__(self, db: Database, index: BootIndex) -> None:
        self.db = db
        self.index = index
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def on_event(self, event: Event) -> None:
        if event.machine_id is None or event.kind.startswith(IGNORED_EVENT_PREFIXES):
            return
        self._dirty.add(event.machine_id)
        self._wake.set()

    def _load(self, machine_ids: set[str] | None) -> list[MachineView]:
        with self.db.read() as session:
            return load_views(session, machine_ids)

    async def load_all(self) -> None:
        """Read in a worker thread, swap on the loop."""
        self.index.replace_all(await to_thread.run_sync(self._load, None))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time() + FULL_RELOAD_SECONDS
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - loop.time()))
            self._wake.clear()
            dirty: set[str] = set()
            try:
                if loop.time() >= next_full:
                    next_full = loop.time() + FULL_RELOAD_SECONDS
                    self._dirty.clear()
                    await self.load_all()
                elif self._dirty:
                    dirty, self._dirty = self._dirty, set()
                    views = await to_thread.run_sync(self._load, dirty)
                    self.index.update(dirty, views)
            except Exception:
                self._dirty |= dirty
                log.exception("event=boot.index.reload_failed")
                await asyncio.sleep(1.0)
