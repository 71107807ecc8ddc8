"""IP blocks and the free space between them.

Every prefix metalflow knows is one `ipam_blocks` row: the provider's pools, the blocks carved from
them for a project, a project's reservations, the addresses assigned to machines, and released
blocks in quarantine. A block's children never overlap one another; on PostgreSQL the database
itself refuses it (migration 0008: an exclusion constraint, GiST over `cidr` with `inet_ops`
and btree_gist for the parent, checked at commit), so two processes allocating at once cannot
both win, whatever the service above does; SQLite serialises writers.

The free space inside a block that hands out children is kept as `ipam_free_blocks` rows, one per
free aligned block (buddy-style), so that an allocation reads and writes a number of rows bounded
by the prefix length, never the list of what is allocated: the cost stays flat as a pool fills.

Addresses are stored twice: `cidr` for people and PostgreSQL's operators, and `first`/`last` as
32 hex digits, which sort and compare as numbers on both databases (IPv4 and IPv6 alike, told
apart by `family`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import CIDR
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from metalflow.db.base import Base, utcnow

KEY_DIGITS = 32
"""Hex digits of an address key: 128 bits, so IPv6 fits and IPv4 sorts the same way."""


class Kind(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    GLOBAL = "global"
    """Anycast-style space announced from every metro (Equinix's global IPv4)."""


class Status(StrEnum):
    POOL = "pool"
    """Hands out children: a provider prefix, or a block carved from one for a project."""
    RESERVATION = "reservation"
    """A project's block (reserved, or brought by it); its addresses are assigned to machines."""
    ASSIGNMENT = "assignment"
    """Given to one machine."""
    QUARANTINE = "quarantine"
    """Released; back to its parent's free space once `quarantine_until` has passed."""


def address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return format(int(address), f"0{KEY_DIGITS}x")


class Network(TypeDecorator[str]):
    """A CIDR prefix in canonical text: PostgreSQL's `cidr` (its operators and GiST), else text."""

    impl = String(43)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(CIDR())
        return dialect.type_descriptor(String(43))

    def process_result_value(self, value: object, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


class IpBlock(Base):
    __tablename__ = "ipam_blocks"
    __table_args__ = (
        CheckConstraint("family IN (4, 6)", name="family"),
        CheckConstraint(
            "(family = 4 AND prefixlen BETWEEN 0 AND 32) OR (family = 6 AND prefixlen BETWEEN 0"
            " AND 128)",
            name="prefixlen",
        ),
        Index("ix_ipam_blocks_parent_first", "parent_id", "family", "first"),
        Index("ix_ipam_blocks_project_status", "project_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("ipam_blocks.id", ondelete="RESTRICT"))
    cidr: Mapped[str] = mapped_column(Network())
    family: Mapped[int]
    prefixlen: Mapped[int]
    first: Mapped[str] = mapped_column(String(KEY_DIGITS))
    last: Mapped[str] = mapped_column(String(KEY_DIGITS))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str | None] = mapped_column(String(32))
    """The owning project; None for the provider's own space."""
    machine_id: Mapped[str | None] = mapped_column(String(32), index=True)
    """The machine an assignment is given to. No foreign key: ipam sits beside inventory, not
    above it; removing a machine releases its assignments through the service."""
    metro: Mapped[str | None] = mapped_column(String(64))
    provisioning: Mapped[bool] = mapped_column(default=False)
    """The provisioning network's DHCP reservations are allocated from this pool."""
    byo: Mapped[bool] = mapped_column(default=False)
    """Brought by its project: never handed to anyone outside `allowed_projects`."""
    allowed_projects: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    quarantine_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FreeBlock(Base):
    """One free aligned block inside a pool or reservation."""

    __tablename__ = "ipam_free_blocks"
    __table_args__ = (
        Index("ix_ipam_free_blocks_by_size", "block_id", "prefixlen", "first", unique=True),
        Index("ix_ipam_free_blocks_by_address", "block_id", "first", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    block_id: Mapped[str] = mapped_column(ForeignKey("ipam_blocks.id", ondelete="CASCADE"))
    cidr: Mapped[str] = mapped_column(Network())
    prefixlen: Mapped[int]
    first: Mapped[str] = mapped_column(String(KEY_DIGITS))
