"""What the workflows API sends: typed, so the OpenAPI document describes the real responses."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from metalflow.inventory.schemas import MachinePublic
from metalflow.workflows.engine import current_actions
from metalflow.workflows.states import ActionState
from metalflow.workflows.tables import ActionAttempt, Workflow, WorkflowAction


def _none(value: object) -> bool:
    return value is None


class AttemptPublic(BaseModel):
    """One attempt of an action, as the journal keeps it."""

    id: int
    attempt: int
    state: str
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    message: str | None
    log_tail: list[str]
    log_lines: int


class ActionPublic(BaseModel):
    id: int
    run: int
    index: int
    task: str
    name: str
    image: str
    state: str
    attempts: int
    timeout: int
    retries: int
    terminal: bool
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    message: str | None
    journal: list[AttemptPublic] | None = Field(
        default=None, exclude_if=lambda value: value is None
    )
    """Every attempt, with a workflow's history only."""


class Progress(BaseModel):
    done: int
    total: int


class WorkflowPublic(BaseModel):
    id: str
    name: str
    machine: str
    template: str
    kind: str
    state: str
    reason: str | None
    run: int
    global_timeout: int
    hardware_map: dict[str, str]
    boot: str | None
    reboot: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress
    actions: list[ActionPublic]


class WorkflowList(BaseModel):
    items: list[WorkflowPublic]
    count: int


class Deprovisioned(BaseModel):
    """The machine after a deprovision, and the workflow that runs it, if a template was given."""

    machine: MachinePublic
    workflow: WorkflowPublic | None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _attempt_public(attempt: ActionAttempt) -> AttemptPublic:
    return AttemptPublic(
        id=attempt.id,
        attempt=attempt.number,
        state=attempt.state,
        started_at=_iso(attempt.started_at),
        finished_at=_iso(attempt.finished_at),
        exit_code=attempt.exit_code,
        message=attempt.message,
        log_tail=list(attempt.log_tail),
        log_lines=attempt.log_lines,
    )


def _action_public(action: WorkflowAction, *, journal: bool) -> ActionPublic:
    fields: dict[str, Any] = {}
    if journal:
        fields["journal"] = [_attempt_public(a) for a in action.journal]
    return ActionPublic(
        id=action.id,
        run=action.run,
        index=action.position,
        task=action.task_name,
        name=action.name,
        image=action.image,
        state=action.state,
        attempts=action.attempts,
        timeout=action.timeout,
        retries=action.retries,
        terminal=action.terminal,
        started_at=_iso(action.started_at),
        finished_at=_iso(action.finished_at),
        exit_code=action.exit_code,
        message=action.message,
        **fields,
    )


def to_public(workflow: Workflow, machine_name: str, *, history: bool = False) -> WorkflowPublic:
    """With `history`, every run's actions and each action's attempts; else the current run's."""
    current = current_actions(workflow)
    actions = workflow.actions if history else current
    done = sum(1 for a in current if a.state == ActionState.SUCCESS.value)
    return WorkflowPublic(
        id=workflow.id,
        name=workflow.name,
        machine=machine_name,
        template=workflow.template_name,
        kind=workflow.kind,
        state=workflow.state,
        reason=workflow.reason,
        run=workflow.run,
        global_timeout=workflow.global_timeout,
        hardware_map=workflow.hardware_map,
        boot=(workflow.boot_options or {}).get("mode"),
        reboot=bool((workflow.boot_options or {}).get("reboot")),
        created_at=workflow.created_at.isoformat(),
        started_at=_iso(workflow.started_at),
        finished_at=_iso(workflow.finished_at),
        progress=Progress(done=done, total=len(current)),
        actions=[_action_public(a, journal=history) for a in actions],
    )


class Assignment(BaseModel):
    """One attempt of one action for the agent to run (`protocol.assignment` builds it)."""

    id: int
    attempt: int
    workflow: str
    task: str
    name: str
    image: str
    command: list[str]
    environment: dict[str, str]
    volumes: list[str]
    pid: str | None
    timeout: int
    terminal: bool
    index: int
    total: int
    log_seq: int
    """How many of the attempt's log lines the server holds: where a resumed agent continues."""


class HelloAnswer(BaseModel):
    machine: str
    id: str
    state: str
    token: str | None = Field(default=None, exclude_if=_none)
    """The run token, when hello exchanged a boot token."""


class Discovered(BaseModel):
    machine: str
    id: str
    state: str
    token: str
    """The new machine's agent token."""


class StatusAnswer(BaseModel):
    id: int
    state: str
    workflow_state: str


class LogsReceived(BaseModel):
    received: int
    """How many log lines of the attempt the server holds now."""


class Ping(BaseModel):
    machine: str
