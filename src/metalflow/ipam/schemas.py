"""IPAM input and output shapes (pydantic) for the API and the CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
from enum import IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from metalflow.ipam.allocator import PrefixStats, Strategy
from metalflow.ipam.layout import block_layout
from metalflow.ipam.tables import IpBlock, Kind, Status
from metalflow.values import NAME_PATTERN

Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/=-]{0,62}$")]


class Family(IntEnum):
    IPV4 = 4
    IPV6 = 6


class PrefixCreate(BaseModel):
    """A prefix the provider adds: a pool to allocate from, or a project's own (`byo`)."""

    model_config = ConfigDict(extra="forbid")

    cidr: str = Field(max_length=43, examples=["198.51.100.0/24", "2001:db8::/32"])
    kind: Kind = Kind.PUBLIC
    metro: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    project: str | None = Field(default=None, max_length=32, description="owning project id")
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    description: str = Field(default="", max_length=1000)
    provisioning: bool = Field(
        default=False,
        description="the provisioning network's DHCP reservations are allocated from it",
    )
    byo: bool = Field(
        default=False,
        description="brought by `project`: its reservation, handed to no other project except"
        " `allowed_projects`",
    )
    allowed_projects: list[str] = Field(default_factory=list, max_length=64)


class AllocationRequest(BaseModel):
    """A child of a pool or reservation: a size (`prefixlen`), or a given block (`cidr`)."""

    model_config = ConfigDict(extra="forbid")

    prefixlen: int | None = Field(default=None, ge=0, le=128)
    cidr: str | None = Field(default=None, max_length=43)
    strategy: Literal["first-fit", "best-fit"] = "first-fit"
    status: Literal["reservation", "assignment"] = "assignment"
    project: str | None = Field(default=None, max_length=32)
    machine: str | None = Field(default=None, max_length=32, description="machine id")

    @property
    def allocation_strategy(self) -> Strategy:
        return Strategy(self.strategy)


class PrefixUsage(BaseModel):
    total: int
    allocated: int
    free: int
    utilisation: float
    largest_free_prefixlen: int | None
    free_blocks: int
    fragmentation: float
    """1 - largest free block / free space: 0 when the free space is one block."""

    @classmethod
    def of(cls, stats: PrefixStats) -> PrefixUsage:
        return cls(
            total=stats.total,
            allocated=stats.allocated,
            free=stats.free,
            utilisation=round(stats.utilisation, 6),
            largest_free_prefixlen=stats.largest_free_prefixlen,
            free_blocks=stats.free_blocks,
            fragmentation=round(stats.fragmentation, 6),
        )


class PrefixPublic(BaseModel):
    id: str
    cidr: str
    family: Literal[4, 6]
    prefixlen: int
    kind: Kind
    status: Status
    parent: str | None
    project: str | None
    machine: str | None
    metro: str | None
    provisioning: bool
    byo: bool
    allowed_projects: list[str]
    tags: list[str]
    description: str
    quarantine_until: dt.datetime | None
    created_at: dt.datetime

    @classmethod
    def of(cls, block: IpBlock) -> PrefixPublic:
        return cls(
            id=block.id,
            cidr=block.cidr,
            family=4 if block.family == 4 else 6,
            prefixlen=block.prefixlen,
            kind=Kind(block.kind),
            status=Status(block.status),
            parent=block.parent_id,
            project=block.project_id,
            machine=block.machine_id,
            metro=block.metro,
            provisioning=block.provisioning,
            byo=block.byo,
            allowed_projects=[str(item) for item in block.allowed_projects],
            tags=[str(item) for item in block.tags],
            description=block.description,
            quarantine_until=block.quarantine_until,
            created_at=block.created_at,
        )


class PrefixList(BaseModel):
    items: list[PrefixPublic]
    count: int


class PrefixDetail(PrefixPublic):
    usage: PrefixUsage | None
    """For pools and reservations: what their free space says."""


class ReservationCreate(BaseModel):
    """A block for a project from the provider's pool of its kind, family and metro."""

    model_config = ConfigDict(extra="forbid")

    project: str = Field(max_length=32, description="the project id that reserves")
    kind: Kind = Kind.PUBLIC
    family: Family = Family.IPV4
    size: int = Field(ge=0, le=128, description="prefix length, e.g. 29", examples=[29])
    metro: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        max_length=64,
        description="metro code; none: pools without a metro (global space)",
    )
    description: str = Field(default="", max_length=1000)


class ByoImport(BaseModel):
    """A tenant's own prefix, imported by the provider as that project's reservation."""

    model_config = ConfigDict(extra="forbid")

    cidr: str = Field(max_length=43, examples=["203.0.113.0/24"])
    project: str = Field(max_length=32, description="the owning project id")
    allowed_projects: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=list,
        max_length=64,
        description="other projects of the owner's organization that may use it",
    )
    kind: Kind = Kind.PUBLIC
    metro: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    description: str = Field(default="", max_length=1000)


class AssignmentCreate(BaseModel):
    """An address or sub-block of the reservation for one of its project's machines."""

    model_config = ConfigDict(extra="forbid")

    machine: str = Field(max_length=200, description="machine id or name")
    address: str | None = Field(
        default=None,
        max_length=43,
        description="one address (198.51.100.5) or a sub-block (198.51.100.8/30)",
    )
    size: int | None = Field(
        default=None, ge=0, le=128, description="prefix length of the first free block to take"
    )


class AssignmentMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine: str = Field(max_length=200, description="machine id or name")


class AssignmentPublic(BaseModel):
    id: str
    cidr: str
    family: Literal[4, 6]
    prefixlen: int
    kind: Kind
    address: str
    """The address the machine takes (the upper of a /31 or /127, whose lower is the gateway)."""
    gateway: str | None
    netmask: str
    parent: str | None
    """The reservation (or, for a per-host address, the pool) it was given from."""
    elastic: bool
    """From a reservation: it can be moved to another machine or unassigned."""
    project: str | None
    machine: str | None
    metro: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, block: IpBlock, *, elastic: bool) -> AssignmentPublic:
        layout = block_layout(ipaddress.ip_network(block.cidr))
        return cls(
            id=block.id,
            cidr=block.cidr,
            family=4 if block.family == 4 else 6,
            prefixlen=block.prefixlen,
            kind=Kind(block.kind),
            address=str(layout.machine_address),
            gateway=None if layout.gateway is None else str(layout.gateway),
            netmask=str(layout.netmask),
            parent=block.parent_id,
            elastic=elastic,
            project=block.project_id,
            machine=block.machine_id,
            metro=block.metro,
            created_at=block.created_at,
        )


class AssignmentList(BaseModel):
    items: list[AssignmentPublic]
    count: int


class ReservationDetail(PrefixDetail):
    assignments: list[AssignmentPublic]


class ReservationList(BaseModel):
    items: list[PrefixDetail]
    count: int
