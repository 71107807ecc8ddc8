"""Prefixes and allocations on the tables: the allocation core decides, this module reads and
writes the few rows it names.

Race-free by construction, and concurrent: an allocation claims the free block it splits with
`SELECT ... FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite serialises writers), so concurrent
allocators from one pool take different free blocks instead of queueing on the pool; every other
reader of free blocks (a release merging buddies, a prefix carved over them) locks the rows it
reads, so a block claimed by an allocation is never merged or carved twice. Changes to a block's
own children other than allocation (nesting a new prefix, deleting, releasing) take the block's
row lock, top-down. The exclusion constraint of migration 0008 is the proof: an overlapping child
is refused by the database itself, whichever code path writes it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.errors import Conflict, Invalid, MetalflowError, NotFound
from metalflow.inventory.tables import Machine
from metalflow.ipam import allocator
from metalflow.ipam.allocator import Network, Strategy
from metalflow.ipam.layout import validate_tenant_size
from metalflow.ipam.tables import FreeBlock, IpBlock, Kind, Status, address_key
from metalflow.metrics import PrefixUsage
from metalflow.tenancy.tables import Project

HOLDS_CHILDREN = (Status.POOL.value, Status.RESERVATION.value)


@dataclass(frozen=True)
class PrefixSpec:
    """A prefix the provider adds (a pool), or brings in for a project (`byo`: then it is that
    project's reservation, never handed to anyone outside it and `allowed_projects`)."""

    cidr: str
    kind: Kind = Kind.PUBLIC
    metro: str | None = None
    project_id: str | None = None
    tags: Sequence[str] = ()
    description: str = ""
    provisioning: bool = False
    byo: bool = False
    allowed_projects: Sequence[str] = field(default_factory=tuple)


@contextmanager
def _as_metalflow_errors() -> Iterator[None]:
    """The allocation core's errors as the API's: 422 for bad blocks and sizes, 409 for space
    that is taken or used up, 404 for releasing what is not allocated."""
    try:
        yield
    except (allocator.Exhausted, allocator.Overlap) as exc:
        raise Conflict(exc.message, field=exc.field) from exc
    except allocator.NotAllocated as exc:
        raise NotFound(exc.message, field=exc.field) from exc
    except allocator.IpamError as exc:
        raise Invalid(exc.message, field=exc.field) from exc


def network_of(block: IpBlock | FreeBlock) -> Network:
    return ipaddress.ip_network(block.cidr)


def _span(network: Network) -> tuple[str, str]:
    return address_key(network.network_address), address_key(network.broadcast_address)


def _new_block(network: Network, parent: IpBlock | None, status: Status, kind: str) -> IpBlock:
    first, last = _span(network)
    return IpBlock(
        id=uuid.uuid4().hex,
        parent_id=None if parent is None else parent.id,
        cidr=str(network),
        family=network.version,
        prefixlen=network.prefixlen,
        first=first,
        last=last,
        kind=kind,
        status=status.value,
        allowed_projects=[],
        tags=[],
        description="",
    )


def _free_row(session: Session, holder: IpBlock, network: Network) -> FreeBlock | None:
    """The free block `network`, locked, if it is free (and not being claimed)."""
    return session.scalar(
        select(FreeBlock)
        .where(
            FreeBlock.block_id == holder.id,
            FreeBlock.prefixlen == network.prefixlen,
            FreeBlock.first == address_key(network.network_address),
        )
        .with_for_update()
    )


def _free_row_containing(session: Session, holder: IpBlock, network: Network) -> FreeBlock | None:
    """The free block holding `network`: free blocks are disjoint, so it is the last one that
    starts at or before it, if that one reaches far enough."""
    row = session.scalar(
        select(FreeBlock)
        .where(
            FreeBlock.block_id == holder.id,
            FreeBlock.first <= address_key(network.network_address),
        )
        .order_by(FreeBlock.first.desc())
        .limit(1)
        .with_for_update()
    )
    if row is None or not allocator.inside(network, network_of(row)):
        return None
    return row


def lock_block(session: Session, block_id: str) -> IpBlock:
    """The block's row lock, the serialisation point for changes to its children."""
    session.expire_all()
    locked = session.scalar(select(IpBlock).where(IpBlock.id == block_id).with_for_update())
    if locked is None:
        raise NotFound(f"prefix {block_id} was deleted", field="prefix")
    return locked


def _siblings_overlapping(
    session: Session, parent: IpBlock | None, network: Network
) -> list[IpBlock]:
    """Children of `parent` (or roots) that overlap `network`: those starting inside it, plus
    the one before it if that one reaches into it (siblings are disjoint)."""
    first, last = _span(network)
    same_parent = IpBlock.parent_id.is_(None) if parent is None else IpBlock.parent_id == parent.id
    scope = (same_parent, IpBlock.family == network.version)
    inside = list(
        session.scalars(
            select(IpBlock).where(*scope, IpBlock.first >= first, IpBlock.first <= last)
        )
    )
    before = session.scalar(
        select(IpBlock).where(*scope, IpBlock.first < first).order_by(IpBlock.first.desc()).limit(1)
    )
    if before is not None and before.last >= first:
        inside.append(before)
    return inside


def _containing_pool(session: Session, network: Network) -> IpBlock | None:
    """The smallest pool that holds `network`."""
    first, last = _span(network)
    return session.scalar(
        select(IpBlock)
        .where(
            IpBlock.family == network.version,
            IpBlock.status == Status.POOL.value,
            IpBlock.first <= first,
            IpBlock.last >= last,
            IpBlock.prefixlen < network.prefixlen,
        )
        .order_by(IpBlock.prefixlen.desc())
        .limit(1)
    )


def _gaps(network: Network, children: Sequence[Network]) -> list[Network]:
    """`network` minus its (disjoint) children, as maximal aligned blocks."""
    gaps: list[Network] = []
    cursor = int(network.network_address)
    end = int(network.broadcast_address)
    address = type(network.network_address)
    for child in sorted(children, key=lambda c: int(c.network_address)):
        if int(child.network_address) > cursor:
            gaps += ipaddress.summarize_address_range(
                address(cursor), address(int(child.network_address) - 1)
            )
        cursor = int(child.broadcast_address) + 1
    if cursor <= end:
        gaps += ipaddress.summarize_address_range(address(cursor), address(end))
    return gaps


def create_prefix(session: Session, spec: PrefixSpec) -> IpBlock:
    """Add a prefix: inside the smallest pool that holds it, over what it contains.

    Blocks it contains become its children; a block it only partly overlaps is a conflict.
    """
    with _as_metalflow_errors():
        network = allocator.parse_block(spec.cidr, field="cidr")
    allowed = _checked_scope(session, spec, network)
    parent = _containing_pool(session, network)
    if parent is not None:
        if spec.byo:
            raise _inside_held(network, parent)
        parent = lock_block(session, parent.id)
    overlapping = _siblings_overlapping(session, parent, network)
    for sibling in overlapping:
        if sibling.cidr == str(network):
            raise Conflict(f"prefix {network} exists already", field="cidr")
        if spec.byo or sibling.byo:
            brought = str(network) if spec.byo else sibling.cidr
            raise Conflict(
                f"{network} overlaps {sibling.cidr}, and {brought} is a brought prefix, which"
                " nests in nothing and holds no pool: choose a block outside it",
                field="cidr",
            )
        if not allocator.inside(network_of(sibling), network):
            raise Conflict(
                f"{network} overlaps {sibling.cidr} without containing it: choose a block that"
                f" holds all of {sibling.cidr} or none of it",
                field="cidr",
            )
    status = Status.RESERVATION if spec.byo else Status.POOL
    block = _new_block(network, parent, status, spec.kind.value)
    block.metro = spec.metro
    block.project_id = spec.project_id
    block.tags = list(spec.tags)
    block.description = spec.description
    block.provisioning = spec.provisioning
    block.byo = spec.byo
    block.allowed_projects = allowed
    session.add(block)
    session.flush()
    if parent is not None:
        _take_from_free_space(session, parent, network)
    for child in overlapping:
        child.parent_id = block.id
    _insert_free(session, block, _gaps(network, [network_of(child) for child in overlapping]))
    session.flush()
    return block


def update_prefix(
    session: Session,
    block: IpBlock,
    *,
    kind: Kind,
    metro: str | None,
    tags: Sequence[str],
    description: str,
    provisioning: bool,
    allowed_projects: Sequence[str],
) -> bool:
    """Change what a prefix says about itself, never the space it holds (its CIDR, project and
    whether it is brought: another prefix). Blocks allocated from it keep the kind and metro
    they were given. True when anything changed."""
    wanted = {
        "kind": kind.value,
        "metro": metro,
        "tags": list(tags),
        "description": description,
        "provisioning": provisioning,
        "allowed_projects": list(allowed_projects),
    }
    changed = {name: value for name, value in wanted.items() if getattr(block, name) != value}
    for name, value in changed.items():
        setattr(block, name, value)
    if changed:
        session.flush()
    return bool(changed)


def _take_from_free_space(session: Session, holder: IpBlock, network: Network) -> None:
    """Remove `network` from the holder's free space: split the free block that holds it, or
    drop the free blocks inside it (a new pool over children takes those gaps as its own)."""
    containing = _free_row_containing(session, holder, network)
    if containing is not None:
        with _as_metalflow_errors():
            split = allocator.carve(network_of(containing), network.prefixlen, at=network)
        session.delete(containing)
        session.flush()
        _insert_free(session, holder, split.remainder)
        return
    first, last = _span(network)
    session.execute(
        delete(FreeBlock).where(
            FreeBlock.block_id == holder.id, FreeBlock.first >= first, FreeBlock.first <= last
        )
    )


def allocate(
    session: Session,
    holder_ref: IpBlock | str,
    *,
    prefixlen: int | None = None,
    at: str | None = None,
    strategy: Strategy = Strategy.FIRST_FIT,
    status: Status = Status.ASSIGNMENT,
    project_id: str | None = None,
    machine_id: str | None = None,
) -> IpBlock:
    """A child of the holder (a pool or reservation, or its id): the first free /prefixlen by
    `strategy`, or the given block `at`. A brought prefix hands out nothing outside its
    projects. A caller that has the holder passes it, saving a read.

    The free space is written with Core statements (the claimed block deleted as it is locked,
    the remainders inserted in one statement): its rows are never handed back as objects, so
    the unit of work has only the child to flush.
    """
    holder = session.get(IpBlock, holder_ref) if isinstance(holder_ref, str) else holder_ref
    if holder is None:
        raise NotFound(f"prefix {holder_ref} does not exist", field="prefix")
    if holder.status not in HOLDS_CHILDREN:
        raise Invalid(
            f"{holder.cidr} is a {holder.status}, which hands out no addresses: allocate from a"
            " pool or a reservation",
            field="prefix",
        )
    if holder.byo and project_id is not None and project_id not in projects_of(holder):
        raise Invalid(
            f"{holder.cidr} was brought by project {holder.project_id}: allocate it only to that"
            " project or one it allows (allowed_projects)",
            field="project",
        )
    parent_network = network_of(holder)
    with _as_metalflow_errors():
        if at is not None:
            wanted = allocator.parse_block(at, field="cidr")
            source = _source_for(session, holder, parent_network, wanted)
            split = allocator.carve(network_of(source), wanted.prefixlen, at=wanted)
            session.delete(source)
            session.flush()
        else:
            if prefixlen is None:
                raise allocator.InvalidSize(
                    "give prefixlen (the size to allocate) or cidr (the block)", field="prefixlen"
                )
            if not parent_network.prefixlen <= prefixlen <= parent_network.max_prefixlen:
                raise allocator.InvalidSize(
                    f"prefixlen {prefixlen} does not fit in {parent_network}: use"
                    f" {parent_network.prefixlen}..{parent_network.max_prefixlen}",
                    field="prefixlen",
                )
            claimed = _claim(session, holder, prefixlen, strategy)
            split = allocator.carve(claimed, prefixlen)
    _insert_free(session, holder, split.remainder)
    child = _new_block(split.allocated, holder, status, holder.kind)
    child.metro = holder.metro
    child.project_id = project_id if project_id is not None else holder.project_id
    child.machine_id = machine_id
    session.add(child)
    session.flush()
    if status.value in HOLDS_CHILDREN:
        _insert_free(session, child, [split.allocated])
    return child


def _insert_free(session: Session, holder: IpBlock, networks: Sequence[Network]) -> None:
    """The holder's free blocks `networks`, in one statement."""
    if networks:
        session.execute(
            insert(FreeBlock),
            [
                {
                    "block_id": holder.id,
                    "cidr": str(network),
                    "prefixlen": network.prefixlen,
                    "first": address_key(network.network_address),
                }
                for network in networks
            ],
        )


def _source_for(
    session: Session, holder: IpBlock, parent_network: Network, wanted: Network
) -> FreeBlock:
    if wanted.version != parent_network.version or not allocator.inside(wanted, parent_network):
        raise allocator.InvalidBlock(
            f"{wanted} is outside {parent_network}: use a block inside it", field="cidr"
        )
    source = _free_row_containing(session, holder, wanted)
    if source is not None:
        return source
    taken = _siblings_overlapping(session, holder, wanted)
    name = taken[0].cidr if taken else "an allocation"
    raise allocator.Overlap(
        f"{wanted} overlaps {name}, which is allocated: choose a free block or release that one",
        field="cidr",
        allocated=network_of(taken[0]) if taken else wanted,
    )


CLAIM_TRIES = 5


def _claim(session: Session, holder: IpBlock, prefixlen: int, strategy: Strategy) -> Network:
    """The free block the allocation splits, taken out of the free space as it is locked;
    Exhausted only when the free space says so.

    A claim skips blocks other allocations hold; when it finds none it waits for them once, and
    when that comes back empty too (a block it waited for was taken), it asks the free space
    whether anything of the size is left before it says the pool is full.
    """
    for _ in range(CLAIM_TRIES):
        found = _candidate(session, holder, prefixlen, strategy, skip_locked=True)
        found = found or _candidate(session, holder, prefixlen, strategy, skip_locked=False)
        if found is not None:
            return found
        figures = stats(session, holder)
        largest = figures.largest_free_prefixlen
        if largest is None or largest > prefixlen:
            raise allocator.Exhausted(network_of(holder), prefixlen, figures.utilisation, largest)
    raise Conflict(
        f"{holder.cidr} is too busy to hand out a /{prefixlen} just now: retry", field="prefix"
    )


def _candidate(
    session: Session, holder: IpBlock, prefixlen: int, strategy: Strategy, *, skip_locked: bool
) -> Network | None:
    """The first free block in `allocator.candidate_order`, deleted: one indexed statement
    (`DELETE ... WHERE id = (SELECT ... FOR UPDATE [SKIP LOCKED] LIMIT 1) RETURNING cidr`).

    Best-fit reads the (prefixlen, first) index backwards and stops at its first row. First-fit
    walks the free blocks by address and skips those too small for the request: with requests of
    one size there are none, with mixed sizes it skips the small fragments below the pick.
    """
    columns = {"prefixlen": FreeBlock.prefixlen, "address": FreeBlock.first}
    order = [
        columns[term.column].desc() if term.descending else columns[term.column]
        for term in allocator.candidate_order(strategy)
    ]
    pick = (
        select(FreeBlock.id)
        .where(FreeBlock.block_id == holder.id, FreeBlock.prefixlen <= prefixlen)
        .order_by(*order)
        .limit(1)
        .with_for_update(skip_locked=skip_locked)
        .scalar_subquery()
    )
    cidr = session.scalar(
        delete(FreeBlock)
        .where(FreeBlock.id == pick)
        .returning(FreeBlock.cidr)
        .execution_options(synchronize_session=False)
    )
    return None if cidr is None else ipaddress.ip_network(cidr)


def release(
    session: Session, block_id: str, *, quarantine: dt.timedelta, now: dt.datetime | None = None
) -> IpBlock | None:
    """Give a child back: into quarantine until `now + quarantine`, or free at once when the
    quarantine is zero (then None is returned: the block is gone)."""
    block = session.get(IpBlock, block_id)
    if block is None or block.parent_id is None:
        raise NotFound(f"allocation {block_id} does not exist", field="id")
    holder = lock_block(session, block.parent_id)
    block = session.get(IpBlock, block_id)
    if block is None:
        raise NotFound(f"allocation {block_id} was released", field="id")
    if block.status == Status.QUARANTINE.value:
        raise Conflict(f"{block.cidr} is released already (in quarantine)", field="id")
    if block.status == Status.POOL.value:
        raise Invalid(f"{block.cidr} is a pool: delete it as a prefix, not release it", field="id")
    children = session.scalar(select(func.count()).where(IpBlock.parent_id == block.id))
    if children:
        raise Conflict(
            f"{block.cidr} still has {children} assignment(s): unassign them first", field="id"
        )
    if quarantine > dt.timedelta(0):
        block.status = Status.QUARANTINE.value
        block.machine_id = None
        block.quarantine_until = (now or utcnow()) + quarantine
        session.execute(delete(FreeBlock).where(FreeBlock.block_id == block.id))
        session.flush()
        return block
    _free(session, holder, block)
    return None


def _free(session: Session, holder: IpBlock, block: IpBlock) -> None:
    network = network_of(block)
    session.execute(delete(FreeBlock).where(FreeBlock.block_id == block.id))
    session.delete(block)
    session.flush()
    rows: dict[Network, FreeBlock] = {}

    def is_free(candidate: Network) -> bool:
        row = _free_row(session, holder, candidate)
        if row is not None:
            rows[candidate] = row
        return row is not None

    merge = allocator.coalesce(network, network_of(holder), is_free)
    for absorbed in merge.absorbed:
        session.delete(rows[absorbed])
    session.flush()
    _insert_free(session, holder, [merge.merged])


def sweep_quarantine(session: Session, now: dt.datetime | None = None) -> int:
    """Return the blocks whose quarantine has passed to their parents' free space."""
    due = list(
        session.scalars(
            select(IpBlock.id).where(
                IpBlock.status == Status.QUARANTINE.value,
                IpBlock.quarantine_until <= (now or utcnow()),
            )
        )
    )
    for block_id in due:
        block = session.get(IpBlock, block_id)
        if block is None or block.parent_id is None:
            continue
        holder = lock_block(session, block.parent_id)
        block = session.get(IpBlock, block_id)
        if block is not None and block.status == Status.QUARANTINE.value:
            _free(session, holder, block)
    return len(due)


def retire_project_pools(
    session: Session, project_id: str, *, quarantine: dt.timedelta, now: dt.datetime | None = None
) -> None:
    """Put the pools carved for a project being deleted (its private and IPv6 blocks per metro)
    into quarantine whole, their released children with them. A pool with a child
    still assigned or reserved is left as it is, for the caller's check to name."""
    carved = session.scalars(
        select(IpBlock.id).where(
            IpBlock.project_id == project_id,
            IpBlock.status == Status.POOL.value,
            IpBlock.parent_id.is_not(None),
        )
    ).all()
    for block_id in carved:
        block = lock_block(session, block_id)
        children = list(session.scalars(select(IpBlock).where(IpBlock.parent_id == block.id)))
        if any(child.status != Status.QUARANTINE.value for child in children):
            continue
        until = max(
            [(now or utcnow()) + quarantine]
            + [child.quarantine_until for child in children if child.quarantine_until]
        )
        for child in children:
            session.execute(delete(FreeBlock).where(FreeBlock.block_id == child.id))
            session.delete(child)
        session.execute(delete(FreeBlock).where(FreeBlock.block_id == block.id))
        block.status = Status.QUARANTINE.value
        block.quarantine_until = until
        session.flush()


def delete_prefix(session: Session, block_id: str) -> None:
    """Remove a pool that hands out nothing (its whole space is free)."""
    block = get(session, block_id)
    if block.status != Status.POOL.value:
        raise Invalid(
            f"{block.cidr} is a {block.status}: release it instead of deleting it", field="id"
        )
    if block.parent_id is not None:
        holder = lock_block(session, block.parent_id)
    block = lock_block(session, block_id)
    children = session.scalar(select(func.count()).where(IpBlock.parent_id == block.id))
    if children:
        raise Conflict(
            f"{block.cidr} still holds {children} block(s): release or delete them first",
            field="id",
        )
    if block.parent_id is None:
        session.execute(delete(FreeBlock).where(FreeBlock.block_id == block.id))
        session.delete(block)
        session.flush()
        return
    _free(session, holder, block)


def find_by_cidr(session: Session, cidr: str, *, outermost: bool = False) -> IpBlock | None:
    """The block of this CIDR. A reservation of a whole pool has its pool's CIDR: then the
    child, or with `outermost` the pool (what a prefix document means)."""
    matches = list(session.scalars(select(IpBlock).where(IpBlock.cidr == cidr)))
    ids = {match.id for match in matches}
    parents = {match.parent_id for match in matches}
    if outermost:
        return next((match for match in matches if match.parent_id not in ids), None)
    return next((match for match in matches if match.id not in parents), None)


def missing_prefix(id_or_cidr: str) -> NotFound:
    """The answer for a prefix that does not exist, and for one the caller may not see."""
    return NotFound(
        f"no prefix {id_or_cidr!r}: list them with `metalflow ipam prefix list`", field="id"
    )


def get(session: Session, id_or_cidr: str) -> IpBlock:
    """A block by id, or by its CIDR: where a child has its parent's CIDR, the child."""
    found = session.get(IpBlock, id_or_cidr)
    if found is None and "/" in id_or_cidr:
        found = find_by_cidr(session, id_or_cidr)
    if found is None:
        raise missing_prefix(id_or_cidr)
    return found


def projects_of(block: IpBlock) -> frozenset[str]:
    """The projects a block belongs to: its owner, and for a brought prefix those it allows."""
    owners = set() if block.project_id is None else {block.project_id}
    allowed = {str(project) for project in block.allowed_projects} if block.byo else set()
    return frozenset(owners | allowed)


def stats(session: Session, block: IpBlock) -> allocator.PrefixStats:
    """Counts from the free space alone (one grouped read of the free blocks)."""
    network = network_of(block)
    by_size = dict(
        session.execute(
            select(FreeBlock.prefixlen, func.count())
            .where(FreeBlock.block_id == block.id)
            .group_by(FreeBlock.prefixlen)
        ).all()
    )
    free = sum(count << (network.max_prefixlen - plen) for plen, count in by_size.items())
    largest = min(by_size, default=None)
    largest_size = 0 if largest is None else 1 << (network.max_prefixlen - largest)
    return allocator.PrefixStats(
        total=network.num_addresses,
        allocated=network.num_addresses - free,
        free=free,
        largest_free_prefixlen=largest,
        free_blocks=sum(by_size.values()),
        fragmentation=0.0 if free == 0 else 1 - largest_size / free,
    )


def free_space(session: Session, block: IpBlock) -> list[Network]:
    """The free blocks of a pool or reservation, by address (what is left to hand out)."""
    return [
        ipaddress.ip_network(cidr)
        for cidr in session.scalars(
            select(FreeBlock.cidr).where(FreeBlock.block_id == block.id).order_by(FreeBlock.first)
        )
    ]


def children(session: Session, block: IpBlock) -> list[IpBlock]:
    return list(
        session.scalars(
            select(IpBlock).where(IpBlock.parent_id == block.id).order_by(IpBlock.first)
        )
    )


def list_prefixes(
    session: Session,
    *,
    family: int | None = None,
    kind: Kind | None = None,
    status: Status | None = None,
    metro: str | None = None,
    project_id: str | None = None,
    parent_id: str | None = None,
) -> list[IpBlock]:
    query = select(IpBlock)
    for column, value in (
        (IpBlock.family, family),
        (IpBlock.kind, None if kind is None else kind.value),
        (IpBlock.status, None if status is None else status.value),
        (IpBlock.metro, metro),
        (IpBlock.project_id, project_id),
        (IpBlock.parent_id, parent_id),
    ):
        if value is not None:
            query = query.where(column == value)
    return list(session.scalars(query.order_by(IpBlock.family, IpBlock.first, IpBlock.prefixlen)))


def prefix_usage_reader(db: Database) -> Callable[[int], tuple[list[PrefixUsage], int]]:
    """What `/metrics` reads at each scrape: the first `limit` pools and reservations by address,
    each counted from its free space, and how many there are in all."""
    holders = IpBlock.status.in_(HOLDS_CHILDREN)

    def read(limit: int) -> tuple[list[PrefixUsage], int]:
        with db.read() as session:
            total = session.scalar(select(func.count()).where(holders)) or 0
            blocks = session.scalars(
                select(IpBlock).where(holders).order_by(IpBlock.family, IpBlock.first).limit(limit)
            )
            usages = []
            for block in blocks:
                figures = stats(session, block)
                usages.append(
                    PrefixUsage(
                        block.cidr,
                        block.kind,
                        block.metro,
                        block.status,
                        figures.utilisation,
                        figures.free,
                    )
                )
            return usages, total

    return read


# Reservations, elastic IPs and brought prefixes.
#
# A reservation is a RESERVATION block of a project, carved from a provider pool of its kind,
# family and metro (or brought by the project: `byo`, a root of its own). Its addresses are
# assigned to the project's machines as ASSIGNMENT children, moved between them, and unassigned
# straight back into the reservation's free space: no quarantine inside a reservation, whose
# space only its own project (and a brought prefix's allow-list) can ever be given, so no other
# tenant can inherit traffic meant for it. Releasing the reservation is what returns space to
# the provider's pool, and that space is quarantined before anyone reserves it again.

TENANT_KINDS = frozenset({Kind.PUBLIC, Kind.PRIVATE})
"""What tenants reserve; global space is the provider's to hand out."""


def missing_reservation(ref: str) -> NotFound:
    return NotFound(
        f"no reservation {ref!r}: list them with `metalflow ipam reservations`", field="id"
    )


def missing_assignment(ref: str) -> NotFound:
    return NotFound(
        f"no assignment {ref!r}: list them with `metalflow ipam assignments`", field="id"
    )


def missing_machine(ref: str, reservation: IpBlock) -> NotFound:
    """The same answer for a machine that does not exist and one outside the reservation's
    projects, so that a tenant learns nothing of other projects' machines."""
    return NotFound(
        f"no machine {ref!r} in the projects of reservation {reservation.cidr}: assign it to a"
        " machine of its project (`metalflow machine list`)",
        field="machine",
    )


def missing_project(project_id: str) -> NotFound:
    return NotFound(
        f"no project {project_id!r}: list them with `metalflow project list`", field="project"
    )


def _by_id_or_cidr(session: Session, ref: str, status: Status) -> IpBlock | None:
    found = session.get(IpBlock, ref)
    if found is None and "/" in ref:
        found = session.scalar(
            select(IpBlock).where(IpBlock.cidr == ref, IpBlock.status == status.value).limit(1)
        )
    return found if found is not None and found.status == status.value else None


def get_reservation(session: Session, ref: str) -> IpBlock:
    """A reservation by id or CIDR."""
    found = _by_id_or_cidr(session, ref, Status.RESERVATION)
    if found is None:
        raise missing_reservation(ref)
    return found


def get_assignment(session: Session, ref: str) -> IpBlock:
    """An assignment by id or CIDR."""
    found = _by_id_or_cidr(session, ref, Status.ASSIGNMENT)
    if found is None:
        raise missing_assignment(ref)
    return found


def holder_of(session: Session, block: IpBlock) -> IpBlock | None:
    return None if block.parent_id is None else session.get(IpBlock, block.parent_id)


def find_machine(session: Session, ref: str) -> Machine | None:
    """A machine by id or name."""
    return session.get(Machine, ref) or session.scalar(select(Machine).where(Machine.name == ref))


def machine_for(session: Session, reservation: IpBlock, ref: str) -> Machine:
    """The machine `ref` if it may hold addresses of `reservation`: one of its projects', in
    its metro when both have one."""
    machine = find_machine(session, ref)
    if machine is None or machine.project_id not in projects_of(reservation):
        raise missing_machine(ref, reservation)
    if reservation.metro and machine.metro and machine.metro != reservation.metro:
        raise Invalid(
            f"machine {machine.name} stands in metro {machine.metro} but reservation"
            f" {reservation.cidr} is in {reservation.metro}: assign a machine of"
            f" {reservation.metro}, or reserve in {machine.metro}",
            field="machine",
        )
    return machine


@contextmanager
def _fields_renamed(names: dict[str, str]) -> Iterator[None]:
    """The allocation core's errors under the names of this request's fields."""
    try:
        yield
    except MetalflowError as exc:
        if exc.field not in names:
            raise
        raise type(exc)(exc.message, field=names[exc.field]) from exc


def _project(session: Session, project_id: str) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise missing_project(project_id)
    return project


def reserve(
    session: Session,
    project_id: str,
    kind: Kind,
    family: int,
    prefixlen: int,
    metro: str | None,
    *,
    by_tenant: bool = True,
    description: str = "",
) -> IpBlock:
    """A reservation for the project from the provider's pools of that kind, family and metro
    (none: those without a metro), the smallest pools first; a tenant asks only for public or
    private space of the sizes `layout.TENANT_SIZES` offers."""
    _project(session, project_id)
    if by_tenant and kind not in TENANT_KINDS:
        raise Invalid(
            f"{kind.value} space is the provider's to hand out: reserve public or private",
            field="kind",
        )
    with _fields_renamed({"address_family": "family", "prefixlen": "size"}), _as_metalflow_errors():
        if by_tenant:
            validate_tenant_size(family, prefixlen)
        elif family not in (4, 6):
            raise allocator.InvalidSize(f"family {family} is unknown: use 4 or 6", field="family")
    max_prefixlen = 32 if family == 4 else 128
    if not 0 <= prefixlen <= max_prefixlen:
        raise Invalid(f"/{prefixlen} is no IPv{family} size: use 0..{max_prefixlen}", field="size")
    pools = _reservable_pools(session, kind, family, metro)
    where = f"metro {metro}" if metro else "no metro"
    if not pools:
        metros = _metros_with_pools(session, kind, family)
        offered = ", ".join(metros) if metros else "none: ask the provider to add a pool"
        raise Invalid(
            f"no {kind.value} IPv{family} pool with {where}: use a metro that has one ({offered})",
            field="metro",
        )
    full: list[str] = []
    for pool in pools:
        if pool.prefixlen > prefixlen:
            full.append(f"{pool.cidr} is smaller than a /{prefixlen}")
            continue
        figures = stats(session, pool)
        largest = figures.largest_free_prefixlen
        if largest is None or largest > prefixlen:
            full.append(f"{pool.cidr} {figures.utilisation:.1%} used")
            continue
        try:
            block = allocate(
                session,
                pool.id,
                prefixlen=prefixlen,
                status=Status.RESERVATION,
                project_id=project_id,
            )
        except Conflict as exc:
            full.append(f"{pool.cidr}: {exc.message}")
            continue
        block.description = description
        session.flush()
        return block
    raise Conflict(
        f"no free /{prefixlen} in the {kind.value} IPv{family} pools with {where}"
        f" ({'; '.join(full)}): reserve a smaller block, release one, or ask the provider for"
        " more space",
        field="size",
    )


def _provider_pools(kind: Kind, family: int) -> tuple[ColumnElement[bool], ...]:
    """The provider's own pools of a kind and family: not carved for a project, not the
    provisioning network's."""
    return (
        IpBlock.status == Status.POOL.value,
        IpBlock.project_id.is_(None),
        IpBlock.provisioning.is_(False),
        IpBlock.kind == kind.value,
        IpBlock.family == family,
    )


def _reservable_pools(
    session: Session, kind: Kind, family: int, metro: str | None
) -> list[IpBlock]:
    in_metro = IpBlock.metro.is_(None) if metro is None else IpBlock.metro == metro
    query = select(IpBlock).where(*_provider_pools(kind, family), in_metro)
    return list(session.scalars(query.order_by(IpBlock.prefixlen.desc(), IpBlock.first)))


def _metros_with_pools(session: Session, kind: Kind, family: int) -> list[str]:
    query = select(IpBlock.metro).where(*_provider_pools(kind, family)).distinct()
    return sorted(metro for metro in session.scalars(query) if metro is not None)


def import_byo(
    session: Session,
    cidr: str,
    project_id: str,
    allowed_projects: Sequence[str] = (),
    *,
    kind: Kind = Kind.PUBLIC,
    metro: str | None = None,
    description: str = "",
) -> IpBlock:
    """A tenant's own prefix as its reservation (`create_prefix` with `byo`, which checks it)."""
    spec = PrefixSpec(
        cidr=cidr,
        kind=kind,
        metro=metro,
        project_id=project_id,
        description=description,
        byo=True,
        allowed_projects=allowed_projects,
    )
    return create_prefix(session, spec)


def _checked_scope(session: Session, spec: PrefixSpec, network: Network) -> list[str]:
    """The allow-list of a brought prefix, checked: it is a project's, outside every other
    block (it is not the provider's space), and shared only within the owner's organization;
    whichever way it arrives (the API's /byo or /prefixes, `apply -f`), the same checks run.
    Concurrent imports of overlapping prefixes both pass these reads; on PostgreSQL the
    exclusion constraint over top-level blocks refuses the second at commit. Any prefix's
    project must exist."""
    owner = _project(session, spec.project_id) if spec.project_id is not None else None
    if not spec.byo:
        if spec.allowed_projects:
            raise Invalid(
                "allowed_projects is for a brought prefix: set byo, or leave allowed_projects out",
                field="allowed_projects",
            )
        return []
    if owner is None:
        raise Invalid("a brought prefix belongs to a project: give project", field="project")
    if spec.provisioning:
        raise Invalid(
            "a brought prefix is a tenant's, not the provisioning network: leave provisioning out",
            field="provisioning",
        )
    allowed = sorted(set(spec.allowed_projects) - {owner.id})
    for other_id in allowed:
        other = session.get(Project, other_id)
        if other is None:
            raise Invalid(
                f"no project {other_id!r}: allow only existing projects", field="allowed_projects"
            )
        if other.organization_id != owner.organization_id:
            raise Invalid(
                f"project {other_id} is in another organization than {owner.id}: allow"
                " only projects of the owner's organization",
                field="allowed_projects",
            )
    overlapping = _containing_block(session, network) or next(
        iter(_siblings_overlapping(session, None, network)), None
    )
    if overlapping is not None:
        raise _inside_held(network, overlapping)
    return allowed


def _inside_held(network: Network, held: IpBlock) -> Conflict:
    return Conflict(
        f"{network} overlaps {held.cidr}, which metalflow holds already: bring a prefix outside"
        " every pool and reservation",
        field="cidr",
    )


def _containing_block(session: Session, network: Network) -> IpBlock | None:
    first, last = _span(network)
    return session.scalar(
        select(IpBlock)
        .where(
            IpBlock.family == network.version,
            IpBlock.first <= first,
            IpBlock.last >= last,
        )
        .limit(1)
    )


def assign(
    session: Session,
    reservation_id: str,
    machine_ref: str,
    *,
    address: str | None = None,
    size: int | None = None,
) -> IpBlock:
    """An address (`address`: one address, or a sub-block in CIDR) or the first free block of
    /`size` of the reservation, to a machine of its projects."""
    reservation = get_reservation(session, reservation_id)
    machine = machine_for(session, reservation, machine_ref)
    network = network_of(reservation)
    if (address is None) == (size is None):
        raise Invalid(
            "give address (an address or sub-block of the reservation) or size (a prefix"
            " length), not both",
            field="address",
        )
    at: str | None = None
    if address is not None:
        with _fields_renamed({"cidr": "address"}), _as_metalflow_errors():
            wanted = allocator.parse_block(address, field="cidr")
        if wanted.version != network.version or not allocator.inside(wanted, network):
            raise Invalid(
                f"{address} is outside reservation {reservation.cidr}: use an address inside it",
                field="address",
            )
        at = str(wanted)
    elif size is not None and not network.prefixlen <= size <= network.max_prefixlen:
        raise Invalid(
            f"size /{size} does not fit in reservation {reservation.cidr}: use"
            f" /{network.prefixlen}../{network.max_prefixlen}",
            field="size",
        )
    with _fields_renamed({"cidr": "address", "prefixlen": "size"}):
        block = allocate(
            session,
            reservation.id,
            prefixlen=size,
            at=at,
            project_id=machine.project_id,
            machine_id=machine.id,
        )
    _record(session, "ipam.assigned", block, machine, reservation)
    return block


def _elastic(session: Session, assignment: IpBlock) -> IpBlock:
    """The reservation an assignment was given from; a pool's per-host address is not elastic."""
    reservation = holder_of(session, assignment)
    if reservation is None or reservation.status != Status.RESERVATION.value:
        raise Invalid(
            f"{assignment.cidr} is a per-host address from a pool: it follows its machine and is"
            " not moved or unassigned by hand",
            field="id",
        )
    return reservation


def move(session: Session, assignment_id: str, machine_ref: str) -> IpBlock:
    """Give an assignment to another machine of its reservation's projects (under the
    reservation's lock, so that it is not unassigned meanwhile)."""
    assignment = get_assignment(session, assignment_id)
    reservation = lock_block(session, _elastic(session, assignment).id)
    assignment = get_assignment(session, assignment_id)
    machine = machine_for(session, reservation, machine_ref)
    if assignment.machine_id == machine.id:
        return assignment
    before = None if assignment.machine_id is None else session.get(Machine, assignment.machine_id)
    assignment.machine_id = machine.id
    assignment.project_id = machine.project_id
    session.flush()
    if before is not None:
        _record(session, "ipam.unassigned", assignment, before, reservation)
    _record(session, "ipam.assigned", assignment, machine, reservation)
    return assignment


def unassign(session: Session, assignment_id: str) -> None:
    """Return an assignment to its reservation's free space at once (no quarantine: see above)."""
    assignment = get_assignment(session, assignment_id)
    reservation = lock_block(session, _elastic(session, assignment).id)
    assignment = get_assignment(session, assignment_id)
    machine = None if assignment.machine_id is None else session.get(Machine, assignment.machine_id)
    if machine is not None:
        _record(session, "ipam.unassigned", assignment, machine, reservation)
    _free(session, reservation, assignment)


def unassign_machine(session: Session, machine_id: str) -> int:
    """Return a machine's elastic addresses to their reservations (a machine deleted, or taken
    out of its project); its per-host addresses from pools are not touched. How many went."""
    elastic = [
        block.id
        for block in session.scalars(
            select(IpBlock).where(
                IpBlock.machine_id == machine_id, IpBlock.status == Status.ASSIGNMENT.value
            )
        )
        if (holder := holder_of(session, block)) is not None
        and holder.status == Status.RESERVATION.value
    ]
    for block_id in elastic:
        unassign(session, block_id)
    return len(elastic)


def release_reservation(
    session: Session,
    reservation_id: str,
    *,
    quarantine: dt.timedelta,
    now: dt.datetime | None = None,
) -> IpBlock | None:
    """Give a reservation back: refused while any of it is assigned; into quarantine in its pool.
    A brought prefix is removed (it was never the provider's to hand out)."""
    reservation = get_reservation(session, reservation_id)
    if reservation.parent_id is not None:
        lock_block(session, reservation.parent_id)
    reservation = lock_block(session, reservation.id)
    assigned = session.scalar(select(func.count()).where(IpBlock.parent_id == reservation.id))
    if assigned:
        raise Conflict(
            f"{reservation.cidr} still has {assigned} assignment(s): unassign them first"
            " (`metalflow ipam assignments`, `metalflow ipam unassign ID`)",
            field="id",
        )
    if reservation.byo and reservation.parent_id is None:
        session.execute(delete(FreeBlock).where(FreeBlock.block_id == reservation.id))
        session.delete(reservation)
        session.flush()
        return None
    return release(session, reservation.id, quarantine=quarantine, now=now)


def list_reservations(
    session: Session, *, visible: frozenset[str] | None, project_id: str | None = None
) -> list[IpBlock]:
    """Reservations of the `visible` projects (None: all), a brought prefix's allowed ones too."""
    query = select(IpBlock).where(IpBlock.status == Status.RESERVATION.value)
    if visible is not None:
        query = query.where(IpBlock.project_id.in_(visible) | IpBlock.byo.is_(True))
    found = session.scalars(query.order_by(IpBlock.family, IpBlock.first))
    return [
        block
        for block in found
        if (visible is None or projects_of(block) & visible)
        and (project_id is None or project_id in projects_of(block))
    ]


def assignment_projects(session: Session, assignment: IpBlock) -> frozenset[str]:
    """Who sees an assignment: its machine's project, and the owner of its reservation."""
    holder = holder_of(session, assignment)
    owners = {assignment.project_id, None if holder is None else holder.project_id}
    return frozenset(project for project in owners if project is not None)


def list_assignments(
    session: Session,
    *,
    visible: frozenset[str] | None,
    machine_id: str | None = None,
    reservation_id: str | None = None,
) -> list[IpBlock]:
    query = select(IpBlock).where(IpBlock.status == Status.ASSIGNMENT.value)
    if machine_id is not None:
        query = query.where(IpBlock.machine_id == machine_id)
    if reservation_id is not None:
        query = query.where(IpBlock.parent_id == reservation_id)
    found = session.scalars(query.order_by(IpBlock.family, IpBlock.first))
    return [
        block for block in found if visible is None or assignment_projects(session, block) & visible
    ]


def _record(
    session: Session, kind: str, block: IpBlock, machine: Machine, reservation: IpBlock
) -> None:
    """The machine's addresses changed: the machine index refreshes it from this event."""
    events.record(
        session,
        kind,
        machine_id=machine.id,
        machine_name=machine.name,
        assignment=block.id,
        cidr=block.cidr,
        reservation=reservation.id,
    )
