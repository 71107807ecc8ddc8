"""The metal cloud's tables. A device is a tenant's view of one machine: the machine stays the
inventory's (its interfaces, BMC and lifecycle); the device row holds what the tenant asked for
and what Equinix Metal reports about it. Ids the Metal API shows are UUIDs, as Equinix's are."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from metalflow.db.base import Base, utcnow


class Metro(Base):
    """Where machines stand; `machines.metro` holds its code."""

    __tablename__ = "metros"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    """ISO 3166-1 alpha-2, upper case."""
    bgp_peers: Mapped[list[Any]] = mapped_column(default=list)
    """The provider's route servers here: `[{"address_family": 4|6, "peer_as", "peer_ips"}]`,
    the peers of every device BGP session in the metro."""
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Plan(Base):
    """A kind of server; machines are in it when their discovered hardware meets `rule`."""

    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    plan_class: Mapped[str] = mapped_column(String(64))
    """Equinix's `class` (c3.small.x86), usually the slug."""
    line: Mapped[str] = mapped_column(String(32), default="baremetal")
    description: Mapped[str] = mapped_column(Text, default="")
    specs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """As Equinix shows them: cpus, memory, drives, nics, features."""
    rule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What a machine's discovered attributes must meet (cloud.matching)."""
    wipe: Mapped[str] = mapped_column(String(16), default="signatures")
    """How a device's disks are wiped when it is deleted: signatures, zero or discard."""
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OperatingSystem(Base):
    __tablename__ = "operating_systems"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    distro: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    provisionable_on: Mapped[list[Any]] = mapped_column(default=list)
    """Plan slugs."""
    image_url: Mapped[str | None] = mapped_column(Text)
    image_checksum: Mapped[str | None] = mapped_column(String(200))
    """`sha256:HEX` (or `sha512:`), checked by the agent as it streams the image."""
    template: Mapped[str | None] = mapped_column(String(200))
    """The workflow template that installs it; None: the generated image2disk + writefile one."""
    cloud_init: Mapped[bool] = mapped_column(default=True)
    """Its image runs cloud-init: a device is active when it phones home, else when the
    install workflow ends."""
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HardwareReservation(Base):
    """A machine kept for one project: only that project's devices may take it."""

    __tablename__ = "hardware_reservations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    machine_id: Mapped[str] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), unique=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SshKey(Base):
    """A user's key (in every device of their projects) or a project's (its devices only)."""

    __tablename__ = "ssh_keys"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (project_id IS NULL)", name="one_owner"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(Text)
    """The OpenSSH public key line, as given (normalised to `type base64 [comment]`)."""
    fingerprint: Mapped[str] = mapped_column(String(64))
    """MD5, colon-separated hex, as Equinix shows it."""
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Device(Base):
    """Kept after deletion (state `deleted`, machine released) so its events and audit
    entries still name it; lists and reads skip deleted devices."""

    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_project_id_state", "project_id", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    short_id: Mapped[str] = mapped_column(String(8), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    machine_id: Mapped[str | None] = mapped_column(
        ForeignKey("machines.id", ondelete="SET NULL"), unique=True
    )
    """The machine it runs on; None once deleted (the machine is back in the pool)."""
    hostname: Mapped[str] = mapped_column(String(253))
    description: Mapped[str] = mapped_column(Text, default="")
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    metro: Mapped[str] = mapped_column(String(64))
    operating_system_id: Mapped[str] = mapped_column(
        ForeignKey("operating_systems.id", ondelete="RESTRICT")
    )
    state: Mapped[str] = mapped_column(String(32))
    """Equinix's states: queued, provisioning, active, inactive, failed, powering_on,
    powering_off, reinstalling, deprovisioning, deleted."""
    workflow_id: Mapped[str | None] = mapped_column(String(32))
    """The workflow installing, reinstalling or wiping it, while one runs and after."""
    userdata: Mapped[str] = mapped_column(Text, default="")
    customdata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    ssh_key_ids: Mapped[list[Any]] = mapped_column(default=list)
    """The keys put on it at create (or reinstall)."""
    always_pxe: Mapped[bool] = mapped_column(default=False)
    ipxe_script_url: Mapped[str | None] = mapped_column(Text)
    locked: Mapped[bool] = mapped_column(default=False)
    hardware_reservation_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BgpConfig(Base):
    """A project's BGP: its ASN and optional MD5 secret (encrypted with the keyring)."""

    __tablename__ = "bgp_configs"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    deployment_type: Mapped[str] = mapped_column(String(16))
    """local or global."""
    asn: Mapped[int]
    md5_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class BgpSession(Base):
    __tablename__ = "bgp_sessions"
    __table_args__ = (UniqueConstraint("device_id", "address_family"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    address_family: Mapped[str] = mapped_column(String(8))
    """ipv4 or ipv6."""
    default_route: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
