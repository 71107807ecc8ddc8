"""Machines and their interfaces; MAC and IP uniqueness is enforced by the database itself."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from metalflow.db.base import Base, utcnow


class Machine(Base):
    """JSON documents are deferred: the agent hot path locks and reads machines constantly and
    needs none of them."""

    __tablename__ = "machines"
    __table_args__ = (Index("ix_machines_plan_id_metro_state", "plan_id", "metro", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    project: Mapped[str] = mapped_column(String(200), default="default")
    """The manifest's grouping (a Tinkerbell namespace); not a tenant project (`project_id`)."""
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"), index=True
    )
    """The tenant project the provider assigned the machine to; None while it is the provider's."""
    project_assigned_at: Mapped[dt.datetime | None]
    """When `project_id` last changed: its tenant sees the machine's history from then on."""
    metro: Mapped[str | None] = mapped_column(String(64))
    """Where the machine stands: its per-host addresses come from this metro's pools."""
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id", ondelete="SET NULL"))
    """The plan its discovered hardware matches (cloud.matching), kept as plans and
    attributes change, so a device create finds a ready machine of a plan by index."""
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    arch: Mapped[str] = mapped_column(String(32), default="x86_64")
    uefi: Mapped[bool] = mapped_column(default=True)
    hostname: Mapped[str | None] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(32), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    disks: Mapped[list[Any]] = mapped_column(deferred=True, default=list)
    bmc_driver: Mapped[str | None] = mapped_column(String(32))
    bmc_address: Mapped[str | None] = mapped_column(String(255))
    bmc_username: Mapped[str | None] = mapped_column(String(255))
    bmc_password_encrypted: Mapped[str | None] = mapped_column(Text)
    bmc_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Port, insecure_tls, power_timeout and the driver's own options (rufio providerOptions)."""
    power_state: Mapped[str | None] = mapped_column(String(8))
    """As the BMC last reported it (power jobs and the periodic sync); None before any."""
    power_state_at: Mapped[dt.datetime | None]
    power_error: Mapped[str | None] = mapped_column(Text)
    """Why the last sync could not read the state; None when it could."""
    attributes: Mapped[dict[str, Any]] = mapped_column(deferred=True, default=dict)
    instance_metadata: Mapped[dict[str, Any]] = mapped_column(deferred=True, default=dict)
    user_data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    applied: Mapped[dict[str, Any]] = mapped_column(deferred=True, default=dict)
    boot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agent_token_generation: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    interfaces: Mapped[list[Interface]] = relationship(
        back_populates="machine",
        order_by="Interface.position",
        cascade="all, delete-orphan",
    )


class Interface(Base):
    __tablename__ = "interfaces"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    ip: Mapped[str | None] = mapped_column(String(45), unique=True)
    netmask: Mapped[str | None] = mapped_column(String(45))
    gateway: Mapped[str | None] = mapped_column(String(45))
    nameservers: Mapped[list[Any]] = mapped_column(default=list)
    hostname: Mapped[str | None] = mapped_column(String(253))
    vlan: Mapped[int | None]
    lease_time: Mapped[int | None]
    allow_pxe: Mapped[bool] = mapped_column(default=True)
    allow_workflow: Mapped[bool] = mapped_column(default=True)

    machine: Mapped[Machine] = relationship(back_populates="interfaces")
