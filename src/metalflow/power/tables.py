"""Power jobs: what was asked of a machine's BMC, its steps, and how it ended; rufio objects."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from metalflow.db.base import Base, utcnow


class PowerJob(Base):
    __tablename__ = "power_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    machine_id: Mapped[str] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), index=True
    )
    operation: Mapped[str] = mapped_column(String(32))
    """What was asked, as the operator said it: on, off, cycle, boot-device, netboot, ..."""
    steps: Mapped[list[Any]] = mapped_column(default=list)
    state: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str | None] = mapped_column(Text)
    results: Mapped[list[Any]] = mapped_column(default=list)
    """Per finished step: what, ok, message, seconds."""
    workflow_id: Mapped[str | None] = mapped_column(String(32), index=True)
    requested_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    """Written while a process runs the job; a stale one means that process is gone."""


class BmcObject(Base):
    """A Tinkerbell rufio object kept for the Hardware that name it later: a `Machine`
    (bmc.tinkerbell.org) resolved to metalflow's BMC fields, or a `Secret` it names.

    `fields` never holds a secret: a Secret's username, password and HMAC key are in
    `secret_encrypted` (Keyring-encrypted JSON); a Machine's resolved BMC fields are in `fields`.
    """

    __tablename__ = "bmc_objects"
    __table_args__ = (UniqueConstraint("kind", "namespace", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """Machine (a rufio Machine) or Secret."""
    namespace: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
