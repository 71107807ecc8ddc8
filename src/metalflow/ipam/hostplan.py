"""Which blocks a machine assigned to a project still needs in its metro, and where each comes
from: Packet's per-host layer 3, decided from values so that it is tested without a database.

A machine gets a public IPv4 block (by default a /31) from the metro's public IPv4 pool, a
private IPv4 block (/31) from its project's private block in the metro, and a public IPv6 block
(/127) from its project's IPv6 block in the metro. A project's block (a /25 private IPv4, a /56
IPv6) is carved from the provider's pool of that kind in the metro on first need: when the
project has none there, or every one it has is full. A role the machine already holds is left
alone, so planning again after the plan is carried out asks for nothing.

Nothing here reads free space: the edge says how large the largest free block of each pool is,
and the plan takes the first pool, in the order given, that fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a per-host block is for, as the size settings name it."""

    PUBLIC4 = "public4"
    PRIVATE4 = "private4"
    PUBLIC6 = "public6"


@dataclass(frozen=True, slots=True)
class HostSizes:
    """Prefix lengths in one metro: a machine's blocks and its project's blocks."""

    public4: int
    private4: int
    public6: int
    project_private4: int
    project_public6: int

    def host(self, role: Role) -> int:
        return {
            Role.PUBLIC4: self.public4,
            Role.PRIVATE4: self.private4,
            Role.PUBLIC6: self.public6,
        }[role]

    def project(self, role: Role) -> int | None:
        """The size of the project's block a role's host blocks come from; None: from a pool."""
        return {Role.PRIVATE4: self.project_private4, Role.PUBLIC6: self.project_public6}.get(role)


@dataclass(frozen=True, slots=True)
class Space:
    """A pool or a project's block, as far as the plan needs it."""

    id: str
    cidr: str
    largest_free: int | None
    """Prefix length of its largest free block; None when it is full."""

    def fits(self, prefixlen: int) -> bool:
        return self.largest_free is not None and self.largest_free <= prefixlen


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the machine holds and what the metro and the project have to give."""

    held: frozenset[Role]
    public4_pools: tuple[Space, ...] = ()
    private4_pools: tuple[Space, ...] = ()
    """The provider's private IPv4 pools, where projects' private blocks are carved."""
    public6_pools: tuple[Space, ...] = ()
    project_private4: tuple[Space, ...] = ()
    project_public6: tuple[Space, ...] = ()

    def pools(self, role: Role) -> tuple[Space, ...]:
        return {
            Role.PUBLIC4: self.public4_pools,
            Role.PRIVATE4: self.private4_pools,
            Role.PUBLIC6: self.public6_pools,
        }[role]

    def project_blocks(self, role: Role) -> tuple[Space, ...]:
        return {Role.PRIVATE4: self.project_private4, Role.PUBLIC6: self.project_public6}.get(
            role, ()
        )


@dataclass(frozen=True, slots=True)
class Carve:
    """A block for the project, from a provider pool, for the host blocks of `role`."""

    role: Role
    pool: Space
    prefixlen: int


@dataclass(frozen=True, slots=True)
class Assign:
    """A block for the machine, from a pool or a project's block (existing or carved first)."""

    role: Role
    source: Space | Carve
    prefixlen: int


KIND_AND_FAMILY = {
    Role.PUBLIC4: ("public", 4),
    Role.PRIVATE4: ("private", 4),
    Role.PUBLIC6: ("public", 6),
}


@dataclass(frozen=True, slots=True)
class Shortage:
    """No pool of the metro has room for what a role needs (`pools` empty: there is none)."""

    role: Role
    prefixlen: int
    pools: tuple[Space, ...]

    def message(self, metro: str) -> str:
        kind, family = KIND_AND_FAMILY[self.role]
        fix = (
            f"add one with `metalflow ipam prefix create CIDR --kind {kind} --metro {metro}`"
            f" (an IPv{family} CIDR)"
        )
        if not self.pools:
            return f"metro {metro} has no {kind} IPv{family} pool: {fix}"
        names = ", ".join(pool.cidr for pool in self.pools)
        return (
            f"every {kind} IPv{family} pool of metro {metro} ({names}) is too full for a"
            f" /{self.prefixlen}: {fix}"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Carve | Assign, ...]
    """In order: a Carve comes before the Assign that takes from it."""
    shortages: tuple[Shortage, ...]
    """Carry out nothing when there is any: the plan is all or nothing."""


def _first_fitting(spaces: tuple[Space, ...], prefixlen: int) -> Space | None:
    return next((space for space in spaces if space.fits(prefixlen)), None)


def plan(holdings: Holdings, sizes: HostSizes) -> Plan:
    steps: list[Carve | Assign] = []
    shortages: list[Shortage] = []
    for role in Role:
        if role in holdings.held:
            continue
        host = sizes.host(role)
        project_size = sizes.project(role)
        if project_size is None:
            pool = _first_fitting(holdings.pools(role), host)
            if pool is None:
                shortages.append(Shortage(role, host, holdings.pools(role)))
            else:
                steps.append(Assign(role, pool, host))
            continue
        block = _first_fitting(holdings.project_blocks(role), host)
        if block is not None:
            steps.append(Assign(role, block, host))
            continue
        pool = _first_fitting(holdings.pools(role), project_size)
        if pool is None:
            shortages.append(Shortage(role, project_size, holdings.pools(role)))
            continue
        carve = Carve(role, pool, project_size)
        steps += [carve, Assign(role, carve, host)]
    return Plan(tuple(steps), tuple(shortages))
