"""Loading and refreshing the machine index from the database.

Every machine is loaded once, then one machine is reloaded whenever an event names it (events
from other processes arrive through the PostgreSQL relay), plus a full reload every
`FULL_RELOAD_SECONDS` as a safety net against a missed event. A machine's IPAM assignments are
loaded with it (ipam writes an `ipam.host.*` event naming the machine when they change), so
the metadata service tells its OS the addresses IPAM gave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, selectinload, undefer

from metalflow.db.engine import Database
from metalflow.events import Event
from metalflow.index.instance import (
    Address,
    InterfaceFields,
    ParentBlock,
    instance_from,
    private_routes,
)
from metalflow.index.views import BootOptions, InterfaceView, MachineIndex, MachineView
from metalflow.inventory.tables import Machine
from metalflow.ipam.layout import block_layout
from metalflow.ipam.tables import IpBlock, Kind, Status
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


def address_of(block: IpBlock, parent: IpBlock) -> Address:
    """An assignment as the machine's OS is told it: the machine's address in the block (the
    upper one of a /31 or /127, whose lower one is the gateway), from the pool or project block
    `parent`; a per-host block (taken straight from a pool) is a management address."""
    network = ipaddress.ip_network(block.cidr)
    layout = block_layout(network)
    parent_network = ipaddress.ip_network(parent.cidr)
    private4 = block.kind == Kind.PRIVATE.value and network.version == 4
    address = str(layout.machine_address)
    return Address(
        address=address,
        netmask=str(network.netmask),
        gateway=None if layout.gateway is None else str(layout.gateway),
        family=network.version,
        public=block.kind != Kind.PRIVATE.value,
        management=parent.status == Status.POOL.value,
        cidr=network.prefixlen,
        id=block.id,
        parent=ParentBlock(
            str(parent_network.network_address),
            str(parent_network.netmask),
            parent_network.prefixlen,
        ),
        routes=private_routes(address, parent.cidr) if private4 and layout.gateway else (),
    )


def assigned_addresses(
    session: Session, machine_ids: Iterable[str] | None = None
) -> dict[str, list[Address]]:
    """Each machine's IPAM assignments, public before private, IPv4 before IPv6 (Equinix's
    order), in one query; the provisioning network's address is its interface's, not here."""
    parent = aliased(IpBlock)
    query = (
        select(IpBlock, parent)
        .join(parent, parent.id == IpBlock.parent_id)
        .where(
            IpBlock.status == Status.ASSIGNMENT.value,
            IpBlock.machine_id.is_not(None),
            parent.provisioning.is_(False),
        )
    )
    if machine_ids is not None:
        query = query.where(IpBlock.machine_id.in_(list(machine_ids)))
    found: dict[str, list[Address]] = {}
    for block, holder in session.execute(query):
        assert block.machine_id is not None
        found.setdefault(block.machine_id, []).append(address_of(block, holder))
    for addresses in found.values():
        addresses.sort(key=lambda a: (not a.public, a.family, a.id or ""))
    return found


def view_of(
    machine: Machine, active: tuple[str, int] | None, assigned: Iterable[Address] = ()
) -> MachineView:
    """The machine as the boot services need it, with its active workflow's (id, start) if any
    and the addresses IPAM assigned it; raises ValueError on an unreadable address."""
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
        instance=instance_from(
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
            assigned=tuple(assigned),
        ),
    )


def load_views(session: Session, machine_ids: Iterable[str] | None = None) -> list[MachineView]:
    """Machines with their interfaces, whether a workflow is active and their IPAM addresses,
    in four queries."""
    query = select(Machine).options(
        selectinload(Machine.interfaces),
        undefer(Machine.instance_metadata),
        undefer(Machine.user_data),
    )
    active_query = select(Workflow.machine_id, Workflow.id, Workflow.starts).where(
        Workflow.state.in_(ACTIVE)
    )
    ids = None if machine_ids is None else list(machine_ids)
    if ids is not None:
        query = query.where(Machine.id.in_(ids))
        active_query = active_query.where(Workflow.machine_id.in_(ids))
    active = {
        machine_id: (workflow_id, starts)
        for machine_id, workflow_id, starts in session.execute(active_query)
    }
    assigned = assigned_addresses(session, ids)
    views = []
    for machine in session.scalars(query):
        try:
            views.append(view_of(machine, active.get(machine.id), assigned.get(machine.id, ())))
        except ValueError as exc:
            log.error(
                "event=boot.index.machine_skipped machine=%s machine_id=%s reason=%s",
                machine.name,
                machine.id,
                exc,
            )
    return views


class IndexRefresher:
    """Keeps a MachineIndex fresh from the event bus: changed machines are reloaded in a batch."""

    def __init__(self, db: Database, index: MachineIndex) -> None:
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
