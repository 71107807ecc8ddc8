"""The agent protocol: hello, the next action to run, status reports and logs, and the exchange
of a boot token for a run token.

Every call that changes a workflow runs under its machine's lock and goes through the engine's
transitions, so an agent's report and a sweep or an operator's cancel cannot interleave.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from metalflow import events
from metalflow.errors import Conflict, Invalid, NotFound
from metalflow.inventory.tables import Machine
from metalflow.tenancy.tokens import BootClaim, Refused, RunClaim, RunRecord, exchange
from metalflow.workflows.engine import (
    active_workflow,
    current_actions,
    emit,
    finish_attempt,
    first_unfinished,
    latest_attempt,
    move_action,
    power_job_running,
    start,
    waits_for_bmc,
)
from metalflow.workflows.states import ActionEvent, ActionState, WorkflowState
from metalflow.workflows.tables import ACTIVE, ActionAttempt, Workflow, WorkflowAction

LOG_TAIL_LINES = 200
POWER_WAIT_SECONDS = 2
"""An agent that asks while the BMC's netboot job still runs is told to ask again this soon."""


def assignment(action: WorkflowAction, attempt: ActionAttempt, total: int) -> dict[str, Any]:
    """What the agent runs: one attempt of one action.

    `log_seq` is how many log lines the server already holds for this attempt, so an agent
    that is served a running attempt again continues its log where it stopped.
    """
    return {
        "id": attempt.id,
        "attempt": attempt.number,
        "workflow": action.workflow_id,
        "task": action.task_name,
        "name": action.name,
        "image": action.image,
        "command": action.command,
        "environment": action.environment,
        "volumes": action.volumes,
        "pid": action.pid,
        "timeout": action.timeout,
        "terminal": action.terminal,
        "index": action.position,
        "total": total,
        "log_seq": attempt.log_lines,
    }


NextAction = dict[str, Any] | dt.datetime | None


def has_active_workflow(session: Session, machine_id: str) -> bool:
    query = select(Workflow.id).where(Workflow.machine_id == machine_id, Workflow.state.in_(ACTIVE))
    return session.scalar(query) is not None


def next_action(session: Session, machine: Machine, now: dt.datetime) -> NextAction:
    """The attempt the agent should run now, or when to ask again, or None for no work.

    The caller holds the machine's lock.
    """
    workflow = active_workflow(session, machine.id)
    if workflow is None or not any(iface.allow_workflow for iface in machine.interfaces):
        return None
    if workflow.state in (WorkflowState.PENDING.value, WorkflowState.PREPARING.value):
        if waits_for_bmc(workflow, machine) and power_job_running(session, workflow):
            return now + dt.timedelta(seconds=POWER_WAIT_SECONDS)
        start(session, workflow, machine, now)
    if workflow.state != WorkflowState.RUNNING.value:
        return None
    actions = current_actions(workflow)
    action = first_unfinished(actions)
    if action is None:
        return None
    if action.state == ActionState.RUNNING.value:
        return assignment(action, latest_attempt(session, action), len(actions))
    if action.not_before is not None and action.not_before > now:
        return action.not_before
    move_action(action, ActionEvent.START)
    action.attempts += 1
    action.started_at = now
    action.finished_at = None
    action.not_before = None
    action.deadline = now + dt.timedelta(seconds=action.timeout) if action.timeout else None
    attempt = ActionAttempt(
        action_id=action.id, number=action.attempts, state=ActionState.RUNNING.value, started_at=now
    )
    session.add(attempt)
    session.flush()
    emit(
        session,
        workflow,
        machine,
        "workflow.action.started",
        action=action.name,
        task=action.task_name,
        index=action.position,
        total=len(actions),
        attempt=attempt.number,
        image=action.image,
    )
    return assignment(action, attempt, len(actions))


def attempt_for(session: Session, machine: Machine, attempt_id: int) -> ActionAttempt:
    """The attempt, loaded fresh after the caller locked its machine."""
    attempt = session.scalar(
        select(ActionAttempt)
        .where(ActionAttempt.id == attempt_id)
        .options(joinedload(ActionAttempt.action).joinedload(WorkflowAction.workflow))
    )
    if attempt is None or attempt.action.workflow.machine_id != machine.id:
        raise NotFound(f"action {attempt_id} not found for machine {machine.name}", field="id")
    return attempt


def report(
    session: Session,
    machine: Machine,
    attempt_id: int,
    *,
    status: ActionState,
    exit_code: int | None,
    message: str | None,
    now: dt.datetime,
) -> ActionAttempt:
    """Apply an agent's report; the same report twice changes nothing the second time.

    The caller holds the machine's lock, which serialises every change to its workflows.
    """
    attempt = attempt_for(session, machine, attempt_id)
    action = attempt.action
    workflow = action.workflow
    if status is ActionState.RUNNING:
        return attempt
    if attempt.state != ActionState.RUNNING.value:
        if attempt.state == status.value:
            return attempt
        raise Conflict(
            f"action {attempt_id} already ended as {attempt.state}; it cannot become {status}",
            field="status",
        )
    if attempt.number != action.attempts or action.state != ActionState.RUNNING.value:
        raise Conflict(f"action {attempt_id} is not the running attempt", field="id")
    finish_attempt(session, workflow, machine, action, attempt, status, exit_code, message, now)
    return attempt


def append_logs(
    session: Session, machine: Machine, attempt_id: int, *, seq: int, lines: list[str]
) -> int:
    """Keep the last lines of each attempt; `seq` (index of the first line) makes resends no-ops."""
    attempt = attempt_for(session, machine, attempt_id)
    skip = max(0, attempt.log_lines - seq)
    if seq > attempt.log_lines:
        raise Conflict(
            f"log lines {attempt.log_lines}..{seq - 1} of action {attempt_id} are missing;"
            f" resend from seq {attempt.log_lines}",
            field="seq",
        )
    new = lines[skip:]
    if not new:
        return attempt.log_lines
    attempt.log_tail = (list(attempt.log_tail) + new)[-LOG_TAIL_LINES:]
    attempt.log_lines += len(new)
    action = attempt.action
    events.record(
        session,
        "workflow.action.log",
        machine_id=machine.id,
        machine_name=machine.name,
        workflow_id=action.workflow_id,
        action=action.name,
        attempt=attempt.number,
        lines=new[-50:],
    )
    return attempt.log_lines


def hello(session: Session, machine: Machine, mac: str, attributes: dict[str, Any]) -> None:
    if mac not in {iface.mac for iface in machine.interfaces}:
        raise Invalid(f"MAC {mac} is not an interface of machine {machine.name}", field="mac")
    machine.attributes = attributes
    events.record(
        session,
        "agent.hello",
        machine_id=machine.id,
        machine_name=machine.name,
        mac=mac,
        attributes=sorted(attributes),
    )


def run_record(session: Session, workflow_id: str) -> RunRecord | None:
    """What boot and run tokens are checked against; one primary-key read."""
    row = session.execute(
        select(
            Workflow.machine_id,
            Workflow.state,
            Workflow.starts,
            Workflow.boot_token_issued,
            Workflow.agent_key_hash,
        ).where(Workflow.id == workflow_id)
    ).one_or_none()
    if row is None:
        return None
    return RunRecord(
        machine_id=row.machine_id,
        active=row.state in ACTIVE,
        start=row.starts,
        exchanged_ms=row.boot_token_issued,
        agent_key_hash=row.agent_key_hash,
    )


def exchange_boot_token(
    session: Session,
    machine: Machine,
    claim: BootClaim,
    key_hash: str | None,
    *,
    remote: str,
    now: float,
) -> RunClaim | Refused:
    """The run token for this boot token, its exchange recorded, or why not; either way an event
    with the caller's address. The caller holds the machine's lock, so two exchanges of one
    token cannot both be first."""
    record = run_record(session, claim.workflow_id)
    decision = exchange(claim, record, key_hash, now)
    ids = {"machine_id": machine.id, "machine_name": machine.name, "workflow_id": claim.workflow_id}
    if isinstance(decision, Refused):
        reason = decision.reason
        events.record(
            session, "agent.token.refused", **ids, remote=remote, start=claim.start, reason=reason
        )
        return decision
    again = record is not None and record.exchanged_ms == claim.issued_ms
    workflow = session.get(Workflow, claim.workflow_id)
    if not again and workflow is not None:
        workflow.boot_token_issued = claim.issued_ms
        workflow.agent_key_hash = key_hash
    events.record(
        session, "agent.token.exchanged", **ids, remote=remote, start=decision.start, again=again
    )
    return decision
