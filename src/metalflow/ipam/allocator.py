"""The IPAM allocation core: a parent prefix's free space as a set of disjoint aligned blocks.

The free space of a parent is kept as maximal free CIDR blocks (buddy style, as in a buddy
memory allocator): allocating picks one free block and splits it into the wanted block and the
buddies left free on the way down (at most wanted_len - free_len of them); releasing merges the
block with its buddy while the buddy is free, never beyond the parent. So an operation touches
O(prefix length) blocks whatever the utilisation, and the database layer, which keeps one row
per free block, reads one candidate row (ordered as `candidate_order` says) and writes the few
rows that `carve` or `coalesce` name. Every free block is always maximal: no two free buddies
exist below the parent, which is what makes the lowest free block that fits the lowest possible
allocation.

Looked at: `ipaddress` itself (`address_exclude`, `collapse_addresses`) does the splitting and
merging but on whole lists, O(allocations) per call; netaddr's `IPSet` and py-radix are not
dependencies, hold allocations rather than free blocks, and have no first-/best-fit choice.
Neither gives the per-row answers the database layer needs, so the split and merge are written
here (a few lines each) on top of `ipaddress` networks.

Errors are `IpamError`s (ValueErrors) whose message names the field and the fix; the service
maps them to HTTP statuses (`InvalidBlock`/`InvalidSize` 422, `Overlap`/`Exhausted` 409,
`NotAllocated` 404).
"""

from __future__ import annotations

import bisect
import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpamError(ValueError):
    """An allocation request that cannot be met; `field` is the request field at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidBlock(IpamError):
    """A given block that is no CIDR block of the parent: bad text, host bits, family, outside."""


class InvalidSize(IpamError):
    """A prefix length that the parent, the family or the offer does not allow."""


class Overlap(IpamError):
    """A given block that overlaps a block already allocated."""

    def __init__(self, message: str, *, field: str, allocated: Network) -> None:
        super().__init__(message, field=field)
        self.allocated = allocated


class NotAllocated(IpamError):
    """A release of a block that is not an allocation of the parent."""


class Exhausted(IpamError):
    """No free block of the parent holds the wanted size."""

    def __init__(
        self, parent: Network, prefixlen: int, utilisation: float, largest: int | None
    ) -> None:
        largest_text = (
            "none is free" if largest is None else f"the largest free block is /{largest}"
        )
        super().__init__(
            f"no free /{prefixlen} in {parent} ({utilisation:.1%} used, {largest_text}): "
            "release a block, ask for a smaller prefixlen or add a prefix",
            field="prefixlen",
        )
        self.parent = parent
        self.prefixlen = prefixlen
        self.utilisation = utilisation


class Strategy(enum.Enum):
    FIRST_FIT = "first-fit"
    """The lowest free address that fits."""
    BEST_FIT = "best-fit"
    """The smallest free block that fits (then the lowest address): keeps big blocks whole."""


@dataclass(frozen=True, slots=True)
class OrderTerm:
    """One ORDER BY term for the database's candidate query over free blocks."""

    column: str
    """"prefixlen" or "address" (the first address as an unsigned integer; for IPv6 store it as
    16 big-endian bytes so that byte order is numeric order)."""
    descending: bool


def candidate_order(strategy: Strategy) -> tuple[OrderTerm, ...]:
    """How to order the free blocks with prefixlen <= wanted so that the first row is the pick."""
    if strategy is Strategy.FIRST_FIT:
        return (OrderTerm("address", descending=False),)
    return (OrderTerm("prefixlen", descending=True), OrderTerm("address", descending=False))


def candidate_key(strategy: Strategy) -> Callable[[Network], tuple[int, int]]:
    """The sort key of `candidate_order` for networks in memory: the smallest key is the pick."""
    if strategy is Strategy.FIRST_FIT:
        return lambda block: (int(block.network_address), 0)
    return lambda block: (-block.prefixlen, int(block.network_address))


def choose(free_blocks: Iterable[Network], prefixlen: int, strategy: Strategy) -> Network | None:
    """The free block that an allocation of /prefixlen splits, or None when none fits."""
    fitting = [block for block in free_blocks if block.prefixlen <= prefixlen]
    return min(fitting, key=candidate_key(strategy), default=None)


def network_at(like: Network, start: int, prefixlen: int) -> Network:
    """The block of `like`'s family that starts at the integer address `start`."""
    if isinstance(like, ipaddress.IPv4Network):
        return ipaddress.IPv4Network((start, prefixlen))
    return ipaddress.IPv6Network((start, prefixlen))


def inside(inner: Network, outer: Network) -> bool:
    """Whether `inner` is `outer` or one of its subnets (False across families)."""
    return (
        inner.version == outer.version
        and inner.prefixlen >= outer.prefixlen
        and int(outer.network_address) <= int(inner.network_address) <= int(outer.broadcast_address)
    )


def buddy(block: Network) -> Network:
    """The other half of `block`'s supernet."""
    size_bit = 1 << (block.max_prefixlen - block.prefixlen)
    return network_at(block, int(block.network_address) ^ size_bit, block.prefixlen)


@dataclass(frozen=True, slots=True)
class Carve:
    allocated: Network
    remainder: tuple[Network, ...]
    """The buddies split off on the way down, largest first; they stay free."""


def carve(free_block: Network, prefixlen: int, at: Network | None = None) -> Carve:
    """Split `free_block` into the wanted /prefixlen (its lowest, or `at`) and the free rest."""
    if not free_block.prefixlen <= prefixlen <= free_block.max_prefixlen:
        raise InvalidSize(
            f"prefixlen {prefixlen} does not fit in {free_block}: "
            f"use {free_block.prefixlen}..{free_block.max_prefixlen}",
            field="prefixlen",
        )
    if at is None:
        at = network_at(free_block, int(free_block.network_address), prefixlen)
    elif at.version != free_block.version:
        raise family_mismatch(at, free_block)
    elif at.prefixlen != prefixlen:
        raise InvalidBlock(f"{at} is no /{prefixlen}: use a /{prefixlen}", field="network")
    elif not inside(at, free_block):
        raise InvalidBlock(f"{at} is outside {free_block}: use a block inside it", field="network")
    remainder = []
    current = free_block
    while current.prefixlen < prefixlen:
        half = network_at(free_block, int(current.network_address), current.prefixlen + 1)
        lower_holds_at = inside(at, half)
        current, free_half = (half, buddy(half)) if lower_holds_at else (buddy(half), half)
        remainder.append(free_half)
    return Carve(allocated=at, remainder=tuple(remainder))


@dataclass(frozen=True, slots=True)
class Coalesce:
    merged: Network
    """The free block that the released block becomes."""
    absorbed: tuple[Network, ...]
    """The free buddies merged into it (to delete as free blocks), smallest first."""


def coalesce(released: Network, parent: Network, is_free: Callable[[Network], bool]) -> Coalesce:
    """Merge a released block with its buddy while the buddy is free, up to the parent."""
    absorbed = []
    current = released
    while current.prefixlen > parent.prefixlen:
        other = buddy(current)
        if not is_free(other):
            break
        absorbed.append(other)
        current = current.supernet()
    return Coalesce(merged=current, absorbed=tuple(absorbed))


def parse_block(text: str, *, field: str = "network") -> Network:
    """A CIDR block from user text; host bits set is an error that says which block was meant."""
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        meant = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidBlock(
            f"{field} {text!r} is no CIDR block: use an address/prefixlen such as 192.0.2.0/29",
            field=field,
        ) from None
    raise InvalidBlock(f"{text} has host bits set: use {meant}", field=field)


def family_mismatch(block: Network, parent: Network) -> InvalidBlock:
    return InvalidBlock(
        f"{block} is IPv{block.version} but the parent {parent} is IPv{parent.version}: "
        f"use an IPv{parent.version} block",
        field="network",
    )


@dataclass(frozen=True, slots=True)
class PrefixStats:
    """Address counts of one parent.

    fragmentation is 1 - largest_free / free: 0 when the free space is one block (or nothing is
    free), approaching 1 as the free space is spread over many small blocks.
    """

    total: int
    allocated: int
    free: int
    largest_free_prefixlen: int | None
    free_blocks: int
    fragmentation: float

    @property
    def utilisation(self) -> float:
        return self.allocated / self.total


class FreeIndex:
    """An in-memory free-block index of one parent, built on `choose`, `carve` and `coalesce`.

    Free blocks sit in one sorted list of start addresses per prefix length, so a pick looks at
    the head of at most (max_prefixlen - parent prefixlen + 1) lists and membership is a bisect;
    allocations sit in one sorted list of starts, to find an overlapping one by bisect.
    """

    def __init__(self, parent: Network) -> None:
        self.parent = parent
        self._free: list[list[int]] = [[] for _ in range(parent.max_prefixlen + 1)]
        self._free[parent.prefixlen].append(int(parent.network_address))
        self._allocated_starts: list[int] = []
        self._allocated: dict[int, Network] = {}
        self._allocated_size = 0
        self._free_count = 1

    def allocate(self, prefixlen: int, strategy: Strategy = Strategy.FIRST_FIT) -> Network:
        """A free aligned /prefixlen of the parent; raises Exhausted when none is free."""
        self._check_size(prefixlen)
        chosen = self._choose(prefixlen, strategy)
        if chosen is None:
            stats = self.stats()
            raise Exhausted(self.parent, prefixlen, stats.utilisation, stats.largest_free_prefixlen)
        return self._take(chosen, carve(chosen, prefixlen))

    def allocate_block(self, block: Network | str) -> Network:
        """Allocate the given block, which must lie in the parent and overlap no allocation."""
        wanted = self._check_block(block)
        containing = self._free_block_containing(wanted)
        if containing is None:
            allocated = self._overlapping_allocation(wanted)
            raise Overlap(
                f"{wanted} overlaps {allocated}, which is allocated: "
                "choose a block that is free or release that one first",
                field="network",
                allocated=allocated,
            )
        return self._take(containing, carve(containing, wanted.prefixlen, at=wanted))

    def release(self, block: Network | str) -> Network:
        """Return an allocated block to the free space; returns the free block it merged into."""
        released = self._check_block(block)
        start = int(released.network_address)
        if self._allocated.get(start) != released:
            raise NotAllocated(
                f"{released} is not allocated in {self.parent}: "
                "release a block that allocate returned",
                field="network",
            )
        del self._allocated[start]
        self._allocated_starts.pop(bisect.bisect_left(self._allocated_starts, start))
        self._allocated_size -= released.num_addresses
        merge = coalesce(released, self.parent, self._is_free)
        for absorbed in merge.absorbed:
            self._remove_free(absorbed)
        self._add_free(merge.merged)
        return merge.merged

    def stats(self) -> PrefixStats:
        total = self.parent.num_addresses
        free = total - self._allocated_size
        largest = next((plen for plen, starts in enumerate(self._free) if starts), None)
        largest_size = 0 if largest is None else 1 << (self.parent.max_prefixlen - largest)
        return PrefixStats(
            total=total,
            allocated=self._allocated_size,
            free=free,
            largest_free_prefixlen=largest,
            free_blocks=self._free_count,
            fragmentation=0.0 if free == 0 else 1 - largest_size / free,
        )

    def free_blocks(self) -> list[Network]:
        """Every free block, by address."""
        blocks = [
            network_at(self.parent, start, plen)
            for plen, starts in enumerate(self._free)
            for start in starts
        ]
        return sorted(blocks, key=lambda block: int(block.network_address))

    def allocations(self) -> list[Network]:
        """Every allocated block, by address."""
        return [self._allocated[start] for start in self._allocated_starts]

    def _choose(self, prefixlen: int, strategy: Strategy) -> Network | None:
        heads = (
            network_at(self.parent, starts[0], plen)
            for plen, starts in enumerate(self._free[: prefixlen + 1])
            if starts
        )
        return choose(heads, prefixlen, strategy)

    def _take(self, source: Network, split: Carve) -> Network:
        self._remove_free(source)
        for block in split.remainder:
            self._add_free(block)
        start = int(split.allocated.network_address)
        bisect.insort(self._allocated_starts, start)
        self._allocated[start] = split.allocated
        self._allocated_size += split.allocated.num_addresses
        return split.allocated

    def _free_block_containing(self, block: Network) -> Network | None:
        start = int(block.network_address)
        for plen in range(self.parent.prefixlen, block.prefixlen + 1):
            host_bits = (1 << (block.max_prefixlen - plen)) - 1
            candidate = network_at(block, start & ~host_bits, plen)
            if self._is_free(candidate):
                return candidate
        return None

    def _overlapping_allocation(self, block: Network) -> Network:
        """The allocation that overlaps `block`; free and allocated blocks partition the parent,
        and free blocks are maximal, so the last allocation starting before `block` ends overlaps
        it whenever no free block contains `block`."""
        index = bisect.bisect_right(self._allocated_starts, int(block.broadcast_address))
        return self._allocated[self._allocated_starts[index - 1]]

    def _is_free(self, block: Network) -> bool:
        starts = self._free[block.prefixlen]
        index = bisect.bisect_left(starts, int(block.network_address))
        return index < len(starts) and starts[index] == int(block.network_address)

    def _add_free(self, block: Network) -> None:
        bisect.insort(self._free[block.prefixlen], int(block.network_address))
        self._free_count += 1

    def _remove_free(self, block: Network) -> None:
        starts = self._free[block.prefixlen]
        starts.pop(bisect.bisect_left(starts, int(block.network_address)))
        self._free_count -= 1

    def _check_size(self, prefixlen: int) -> None:
        if not self.parent.prefixlen <= prefixlen <= self.parent.max_prefixlen:
            raise InvalidSize(
                f"prefixlen {prefixlen} does not fit in {self.parent}: "
                f"use {self.parent.prefixlen}..{self.parent.max_prefixlen}",
                field="prefixlen",
            )

    def _check_block(self, block: Network | str) -> Network:
        network = parse_block(block) if isinstance(block, str) else block
        if network.version != self.parent.version:
            raise family_mismatch(network, self.parent)
        if not inside(network, self.parent):
            raise InvalidBlock(
                f"{network} is outside the parent {self.parent}: use a block inside it",
                field="network",
            )
        return network
