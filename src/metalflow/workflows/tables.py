"""Workflows, their actions per run, and every attempt of every action (the journal)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from metalflow.db.base import Base, utcnow
from metalflow.workflows.states import ACTIVE_WORKFLOW_STATES, WorkflowState

ACTIVE = tuple(state.value for state in WorkflowState if state in ACTIVE_WORKFLOW_STATES)
_ACTIVE_SQL = text(f"state IN ({', '.join(repr(state) for state in ACTIVE)})")


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        Index(
            "uq_workflows_one_active_per_machine",
            "machine_id",
            unique=True,
            sqlite_where=_ACTIVE_SQL,
            postgresql_where=_ACTIVE_SQL,
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    machine_id: Mapped[str] = mapped_column(
        ForeignKey("machines.id", ondelete="CASCADE"), index=True
    )
    template_name: Mapped[str] = mapped_column(String(200))
    template_data: Mapped[str] = mapped_column(Text, deferred=True)
    hardware_map: Mapped[dict[str, Any]] = mapped_column(default=dict)
    kind: Mapped[str] = mapped_column(String(16), default="provision")
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    run: Mapped[int] = mapped_column(default=1)
    starts: Mapped[int] = mapped_column(default=1)
    """How often the workflow was started (created, resumed, re-run): boot and run tokens name
    the start they belong to, so those of an earlier start are refused."""
    boot_token_issued: Mapped[int | None] = mapped_column(BigInteger)
    """`issued_ms` of the boot token exchanged in this start (docs/agent-protocol.md, Identity)."""
    agent_key_hash: Mapped[str | None] = mapped_column(String(64))
    """Hash of the key the agent that exchanged it sent: only it may exchange it again."""
    global_timeout: Mapped[int] = mapped_column(default=0)
    boot_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """`{"mode": "netboot", "reboot": bool}`: the BMC powers the machine into PXE first and
    sets it to boot its disk after (rebooting it into the disk when `reboot`)."""
    deadline: Mapped[dt.datetime | None] = mapped_column(index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    actions: Mapped[list[WorkflowAction]] = relationship(
        back_populates="workflow",
        order_by="(WorkflowAction.run, WorkflowAction.position)",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class WorkflowAction(Base):
    __tablename__ = "workflow_actions"
    __table_args__ = (Index("ix_workflow_actions_workflow_run", "workflow_id", "run", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    run: Mapped[int]
    position: Mapped[int]
    task_name: Mapped[str] = mapped_column(String(200))
    worker: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    image: Mapped[str] = mapped_column(Text)
    command: Mapped[list[Any]] = mapped_column(default=list)
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    volumes: Mapped[list[Any]] = mapped_column(default=list)
    pid: Mapped[str | None] = mapped_column(String(64))
    timeout: Mapped[int] = mapped_column(default=0)
    retries: Mapped[int] = mapped_column(default=0)
    retry_backoff: Mapped[float] = mapped_column(default=0.0)
    terminal: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    budget_start: Mapped[int] = mapped_column(default=0)
    not_before: Mapped[dt.datetime | None]
    deadline: Mapped[dt.datetime | None] = mapped_column(index=True)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    exit_code: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(Text)

    workflow: Mapped[Workflow] = relationship(back_populates="actions")
    journal: Mapped[list[ActionAttempt]] = relationship(
        back_populates="action",
        order_by="ActionAttempt.number",
        cascade="all, delete-orphan",
    )


class ActionAttempt(Base):
    __tablename__ = "action_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_actions.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    exit_code: Mapped[int | None]
    message: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[list[Any]] = mapped_column(default=list, deferred=True)
    log_lines: Mapped[int] = mapped_column(default=0)

    action: Mapped[WorkflowAction] = relationship(back_populates="journal")
