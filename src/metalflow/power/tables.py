"""Power jobs: what was asked of a machine's BMC, its steps, and how it ended."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text
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
