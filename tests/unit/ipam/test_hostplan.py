"""The per-host plan: what a machine gets, from where, and nothing more when asked again."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.ipam.hostplan import (
    Assign,
    Carve,
    Holdings,
    HostSizes,
    Plan,
    Role,
    Space,
    plan,
)

PACKET = HostSizes(public4=31, private4=31, public6=127, project_private4=25, project_public6=56)
PUBLIC4 = Space("p4", "198.51.100.0/24", 24)
PRIVATE4 = Space("v4", "10.70.0.0/16", 16)
PUBLIC6 = Space("p6", "2001:db8::/48", 48)
EVERY_POOL = Holdings(
    frozenset(), public4_pools=(PUBLIC4,), private4_pools=(PRIVATE4,), public6_pools=(PUBLIC6,)
)


def test_a_first_machine_gets_three_blocks_and_its_project_two() -> None:
    found = plan(EVERY_POOL, PACKET)

    assert found.shortages == ()
    carve4, carve6 = Carve(Role.PRIVATE4, PRIVATE4, 25), Carve(Role.PUBLIC6, PUBLIC6, 56)
    assert found.steps == (
        Assign(Role.PUBLIC4, PUBLIC4, 31),
        carve4,
        Assign(Role.PRIVATE4, carve4, 31),
        carve6,
        Assign(Role.PUBLIC6, carve6, 127),
    )


def test_a_project_block_with_room_is_used_and_a_full_one_passed_over() -> None:
    full = Space("full", "10.70.0.0/25", None)
    roomy = Space("roomy", "10.70.0.128/25", 26)
    holdings = dataclasses.replace(EVERY_POOL, project_private4=(full, roomy))

    steps = plan(holdings, PACKET).steps

    assert Assign(Role.PRIVATE4, roomy, 31) in steps
    assert not any(isinstance(step, Carve) and step.role is Role.PRIVATE4 for step in steps)


def test_a_project_whose_blocks_are_full_gets_another() -> None:
    holdings = dataclasses.replace(
        EVERY_POOL, project_private4=(Space("full", "10.70.0.0/25", None),)
    )

    assert Carve(Role.PRIVATE4, PRIVATE4, 25) in plan(holdings, PACKET).steps


def test_no_pool_and_full_pools_are_shortages_that_name_the_metro_and_the_fix() -> None:
    full = Space("p4", "198.51.100.0/30", None)
    holdings = Holdings(frozenset(), public4_pools=(full,), public6_pools=(PUBLIC6,))

    found = plan(holdings, PACKET)

    assert [shortage.role for shortage in found.shortages] == [Role.PUBLIC4, Role.PRIVATE4]
    public, private = (shortage.message("am6") for shortage in found.shortages)
    assert public == (
        "every public IPv4 pool of metro am6 (198.51.100.0/30) is too full for a /31: add one"
        " with `metalflow ipam prefix create CIDR --kind public --metro am6` (an IPv4 CIDR)"
    )
    assert private == (
        "metro am6 has no private IPv4 pool: add one with `metalflow ipam prefix create CIDR"
        " --kind private --metro am6` (an IPv4 CIDR)"
    )


def test_a_pool_too_small_for_a_project_block_is_a_shortage() -> None:
    tiny = Space("v4", "10.70.0.0/26", 26)
    found = plan(dataclasses.replace(EVERY_POOL, private4_pools=(tiny,)), PACKET)

    [shortage] = found.shortages
    assert (shortage.role, shortage.prefixlen, shortage.pools) == (Role.PRIVATE4, 25, (tiny,))


def carry_out(holdings: Holdings, found: Plan) -> Holdings:
    """What the edge's writes leave: each role held, each carved block the project's."""
    carved = {
        step.role: Space(f"carved-{step.role}", "", step.prefixlen)
        for step in found.steps
        if isinstance(step, Carve)
    }
    return dataclasses.replace(
        holdings,
        held=holdings.held | {step.role for step in found.steps if isinstance(step, Assign)},
        project_private4=holdings.project_private4
        + tuple(block for role, block in carved.items() if role is Role.PRIVATE4),
        project_public6=holdings.project_public6
        + tuple(block for role, block in carved.items() if role is Role.PUBLIC6),
    )


def spaces(longest: int) -> st.SearchStrategy[tuple[Space, ...]]:
    free = st.one_of(st.none(), st.integers(min_value=0, max_value=longest))
    space = st.builds(Space, st.text(min_size=1, max_size=4), st.just("cidr"), free)
    return st.lists(space, max_size=3).map(tuple)


sizes = st.builds(
    HostSizes,
    public4=st.integers(28, 32),
    private4=st.integers(28, 32),
    public6=st.integers(64, 128),
    project_private4=st.integers(16, 28),
    project_public6=st.integers(40, 64),
)
holdings = st.builds(
    Holdings,
    held=st.frozensets(st.sampled_from(Role)),
    public4_pools=spaces(32),
    private4_pools=spaces(32),
    public6_pools=spaces(128),
    project_private4=spaces(32),
    project_public6=spaces(128),
)


@settings(max_examples=300)
@given(holdings, sizes)
def test_every_role_not_held_is_assigned_once_or_short(given: Holdings, size: HostSizes) -> None:
    found = plan(given, size)

    assigned = [step.role for step in found.steps if isinstance(step, Assign)]
    short = [shortage.role for shortage in found.shortages]
    assert sorted(assigned + short) == sorted(set(Role) - given.held)
    assert len(set(assigned)) == len(assigned)


@settings(max_examples=300)
@given(holdings, sizes)
def test_every_step_takes_a_size_that_fits_where_it_takes_it(
    given: Holdings, size: HostSizes
) -> None:
    found = plan(given, size)

    for step in found.steps:
        if isinstance(step, Carve):
            assert step.pool in given.pools(step.role) and step.pool.fits(step.prefixlen)
            assert step.prefixlen == size.project(step.role)
            assert not any(
                block.fits(size.host(step.role)) for block in given.project_blocks(step.role)
            )
            continue
        assert step.prefixlen == size.host(step.role)
        if isinstance(step.source, Carve):
            assert found.steps.index(step.source) < found.steps.index(step)
        elif size.project(step.role) is None:
            assert step.source in given.pools(step.role) and step.source.fits(step.prefixlen)
        else:
            assert step.source in given.project_blocks(step.role)
            assert step.source.fits(step.prefixlen)


@settings(max_examples=300)
@given(holdings, sizes)
def test_a_shortage_means_no_pool_had_room(given: Holdings, size: HostSizes) -> None:
    for shortage in plan(given, size).shortages:
        assert shortage.pools == given.pools(shortage.role)
        assert not any(pool.fits(shortage.prefixlen) for pool in shortage.pools)
        assert not any(
            block.fits(size.host(shortage.role)) for block in given.project_blocks(shortage.role)
        )


@settings(max_examples=300)
@given(holdings, sizes)
def test_planning_again_after_the_plan_is_carried_out_asks_for_nothing_new(
    given: Holdings, size: HostSizes
) -> None:
    first = plan(given, size)
    again = plan(carry_out(given, first), size)

    assert again.steps == ()
    assert {shortage.role for shortage in again.shortages} == {
        shortage.role for shortage in first.shortages
    }
