"""A machine's per-host addresses on the tables: `hostplan` decides, this module reads what it
needs and carries the plan out with `ipam.service`'s allocations, in the caller's transaction.

Per-host blocks are the assignments taken straight from a pool (the metro's public pool, or a
project's private or IPv6 block, which are pools carved for the project); a block assigned from
a reservation (an elastic IP) is the tenant's own business and never counts as one. Every change
records an `ipam.host.*` event naming the machine, which makes the machine index reload it and
so the metadata service serve the new addresses.

The caller holds the machine's row lock (two assignments of one machine at once would each find
it without addresses); two machines of one project carving its first block at once are kept
apart here, by the lock of the pool both would carve from.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from metalflow import events
from metalflow.config import Settings
from metalflow.errors import Conflict
from metalflow.inventory.tables import Interface, Machine
from metalflow.ipam import service
from metalflow.ipam.hostplan import (
    KIND_AND_FAMILY,
    Carve,
    Holdings,
    HostSizes,
    Plan,
    Role,
    Space,
    plan,
)
from metalflow.ipam.layout import block_layout
from metalflow.ipam.tables import IpBlock, Kind, Status

ROLE_OF = {kind_and_family: role for role, kind_and_family in KIND_AND_FAMILY.items()}
"""A per-host block's role from its kind and family."""


def _per_host(
    session: Session, machine_id: str, *, with_provisioning: bool = False
) -> list[IpBlock]:
    parent = aliased(IpBlock)
    query = (
        select(IpBlock)
        .join(parent, parent.id == IpBlock.parent_id)
        .where(
            IpBlock.machine_id == machine_id,
            IpBlock.status == Status.ASSIGNMENT.value,
            parent.status == Status.POOL.value,
        )
        .order_by(IpBlock.family, IpBlock.kind, IpBlock.first)
    )
    if not with_provisioning:
        query = query.where(parent.provisioning.is_(False))
    return list(session.scalars(query))


def _spaces(session: Session, blocks: Iterable[IpBlock]) -> tuple[Space, ...]:
    return tuple(
        Space(block.id, block.cidr, service.stats(session, block).largest_free_prefixlen)
        for block in blocks
    )


def _pools(session: Session, metro: str, kind: Kind, family: int) -> list[IpBlock]:
    """The provider's pools of the metro: not a project's, not the provisioning network's."""
    return [
        block
        for block in service.list_prefixes(
            session, family=family, kind=kind, status=Status.POOL, metro=metro
        )
        if block.project_id is None and not block.provisioning
    ]


def _holdings(session: Session, machine_id: str, project_id: str, metro: str) -> Holdings:
    def project_blocks(kind: Kind, family: int) -> tuple[Space, ...]:
        blocks = service.list_prefixes(
            session,
            family=family,
            kind=kind,
            status=Status.POOL,
            metro=metro,
            project_id=project_id,
        )
        return _spaces(session, blocks)

    held = frozenset(
        role
        for block in _per_host(session, machine_id)
        if (role := ROLE_OF.get((block.kind, block.family))) is not None
    )
    return Holdings(
        held=held,
        public4_pools=_spaces(session, _pools(session, metro, Kind.PUBLIC, 4)),
        private4_pools=_spaces(session, _pools(session, metro, Kind.PRIVATE, 4)),
        public6_pools=_spaces(session, _pools(session, metro, Kind.PUBLIC, 6)),
        project_private4=project_blocks(Kind.PRIVATE, 4),
        project_public6=project_blocks(Kind.PUBLIC, 6),
    )


def _checked_plan(
    session: Session, machine_id: str, project_id: str, metro: str, sizes: HostSizes
) -> Plan:
    """The plan, planned again under the locks of the pools it carves from, so that of two
    machines of one project only the first carves the project's block."""
    found = plan(_holdings(session, machine_id, project_id, metro), sizes)
    carving = sorted({step.pool.id for step in found.steps if isinstance(step, Carve)})
    if carving:
        for pool_id in carving:
            service.lock_block(session, pool_id)
        found = plan(_holdings(session, machine_id, project_id, metro), sizes)
    if found.shortages:
        raise Conflict(
            "; ".join(shortage.message(metro) for shortage in found.shortages), field="metro"
        )
    return found


def host_sizes(settings: Settings, metro: str) -> HostSizes:
    """The sizes the settings give `metro` (METALFLOW_IPAM_METRO_SIZES over the defaults)."""
    return HostSizes(**settings.host_sizes(metro))


def give_host_addresses(
    session: Session, machine_id: str, project_id: str, metro: str | None, sizes: HostSizes
) -> list[IpBlock]:
    """Give a machine assigned to `project_id` the per-host blocks it lacks in `metro`; the new
    ones are returned (none when it has them all). A 409 when the metro has no room for one of
    them, before anything is written (a pool filled by another writer meanwhile fails the
    allocation, and the caller's transaction, rolled back, keeps nothing)."""
    if not metro:
        raise Conflict(
            f"machine {machine_id} stands in no metro, so it has no pools to take addresses"
            " from: set spec.metro in its manifest and apply it again",
            field="metro",
        )
    carved: dict[Role, IpBlock] = {}
    given: list[IpBlock] = []
    for step in _checked_plan(session, machine_id, project_id, metro, sizes).steps:
        if isinstance(step, Carve):
            carved[step.role] = service.allocate(
                session,
                step.pool.id,
                prefixlen=step.prefixlen,
                status=Status.POOL,
                project_id=project_id,
            )
            continue
        source = carved[step.role].id if isinstance(step.source, Carve) else step.source.id
        given.append(
            service.allocate(
                session,
                source,
                prefixlen=step.prefixlen,
                project_id=project_id,
                machine_id=machine_id,
            )
        )
    if given:
        events.record(
            session,
            "ipam.host.assigned",
            machine_id=machine_id,
            project_id=project_id,
            metro=metro,
            blocks=[block.cidr for block in given],
        )
    return given


def release_host_addresses(
    session: Session,
    machine_id: str,
    now: dt.datetime,
    *,
    quarantine: dt.timedelta,
    with_provisioning: bool = False,
) -> int:
    """Release a machine's per-host blocks into quarantine (`now + quarantine`), and with
    `with_provisioning` its provisioning address too (a machine being deleted); how many. The
    project keeps its blocks for its other and later machines."""
    held = _per_host(session, machine_id, with_provisioning=with_provisioning)
    released = {block.id: block.cidr for block in held}
    for block_id in released:
        service.release(session, block_id, quarantine=quarantine, now=now)
    if released:
        events.record(
            session, "ipam.host.released", machine_id=machine_id, blocks=list(released.values())
        )
    return len(released)


def addresses_of(session: Session, machine_ids: Sequence[str]) -> dict[str, list[IpBlock]]:
    """Every block assigned to each of the machines (per-host, elastic, provisioning), by
    family, kind and address; a machine without any is left out."""
    found: dict[str, list[IpBlock]] = {}
    blocks = session.scalars(
        select(IpBlock)
        .where(
            IpBlock.machine_id.in_(list(machine_ids)),
            IpBlock.status == Status.ASSIGNMENT.value,
        )
        .order_by(IpBlock.family, IpBlock.kind, IpBlock.first)
    )
    for block in blocks:
        assert block.machine_id is not None
        found.setdefault(block.machine_id, []).append(block)
    return found


def provisioning_address(
    session: Session, machine_id: str, *, metro: str | None = None, family: int | None = None
) -> IpBlock | None:
    """The machine's address on the provisioning network, for its DHCP reservation: the one it
    has, else a /32 (or /128) allocated from a provider pool marked `provisioning` (the
    metro's first, else one without a metro); None when there is no such pool. `family` keeps
    to pools of that family (DHCP hands out IPv4 only).

    Allocation is lowest-first, so a fresh pool would hand out its network address and then
    its gateway (network+1, as `layout` has it), and a full one its broadcast address: those
    are kept as assignments of no machine, described as such, and never handed to one (a
    pool with only those left answers "exhausted"). So is an address that another machine's
    manifest declares for one of its interfaces (its DHCP reservation answers that already).
    """
    parent = aliased(IpBlock)
    held = session.scalar(
        select(IpBlock)
        .join(parent, parent.id == IpBlock.parent_id)
        .where(
            IpBlock.machine_id == machine_id,
            IpBlock.status == Status.ASSIGNMENT.value,
            parent.provisioning.is_(True),
            *(() if family is None else (IpBlock.family == family,)),
        )
        .limit(1)
    )
    if held is not None:
        return held
    pools = [
        block
        for block in service.list_prefixes(session, family=family, status=Status.POOL)
        if block.provisioning and block.project_id is None and block.metro in (metro, None)
    ]
    pools.sort(key=lambda block: (block.metro is None, block.family, block.first))
    for pool in pools:
        if service.stats(session, pool).largest_free_prefixlen is None:
            continue
        return _host_address(session, pool, machine_id)
    return None


def _host_address(session: Session, pool: IpBlock, machine_id: str) -> IpBlock:
    network = ipaddress.ip_network(pool.cidr)
    layout = block_layout(network)
    while True:
        block = service.allocate(
            session, pool.id, prefixlen=network.max_prefixlen, machine_id=machine_id
        )
        address = ipaddress.ip_network(block.cidr).network_address
        usable = int(layout.first_host) <= int(address) <= int(layout.last_host)
        reserved = not usable or address == layout.gateway
        declared_by = (
            None
            if reserved
            else session.scalar(
                select(Machine.name).join(Interface).where(Interface.ip == str(address))
            )
        )
        if not reserved and declared_by is None:
            events.record(
                session, "ipam.host.provisioning", machine_id=machine_id, address=str(address)
            )
            return block
        block.machine_id = None
        block.description = (
            f"{address} is not a host address of {pool.cidr}: never handed out"
            if reserved
            else f"{address} is declared by machine {declared_by}: never handed out"
        )
        session.flush()


def provisioning_fields(session: Session, block: IpBlock) -> tuple[str, str, str | None]:
    """What the booting interface's DHCP reservation hands out for a provisioning address:
    the address, its pool's netmask and its pool's gateway (network+1, as `layout` has it)."""
    pool = service.get(session, block.parent_id or block.id)
    layout = block_layout(ipaddress.ip_network(pool.cidr))
    address = str(ipaddress.ip_network(block.cidr).network_address)
    return address, str(layout.netmask), None if layout.gateway is None else str(layout.gateway)
