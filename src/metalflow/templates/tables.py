"""Stored templates: the text exactly as applied, rendered per workflow."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from metalflow.db.base import Base, utcnow


class Template(Base):
    __tablename__ = "templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    data: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(String(32))
    task_count: Mapped[int]
    action_count: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
