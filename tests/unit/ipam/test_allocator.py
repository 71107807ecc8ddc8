"""The free-block allocator against brute force over small parents (a v4 /24 and a v6 /120)."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from metalflow.ipam.allocator import (
    Exhausted,
    FreeIndex,
    InvalidBlock,
    InvalidSize,
    Network,
    NotAllocated,
    OrderTerm,
    Overlap,
    Strategy,
    candidate_order,
    carve,
    choose,
    coalesce,
    network_at,
)

V4_PARENT = ipaddress.ip_network("192.0.2.0/24")
V6_PARENT = ipaddress.ip_network("2001:db8::/120")
parents = st.sampled_from([V4_PARENT, V6_PARENT])
strategies = st.sampled_from(list(Strategy))
size_offsets = st.integers(min_value=0, max_value=8)
"""A prefix length as its distance below the parent's (both parents have 8 host bits)."""


def overlaps(first: Network, second: Network) -> bool:
    return int(first.network_address) <= int(second.broadcast_address) and (
        int(second.network_address) <= int(first.broadcast_address)
    )


def aligned_blocks(parent: Network, prefixlen: int) -> list[Network]:
    return list(parent.subnets(new_prefix=prefixlen))


def lowest_free(parent: Network, allocated: list[Network], prefixlen: int) -> Network | None:
    """By brute force: the lowest aligned /prefixlen that overlaps no allocation."""
    return next(
        (
            block
            for block in aligned_blocks(parent, prefixlen)
            if not any(overlaps(block, taken) for taken in allocated)
        ),
        None,
    )


def assert_partition(index: FreeIndex) -> None:
    """Free and allocated blocks are aligned, inside the parent and tile it exactly."""
    blocks = sorted(
        index.free_blocks() + index.allocations(), key=lambda block: block.network_address
    )
    assert sum(block.num_addresses for block in blocks) == index.parent.num_addresses
    next_start = int(index.parent.network_address)
    for block in blocks:
        assert block.subnet_of(index.parent)  # type: ignore[arg-type]
        assert int(block.network_address) == next_start
        next_start = int(block.broadcast_address) + 1
    stats = index.stats()
    assert stats.allocated == sum(block.num_addresses for block in index.allocations())
    assert stats.free == sum(block.num_addresses for block in index.free_blocks())
    assert stats.free_blocks == len(index.free_blocks())


def apply_operations(
    index: FreeIndex, operations: list[tuple[int, Strategy, int | None]]
) -> list[Network]:
    """Allocate (offset, strategy) or, with a release pick, release one earlier allocation."""
    allocated: list[Network] = []
    for offset, strategy, release_pick in operations:
        if release_pick is not None and allocated:
            index.release(allocated.pop(release_pick % len(allocated)))
            continue
        with contextlib.suppress(Exhausted):
            allocated.append(index.allocate(index.parent.prefixlen + offset, strategy))
    return allocated


operations = st.lists(
    st.tuples(size_offsets, strategies, st.none() | st.integers(0, 1000)), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(parents, operations)
def test_allocations_are_aligned_disjoint_and_tile_the_parent_with_the_free_blocks(
    parent: Network, steps: list[tuple[int, Strategy, int | None]]
) -> None:
    index = FreeIndex(parent)
    allocated = apply_operations(index, steps)
    assert sorted(allocated, key=lambda block: block.network_address) == index.allocations()
    for block in allocated:
        assert int(block.network_address) % block.num_addresses == 0
    assert_partition(index)


@settings(max_examples=150, deadline=None)
@given(parents, operations, size_offsets)
def test_first_fit_returns_the_lowest_block_that_is_free(
    parent: Network, steps: list[tuple[int, Strategy, int | None]], offset: int
) -> None:
    index = FreeIndex(parent)
    apply_operations(index, steps)
    prefixlen = parent.prefixlen + offset
    expected = lowest_free(parent, index.allocations(), prefixlen)
    if expected is None:
        with pytest.raises(Exhausted):
            index.allocate(prefixlen, Strategy.FIRST_FIT)
    else:
        assert index.allocate(prefixlen, Strategy.FIRST_FIT) == expected


@settings(max_examples=150, deadline=None)
@given(parents, operations, size_offsets)
def test_best_fit_splits_the_smallest_free_block_that_fits(
    parent: Network, steps: list[tuple[int, Strategy, int | None]], offset: int
) -> None:
    index = FreeIndex(parent)
    apply_operations(index, steps)
    prefixlen = parent.prefixlen + offset
    fitting = [block for block in index.free_blocks() if block.prefixlen <= prefixlen]
    if not fitting:
        with pytest.raises(Exhausted):
            index.allocate(prefixlen, Strategy.BEST_FIT)
        return
    smallest = max(block.prefixlen for block in fitting)
    source = min(
        (block for block in fitting if block.prefixlen == smallest),
        key=lambda block: block.network_address,
    )
    allocated = index.allocate(prefixlen, Strategy.BEST_FIT)
    assert allocated.subnet_of(source)  # type: ignore[arg-type]
    assert allocated.network_address == source.network_address


@settings(max_examples=150, deadline=None)
@given(parents, operations, size_offsets, strategies)
def test_allocating_then_releasing_returns_the_index_to_the_same_state(
    parent: Network,
    steps: list[tuple[int, Strategy, int | None]],
    offset: int,
    strategy: Strategy,
) -> None:
    index = FreeIndex(parent)
    apply_operations(index, steps)
    before = (index.free_blocks(), index.allocations(), index.stats())
    try:
        block = index.allocate(parent.prefixlen + offset, strategy)
    except Exhausted:
        return
    index.release(block)
    assert (index.free_blocks(), index.allocations(), index.stats()) == before


@settings(max_examples=150, deadline=None)
@given(parents, operations)
def test_releasing_everything_leaves_the_parent_as_one_free_block(
    parent: Network, steps: list[tuple[int, Strategy, int | None]]
) -> None:
    index = FreeIndex(parent)
    allocated = apply_operations(index, steps)
    for block in allocated:
        index.release(block)
    assert index.free_blocks() == [parent]
    assert index.stats() == FreeIndex(parent).stats()


@settings(max_examples=100, deadline=None)
@given(parents, st.lists(size_offsets, min_size=1, max_size=20), strategies)
def test_a_full_pool_answers_exhausted(
    parent: Network, offsets: list[int], strategy: Strategy
) -> None:
    index = FreeIndex(parent)
    for offset in offsets:
        try:
            index.allocate(parent.prefixlen + offset, strategy)
        except Exhausted:
            break
    while index.stats().free:
        index.allocate(parent.max_prefixlen, strategy)
    with pytest.raises(Exhausted) as raised:
        index.allocate(parent.max_prefixlen, strategy)
    assert raised.value.utilisation == 1.0
    assert raised.value.parent == parent


@settings(max_examples=200, deadline=None)
@given(parents, st.integers(0, 8), st.integers(0, 8), st.integers(0, 255))
def test_carve_then_coalesce_gives_back_the_free_block(
    parent: Network, free_offset: int, extra: int, pick: int
) -> None:
    free_block = network_at(parent, int(parent.network_address), parent.prefixlen + free_offset)
    prefixlen = min(free_block.prefixlen + extra, parent.max_prefixlen)
    candidates = aligned_blocks(free_block, prefixlen)
    split = carve(free_block, prefixlen, at=candidates[pick % len(candidates)])
    assert len(split.remainder) == prefixlen - free_block.prefixlen
    merge = coalesce(split.allocated, free_block, lambda block: block in split.remainder)
    assert merge.merged == free_block
    assert sorted(merge.absorbed) == sorted(split.remainder)


def test_carve_without_at_takes_the_lowest_block_and_leaves_the_buddies_largest_first() -> None:
    split = carve(ipaddress.ip_network("10.0.0.0/24"), 26)
    assert split.allocated == ipaddress.ip_network("10.0.0.0/26")
    assert split.remainder == (
        ipaddress.ip_network("10.0.0.128/25"),
        ipaddress.ip_network("10.0.0.64/26"),
    )


def test_coalesce_stops_at_the_parent_and_at_a_buddy_in_use() -> None:
    parent = ipaddress.ip_network("10.0.0.0/30")
    everything_free = coalesce(ipaddress.ip_network("10.0.0.1/32"), parent, lambda _: True)
    assert everything_free.merged == parent
    nothing_free = coalesce(ipaddress.ip_network("10.0.0.1/32"), parent, lambda _: False)
    assert nothing_free == type(nothing_free)(ipaddress.ip_network("10.0.0.1/32"), ())


def test_candidate_order_is_the_query_that_choose_answers() -> None:
    assert candidate_order(Strategy.FIRST_FIT) == (OrderTerm("address", descending=False),)
    assert candidate_order(Strategy.BEST_FIT) == (
        OrderTerm("prefixlen", descending=True),
        OrderTerm("address", descending=False),
    )
    free = [ipaddress.ip_network(text) for text in ("10.0.0.0/26", "10.0.0.64/28", "10.0.1.0/24")]
    assert choose(free, 28, Strategy.FIRST_FIT) == free[0]
    assert choose(free, 28, Strategy.BEST_FIT) == free[1]
    assert choose(free, 25, Strategy.BEST_FIT) == free[2]
    assert choose(free, 23, Strategy.FIRST_FIT) is None


def test_stats_define_fragmentation_from_the_largest_free_block() -> None:
    index = FreeIndex(ipaddress.ip_network("10.0.0.0/24"))
    assert index.stats().fragmentation == 0.0
    index.allocate_block("10.0.0.0/26")
    index.allocate_block("10.0.0.128/26")
    stats = index.stats()
    assert (stats.total, stats.allocated, stats.free) == (256, 128, 128)
    assert (stats.largest_free_prefixlen, stats.free_blocks) == (26, 2)
    assert stats.fragmentation == 0.5
    assert stats.utilisation == 0.5


class AllocatorAgainstASetOfBlocks(RuleBasedStateMachine):
    """FreeIndex against a naive model: the set of allocated blocks, checked by brute force."""

    allocated = Bundle("allocated")
    parent: Network = V4_PARENT

    def __init__(self) -> None:
        super().__init__()
        self.index = FreeIndex(self.parent)
        self.model: set[Network] = set()

    @rule(target=allocated, offset=size_offsets, strategy=strategies)
    def allocate(self, offset: int, strategy: Strategy) -> Network | None:
        prefixlen = self.parent.prefixlen + offset
        lowest = lowest_free(self.parent, list(self.model), prefixlen)
        if lowest is None:
            with pytest.raises(Exhausted):
                self.index.allocate(prefixlen, strategy)
            return None
        block = self.index.allocate(prefixlen, strategy)
        if strategy is Strategy.FIRST_FIT:
            assert block == lowest
        assert not any(overlaps(block, taken) for taken in self.model)
        self.model.add(block)
        return block

    @rule(target=allocated, offset=size_offsets, pick=st.integers(0, 255))
    def allocate_block(self, offset: int, pick: int) -> Network | None:
        candidates = aligned_blocks(self.parent, self.parent.prefixlen + offset)
        block = candidates[pick % len(candidates)]
        taken = [other for other in self.model if overlaps(block, other)]
        if taken:
            with pytest.raises(Overlap) as raised:
                self.index.allocate_block(block)
            assert raised.value.allocated in taken
            return None
        assert self.index.allocate_block(block) == block
        self.model.add(block)
        return block

    @rule(block=consumes(allocated))
    def release(self, block: Network | None) -> None:
        if block is None:
            return
        self.index.release(block)
        self.model.remove(block)
        with pytest.raises(NotAllocated):
            self.index.release(block)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.index.allocations() == sorted(self.model)
        assert_partition(self.index)


class V6AllocatorAgainstASetOfBlocks(AllocatorAgainstASetOfBlocks):
    parent = V6_PARENT


stateful_settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestV4AllocatorAgainstASetOfBlocks = AllocatorAgainstASetOfBlocks.TestCase
TestV4AllocatorAgainstASetOfBlocks.settings = stateful_settings
TestV6AllocatorAgainstASetOfBlocks = V6AllocatorAgainstASetOfBlocks.TestCase
TestV6AllocatorAgainstASetOfBlocks.settings = stateful_settings


def test_exhausted_names_the_size_the_parent_and_the_utilisation() -> None:
    index = FreeIndex(ipaddress.ip_network("192.0.2.0/30"))
    index.allocate_block("192.0.2.0/31")
    with pytest.raises(Exhausted) as raised:
        index.allocate(30)
    assert str(raised.value) == (
        "no free /30 in 192.0.2.0/30 (50.0% used, the largest free block is /31): "
        "release a block, ask for a smaller prefixlen or add a prefix"
    )
    assert (raised.value.field, raised.value.prefixlen, raised.value.utilisation) == (
        "prefixlen",
        30,
        0.5,
    )


def test_a_prefixlen_outside_the_parent_names_the_range() -> None:
    with pytest.raises(InvalidSize, match=r"^prefixlen 23 does not fit in 192\.0\.2\.0/24: "):
        FreeIndex(V4_PARENT).allocate(23)
    with pytest.raises(InvalidSize) as raised:
        FreeIndex(V6_PARENT).allocate(129)
    assert str(raised.value) == "prefixlen 129 does not fit in 2001:db8::/120: use 120..128"
    assert raised.value.field == "prefixlen"


def test_host_bits_set_says_which_block_was_meant() -> None:
    with pytest.raises(InvalidBlock) as raised:
        FreeIndex(V4_PARENT).allocate_block("192.0.2.5/29")
    assert str(raised.value) == "192.0.2.5/29 has host bits set: use 192.0.2.0/29"
    assert raised.value.field == "network"


def test_text_that_is_no_block_says_what_one_looks_like() -> None:
    with pytest.raises(InvalidBlock) as raised:
        FreeIndex(V4_PARENT).release("192.0.2/29x")
    assert str(raised.value) == (
        "network '192.0.2/29x' is no CIDR block: use an address/prefixlen such as 192.0.2.0/29"
    )


def test_a_block_of_the_other_family_is_refused() -> None:
    with pytest.raises(InvalidBlock) as raised:
        FreeIndex(V4_PARENT).allocate_block("2001:db8::/126")
    assert str(raised.value) == (
        "2001:db8::/126 is IPv6 but the parent 192.0.2.0/24 is IPv4: use an IPv4 block"
    )


def test_a_block_outside_the_parent_is_refused() -> None:
    with pytest.raises(InvalidBlock) as raised:
        FreeIndex(V6_PARENT).allocate_block("2001:db8::100/126")
    assert str(raised.value) == (
        "2001:db8::100/126 is outside the parent 2001:db8::/120: use a block inside it"
    )
    with pytest.raises(InvalidBlock, match="is outside the parent"):
        FreeIndex(V4_PARENT).allocate_block("192.0.0.0/16")


@pytest.mark.parametrize(
    ("taken", "wanted"),
    [("192.0.2.0/26", "192.0.2.16/28"), ("192.0.2.16/28", "192.0.2.0/26")],
    ids=["inside-an-allocation", "around-an-allocation"],
)
def test_an_overlap_names_the_allocation_in_the_way(taken: str, wanted: str) -> None:
    index = FreeIndex(V4_PARENT)
    index.allocate_block(taken)
    with pytest.raises(Overlap) as raised:
        index.allocate_block(wanted)
    assert str(raised.value) == (
        f"{wanted} overlaps {taken}, which is allocated: "
        "choose a block that is free or release that one first"
    )
    assert raised.value.allocated == ipaddress.ip_network(taken)


def test_releasing_what_was_not_allocated_is_refused() -> None:
    index = FreeIndex(V4_PARENT)
    index.allocate_block("192.0.2.0/28")
    with pytest.raises(NotAllocated) as raised:
        index.release("192.0.2.0/29")
    assert str(raised.value) == (
        "192.0.2.0/29 is not allocated in 192.0.2.0/24: release a block that allocate returned"
    )
    with pytest.raises(NotAllocated):
        index.release("192.0.2.64/26")


def test_carve_refuses_a_wanted_block_of_another_size_family_or_place() -> None:
    free_block = ipaddress.ip_network("10.0.0.0/24")
    with pytest.raises(InvalidSize, match=r"^prefixlen 23 does not fit in 10\.0\.0\.0/24"):
        carve(free_block, 23)
    with pytest.raises(InvalidBlock, match=r"^10\.0\.0\.0/28 is no /29: use a /29$"):
        carve(free_block, 29, at=ipaddress.ip_network("10.0.0.0/28"))
    with pytest.raises(InvalidBlock, match=r"^2001:db8::/29 is IPv6 but the parent 10\.0\.0\.0/24"):
        carve(free_block, 29, at=ipaddress.ip_network("2001:db8::/29"))
    with pytest.raises(InvalidBlock, match=r"^10\.0\.1\.0/29 is outside 10\.0\.0\.0/24"):
        carve(free_block, 29, at=ipaddress.ip_network("10.0.1.0/29"))
