"""Leases handed out from dynamic pools; reservations come from inventory and need no row."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from metalflow.db.base import Base, utcnow


class DhcpLease(Base):
    __tablename__ = "dhcp_leases"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    address: Mapped[str] = mapped_column(String(15), unique=True)
    subnet: Mapped[str] = mapped_column(String(18), index=True)
    expires_at: Mapped[dt.datetime]
    hostname: Mapped[str | None] = mapped_column(String(253))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
