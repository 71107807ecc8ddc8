"""Workflow engine: create, start, retry, time out, cancel, resume, re-run, and what a workflow's
power jobs change.

All state lives in the database, so a restarted server picks up exactly where it stopped: an
action that was running is served again to the agent that asks. Transitions go through the tables
in `states.py`; every change records an event in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.db.base import utcnow
from metalflow.errors import Conflict, Invalid, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.lifecycle import MachineEvent
from metalflow.inventory.tables import Machine
from metalflow.power import service as power
from metalflow.power.driver import known_driver
from metalflow.power.states import PowerJobState
from metalflow.power.steps import NETBOOT, boot_from_disk
from metalflow.power.tables import PowerJob
from metalflow.statemachine import IllegalTransition
from metalflow.templates import ActionSpec, TemplateError, WorkflowSpec, render_template
from metalflow.templates.service import get_template, template_error
from metalflow.workflows.states import (
    ACTION,
    ACTIVE_WORKFLOW_STATES,
    WORKFLOW,
    ActionEvent,
    ActionState,
    GiveUp,
    WorkflowEvent,
    WorkflowState,
    after_failed_attempt,
)
from metalflow.workflows.tables import ACTIVE, ActionAttempt, Workflow, WorkflowAction

KINDS = ("provision", "deprovision")
NETBOOT_MODE = "netboot"
_START_EVENT = {"provision": MachineEvent.PROVISION, "deprovision": MachineEvent.DEPROVISION}
_DONE_EVENT = {"provision": MachineEvent.PROVISIONED, "deprovision": MachineEvent.DEPROVISIONED}


def _move(workflow: Workflow, event: WorkflowEvent) -> None:
    try:
        workflow.state = WORKFLOW.next(WorkflowState(workflow.state), event).value
    except IllegalTransition as exc:
        raise Conflict(f"workflow {workflow.name}: {exc}", field="state") from exc


def move_action(action: WorkflowAction, event: ActionEvent) -> None:
    try:
        action.state = ACTION.next(ActionState(action.state), event).value
    except IllegalTransition as exc:
        raise Conflict(f"action {action.name}: {exc}", field="state") from exc


def emit(session: Session, workflow: Workflow, machine: Machine, kind: str, /, **data: Any) -> None:
    events.record(
        session,
        kind,
        machine_id=machine.id,
        machine_name=machine.name,
        workflow_id=workflow.id,
        **data,
    )


MIN_ID_PREFIX = 8


def get_workflow(session: Session, ref: str) -> Workflow:
    """By id, name, or a unique id prefix of at least 8 characters (as `workflow list` shows)."""
    query = select(Workflow).where((Workflow.id == ref) | (Workflow.name == ref))
    workflow = session.scalar(query)
    if workflow is None and len(ref) >= MIN_ID_PREFIX:
        by_prefix = select(Workflow).where(Workflow.id.startswith(ref, autoescape=True)).limit(2)
        matches = list(session.scalars(by_prefix))
        if len(matches) > 1:
            raise Conflict(f"workflow id prefix {ref!r} is ambiguous; give more", field="workflow")
        workflow = matches[0] if matches else None
    if workflow is None:
        raise NotFound(f"workflow {ref!r} not found", field="workflow")
    return workflow


def lock_workflow(session: Session, ref: str) -> tuple[Workflow, Machine]:
    """The workflow and its machine, reloaded after taking the machine's lock."""
    workflow = get_workflow(session, ref)
    machine = inventory.lock_machine(session, workflow.machine_id)
    if machine is None:
        raise NotFound(f"workflow {ref!r} not found", field="workflow")
    return workflow, machine


def active_workflow(session: Session, machine_id: str) -> Workflow | None:
    query = select(Workflow).where(Workflow.machine_id == machine_id, Workflow.state.in_(ACTIVE))
    return session.scalar(query)


def active_workflow_ids(session: Session, machine_ids: list[str]) -> dict[str, str]:
    rows = session.execute(
        select(Workflow.machine_id, Workflow.id).where(
            Workflow.machine_id.in_(machine_ids), Workflow.state.in_(ACTIVE)
        )
    )
    return {machine_id: workflow_id for machine_id, workflow_id in rows}


def list_workflows(
    session: Session,
    *,
    machine: Machine | None = None,
    state: str | None = None,
    machine_ids: Collection[str] | None = None,
) -> list[Workflow]:
    """Newest first; `machine_ids`: only those of these machines (None: of every one)."""
    query = select(Workflow).order_by(Workflow.created_at.desc())
    if machine is not None:
        query = query.where(Workflow.machine_id == machine.id)
    if machine_ids is not None:
        query = query.where(Workflow.machine_id.in_(machine_ids))
    if state is not None:
        query = query.where(Workflow.state == state)
    return list(session.scalars(query))


def _render(template_data: str, machine: Machine, hardware_map: dict[str, str]) -> WorkflowSpec:
    try:
        spec = render_template(template_data, inventory.render_view(machine), hardware_map)
    except TemplateError as exc:
        raise template_error(exc, "template") from exc
    macs = {iface.mac for iface in machine.interfaces}
    for index, task in enumerate(spec.tasks):
        worker = task.worker.strip().lower()
        if worker not in macs and worker != machine.name:
            raise Invalid(
                f"tasks[{index}].worker renders to {task.worker!r}, which is neither a MAC of"
                f" machine {machine.name} nor its name; metalflow runs a workflow on one machine",
                field=f"tasks[{index}].worker",
            )
    return spec


def _action_rows(spec: WorkflowSpec, run: int) -> list[WorkflowAction]:
    return [
        WorkflowAction(run=run, position=position, state=ActionState.PENDING.value, **fields)
        for position, fields in enumerate(_spec_fields(spec))
    ]


def _spec_fields(spec: WorkflowSpec) -> list[dict[str, Any]]:
    """The rendered actions in order, as WorkflowAction columns."""
    return [
        {"task_name": task.name, "worker": task.worker, **_action_fields(action)}
        for task in spec.tasks
        for action in task.actions
    ]


def _action_fields(action: ActionSpec) -> dict[str, Any]:
    return {
        "name": action.name,
        "image": action.image,
        "command": list(action.command),
        "environment": dict(action.environment),
        "volumes": list(action.volumes),
        "pid": action.pid,
        "timeout": action.timeout,
        "retries": action.retries,
        "retry_backoff": action.retry_backoff,
        "terminal": action.terminal,
    }


def default_hardware_map(machine: Machine) -> dict[str, str]:
    if not machine.interfaces:
        raise Invalid(
            f"machine {machine.name} has no interfaces; give it one, or pass a hardware map",
            field="hardware_map",
        )
    return {"device_1": machine.interfaces[0].mac}


def create_workflow(
    session: Session,
    *,
    machine: Machine,
    template_name: str,
    hardware_map: dict[str, str] | None = None,
    name: str | None = None,
    kind: str = "provision",
    boot: str | None = None,
    reboot: bool = False,
) -> Workflow:
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if boot not in (None, NETBOOT_MODE):
        raise Invalid(f"boot must be {NETBOOT_MODE!r} or left out (got {boot!r})", field="boot")
    machine = inventory.lock(session, machine)
    if boot is not None and not machine.bmc_driver:
        raise Invalid(
            f"boot: {boot} powers the machine through its BMC, and machine {machine.name} has"
            " none: add spec.bmc, or leave boot out and power it on yourself",
            field="boot",
        )
    running = active_workflow(session, machine.id)
    if running is not None:
        raise Conflict(
            f"machine {machine.name} already runs workflow {running.name} ({running.state});"
            " cancel it first",
            field="machine",
        )
    if name is not None and session.scalar(select(Workflow.id).where(Workflow.name == name)):
        raise Conflict(f"workflow {name!r} already exists", field="name")
    template = get_template(session, template_name)
    hardware_map = hardware_map or default_hardware_map(machine)
    spec = _render(template.data, machine, hardware_map)
    workflow_id = uuid.uuid4().hex
    inventory.transition(session, machine, _START_EVENT[kind], workflow_id=workflow_id)
    inventory.set_netboot(machine, True)
    workflow = Workflow(
        id=workflow_id,
        name=name or workflow_id,
        machine_id=machine.id,
        template_name=template.name,
        template_data=template.data,
        hardware_map=hardware_map,
        kind=kind,
        state=WorkflowState.PENDING.value,
        run=1,
        starts=1,
        global_timeout=spec.global_timeout,
        boot_options={"mode": boot, "reboot": reboot} if boot else {},
        actions=_action_rows(spec, 1),
    )
    session.add(workflow)
    session.flush()
    emit(
        session,
        workflow,
        machine,
        "workflow.created",
        template=template.name,
        kind=kind,
        actions=len(workflow.actions),
    )
    _power_into_netboot(session, workflow, machine)
    return workflow


def current_actions(workflow: Workflow) -> list[WorkflowAction]:
    return [action for action in workflow.actions if action.run == workflow.run]


def first_unfinished(actions: list[WorkflowAction]) -> WorkflowAction | None:
    return next((a for a in actions if a.state != ActionState.SUCCESS.value), None)


def _current_action(workflow: Workflow) -> WorkflowAction | None:
    return first_unfinished(current_actions(workflow))


def start(session: Session, workflow: Workflow, machine: Machine, now: dt.datetime) -> None:
    """PENDING (or PREPARING, the BMC's netboot job done) → RUNNING."""
    if workflow.state == WorkflowState.PENDING.value:
        _move(workflow, WorkflowEvent.PREPARE)
    _move(workflow, WorkflowEvent.RUN)
    workflow.started_at = now
    workflow.finished_at = None
    workflow.deadline = (
        now + dt.timedelta(seconds=workflow.global_timeout) if workflow.global_timeout else None
    )
    emit(session, workflow, machine, "workflow.started", run=workflow.run)


def _uses_bmc(workflow: Workflow) -> bool:
    return (workflow.boot_options or {}).get("mode") == NETBOOT_MODE


def waits_for_bmc(workflow: Workflow, machine: Machine) -> bool:
    """Some drivers' jobs (`manual`'s) only record what an operator is asked to do: the workflow
    goes on without waiting for them."""
    if not _uses_bmc(workflow):
        return False
    driver = known_driver(machine.bmc_driver or "")
    return driver is None or driver.holds_workflows


def _power_into_netboot(session: Session, workflow: Workflow, machine: Machine) -> None:
    """With `boot: netboot`, the BMC powers the machine off, sets PXE once and powers it on;
    a PENDING workflow waits in PREPARING until the agent on the booted machine asks."""
    if not _uses_bmc(workflow):
        return
    if workflow.state == WorkflowState.PENDING.value:
        _move(workflow, WorkflowEvent.PREPARE)
    power.enqueue(
        session,
        machine,
        NETBOOT_MODE,
        NETBOOT,
        workflow_id=workflow.id,
        requested_by=f"workflow {workflow.name}",
    )


def power_job_running(session: Session, workflow: Workflow) -> bool:
    query = select(PowerJob.id).where(
        PowerJob.workflow_id == workflow.id, PowerJob.state.in_(power.UNFINISHED)
    )
    return session.scalar(query) is not None


def power_job_finished(session: Session, job: PowerJob) -> None:
    """A workflow's power job ended: a failure fails the workflow with the BMC's words; the
    boot-from-disk job's success ends POST; a job no workflow asked for changes nothing."""
    if job.workflow_id is None:
        return
    workflow = session.get(Workflow, job.workflow_id)
    if workflow is None or WorkflowState(workflow.state) not in ACTIVE_WORKFLOW_STATES:
        return
    machine = inventory.lock(session, inventory.get_machine_by_id(session, workflow.machine_id))
    now = utcnow()
    if job.state != PowerJobState.SUCCEEDED:
        _stop_current_action(session, workflow, ActionState.CANCELLED, "BMC failure", now)
        _end(session, workflow, machine, WorkflowEvent.FAIL, f"BMC: {job.message}", now)
    elif workflow.state == WorkflowState.POST.value:
        _succeed(session, workflow, machine, now)


def latest_attempt(session: Session, action: WorkflowAction) -> ActionAttempt:
    attempt = session.scalar(
        select(ActionAttempt).where(
            ActionAttempt.action_id == action.id, ActionAttempt.number == action.attempts
        )
    )
    if attempt is None:
        raise Conflict(f"action {action.name} has no attempt yet", field="id")
    return attempt


def finish_attempt(
    session: Session,
    workflow: Workflow,
    machine: Machine,
    action: WorkflowAction,
    attempt: ActionAttempt,
    status: ActionState,
    exit_code: int | None,
    message: str | None,
    now: dt.datetime,
) -> None:
    attempt.state = status.value
    attempt.finished_at = now
    attempt.exit_code = exit_code
    attempt.message = message
    action.finished_at = now
    action.deadline = None
    action.exit_code = exit_code
    action.message = message
    duration = (now - attempt.started_at).total_seconds()
    common = {"action": action.name, "index": action.position, "attempt": attempt.number}
    if status is ActionState.SUCCESS:
        move_action(action, ActionEvent.SUCCEED)
        emit(session, workflow, machine, "workflow.action.succeeded", duration=duration, **common)
        if _current_action(workflow) is None:
            _complete(session, workflow, machine, now)
        return
    move_action(action, ActionEvent.TIME_OUT if status is ActionState.TIMEOUT else ActionEvent.FAIL)
    emit(
        session,
        workflow,
        machine,
        "workflow.action.failed",
        state=status.value,
        exit_code=exit_code,
        message=message,
        duration=duration,
        **common,
    )
    decision = after_failed_attempt(
        outcome=status,
        attempts=action.attempts - action.budget_start,
        retries=action.retries,
        backoff=action.retry_backoff,
        now=now,
    )
    if isinstance(decision, GiveUp):
        detail = f": {message}" if message else ""
        exit_text = f" (exit {exit_code})" if exit_code is not None else ""
        reason = f"action {action.name} {status.value.lower()}{exit_text}{detail}"
        event = (
            WorkflowEvent.TIME_OUT
            if decision.state is WorkflowState.TIMEOUT
            else WorkflowEvent.FAIL
        )
        _end(session, workflow, machine, event, reason, now)
        return
    move_action(action, ActionEvent.RETRY)
    action.not_before = decision.not_before
    emit(
        session,
        workflow,
        machine,
        "workflow.action.retrying",
        not_before=decision.not_before.isoformat(),
        **common,
    )


def _complete(session: Session, workflow: Workflow, machine: Machine, now: dt.datetime) -> None:
    """RUNNING → POST → SUCCESS; the machine leaves netboot so it next boots its disk. With
    `boot: netboot` the BMC first sets the disk as boot device (and reboots, if asked): the
    workflow stays in POST until that job is done."""
    _move(workflow, WorkflowEvent.FINISH)
    inventory.set_netboot(machine, False)
    if _uses_bmc(workflow) and machine.bmc_driver:  # (its BMC may have been removed since)
        steps = boot_from_disk(machine.uefi, bool(workflow.boot_options.get("reboot")))
        power.enqueue(
            session,
            machine,
            "boot-disk",
            steps,
            workflow_id=workflow.id,
            requested_by=f"workflow {workflow.name}",
        )
        if waits_for_bmc(workflow, machine):
            return
    _succeed(session, workflow, machine, now)


def _succeed(session: Session, workflow: Workflow, machine: Machine, now: dt.datetime) -> None:
    _move(workflow, WorkflowEvent.SUCCEED)
    workflow.finished_at = now
    workflow.deadline = None
    workflow.reason = None
    inventory.transition(session, machine, _DONE_EVENT[workflow.kind], workflow_id=workflow.id)
    duration = (now - workflow.started_at).total_seconds() if workflow.started_at else None
    emit(session, workflow, machine, "workflow.succeeded", run=workflow.run, duration=duration)


def _end(
    session: Session,
    workflow: Workflow,
    machine: Machine,
    event: WorkflowEvent,
    reason: str,
    now: dt.datetime,
) -> None:
    _move(workflow, event)
    workflow.reason = reason
    workflow.finished_at = now
    workflow.deadline = None
    inventory.transition(
        session, machine, MachineEvent.FAIL, reason=reason, workflow_id=workflow.id
    )
    emit(session, workflow, machine, f"workflow.{workflow.state.lower()}", reason=reason)


def _stop_current_action(
    session: Session, workflow: Workflow, state: ActionState, message: str, now: dt.datetime
) -> None:
    """End the running action of a run that ends as a whole; an action waiting out a retry's
    backoff is cancelled, so a resume retries it afresh."""
    action = _current_action(workflow)
    if action is None:
        return
    if action.state == ActionState.RUNNING.value:
        attempt = latest_attempt(session, action)
        attempt.state = state.value
        attempt.finished_at = now
        attempt.message = message
        action.finished_at = now
        action.deadline = None
        event = ActionEvent.CANCEL if state is ActionState.CANCELLED else ActionEvent.TIME_OUT
        move_action(action, event)
    elif action.state == ActionState.PENDING.value and action.attempts:
        action.not_before = None
        move_action(action, ActionEvent.CANCEL)


def cancel(session: Session, workflow: Workflow, machine: Machine, now: dt.datetime) -> None:
    if WorkflowState(workflow.state) not in ACTIVE_WORKFLOW_STATES:
        raise Conflict(
            f"workflow {workflow.name} is {workflow.state}; nothing to cancel", field="state"
        )
    _stop_current_action(session, workflow, ActionState.CANCELLED, "cancelled by operator", now)
    _end(session, workflow, machine, WorkflowEvent.CANCEL, "cancelled by operator", now)
    for job in session.scalars(
        select(PowerJob).where(
            PowerJob.workflow_id == workflow.id, PowerJob.state.in_(power.UNFINISHED)
        )
    ):
        power.cancel(session, job)


def _restart_machine(session: Session, workflow: Workflow, machine: Machine) -> None:
    """A new start of the workflow: the run tokens of the previous one stop working."""
    workflow.starts += 1
    inventory.transition(session, machine, _START_EVENT[workflow.kind], workflow_id=workflow.id)
    inventory.set_netboot(machine, True)
    _power_into_netboot(session, workflow, machine)


def _latest_template_data(session: Session, workflow: Workflow) -> str:
    """The template as it is now (an operator may have fixed it), else the workflow's copy."""
    try:
        return get_template(session, workflow.template_name).data
    except NotFound:
        return workflow.template_data


def resume(session: Session, workflow: Workflow, machine: Machine, now: dt.datetime) -> None:
    """Continue a failed run from its failed action, with the template as it is now."""
    other = active_workflow(session, machine.id)
    if other is not None and other.id != workflow.id:
        raise Conflict(f"machine {machine.name} runs workflow {other.name}", field="machine")
    _move(workflow, WorkflowEvent.RESUME)
    actions = current_actions(workflow)
    failed = first_unfinished(actions)
    if failed is None:
        raise Conflict(f"workflow {workflow.name} has no unfinished action", field="state")
    data = _latest_template_data(session, workflow)
    spec = _render(data, machine, workflow.hardware_map)
    fresh = _action_rows(spec, workflow.run)
    if len(fresh) <= failed.position:
        raise Invalid(
            f"the template now has {len(fresh)} actions; resuming needs action"
            f" #{failed.position + 1} ({failed.name}); re-run the workflow instead",
            field="template",
        )
    for row in actions[failed.position + 1 :]:
        workflow.actions.remove(row)
    for key, value in _spec_fields(spec)[failed.position].items():
        setattr(failed, key, value)
    if failed.state != ActionState.PENDING.value:
        move_action(failed, ActionEvent.RETRY)
    failed.budget_start = failed.attempts
    failed.not_before = None
    workflow.actions.extend(fresh[failed.position + 1 :])
    template_changed = data != workflow.template_data
    workflow.template_data = data
    workflow.global_timeout = spec.global_timeout
    workflow.reason = None
    workflow.finished_at = None
    workflow.deadline = (
        now + dt.timedelta(seconds=workflow.global_timeout) if workflow.global_timeout else None
    )
    _restart_machine(session, workflow, machine)
    emit(
        session,
        workflow,
        machine,
        "workflow.resumed",
        action=failed.name,
        index=failed.position,
        template_changed=template_changed,
    )


def rerun(session: Session, workflow: Workflow, machine: Machine) -> None:
    """Start the whole workflow again as a new run; earlier runs stay in the history."""
    other = active_workflow(session, machine.id)
    if other is not None:
        raise Conflict(f"machine {machine.name} runs workflow {other.name}", field="machine")
    _move(workflow, WorkflowEvent.RERUN)
    data = _latest_template_data(session, workflow)
    spec = _render(data, machine, workflow.hardware_map)
    workflow.run += 1
    workflow.template_data = data
    workflow.global_timeout = spec.global_timeout
    workflow.actions.extend(_action_rows(spec, workflow.run))
    workflow.reason = None
    workflow.started_at = None
    workflow.finished_at = None
    workflow.deadline = None
    _restart_machine(session, workflow, machine)
    emit(session, workflow, machine, "workflow.rerun", run=workflow.run)
    session.flush()  # the new run's actions get their ids and defaults for the answer


def sweep(session: Session, now: dt.datetime, *, skip_locked: bool) -> int:
    """End what ran past its deadline: an action (then retry or fail) or a whole workflow.

    Candidates are found without locks, then each machine is locked (skipping machines another
    process holds; the next sweep gets them) and the deadline checked again under the lock.
    """
    late_actions = (
        select(Workflow.machine_id)
        .join(WorkflowAction)
        .where(WorkflowAction.state == ActionState.RUNNING.value, WorkflowAction.deadline < now)
    )
    late_workflows = select(Workflow.machine_id).where(
        Workflow.state.in_(ACTIVE), Workflow.deadline < now
    )
    machine_ids = set(session.scalars(late_actions)) | set(session.scalars(late_workflows))
    handled = 0
    for machine_id in sorted(machine_ids):
        machine = inventory.lock_machine(session, machine_id, skip_locked=skip_locked)
        workflow = active_workflow(session, machine_id) if machine is not None else None
        if machine is None or workflow is None:
            continue
        if workflow.deadline is not None and workflow.deadline < now:
            _stop_current_action(session, workflow, ActionState.TIMEOUT, "global timeout", now)
            reason = f"global timeout of {workflow.global_timeout}s exceeded"
            _end(session, workflow, machine, WorkflowEvent.TIME_OUT, reason, now)
            handled += 1
            continue
        action = _current_action(workflow)
        if (
            action is not None
            and action.state == ActionState.RUNNING.value
            and action.deadline is not None
            and action.deadline < now
        ):
            message = f"no report within the action timeout of {action.timeout}s"
            finish_attempt(
                session,
                workflow,
                machine,
                action,
                latest_attempt(session, action),
                ActionState.TIMEOUT,
                None,
                message,
                now,
            )
            handled += 1
    return handled
