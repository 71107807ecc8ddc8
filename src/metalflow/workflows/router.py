"""Workflows API: create, list, show (with the journal), cancel, resume, re-run, delete.

A tenant sees the workflows of its projects' machines since each machine was assigned to it,
and drives them with policy.Action.PROVISION: creating one from an existing template is what
`POST /machines/NAME/provision` does, so it takes the same right. Deleting a workflow stays the
provider's: it erases the record of what ran on the provider's hardware, which a tenant's
clean-up should not.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy.orm import Session

from metalflow.db.base import utcnow
from metalflow.errors import Conflict, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.names import check_name
from metalflow.services import (
    ProjectReader,
    ProjectWriter,
    ServicesDep,
    Writer,
    note_audit,
    require,
)
from metalflow.services import visible as visible_projects
from metalflow.tenancy import policy
from metalflow.tenancy.auth import Principal
from metalflow.workflows import engine
from metalflow.workflows.schemas import WorkflowList, WorkflowPublic, to_public
from metalflow.workflows.states import FINAL_WORKFLOW_STATES, WorkflowState
from metalflow.workflows.tables import Workflow

router = APIRouter(prefix="/workflows", tags=["workflows"])


class WorkflowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machine: str
    template: str
    hardware_map: dict[str, str] | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "name")

    kind: str = "provision"
    boot: str | None = None
    """`netboot`: the machine's BMC powers it into PXE first, and to its disk after."""
    reboot: bool = False


def _public(session: Session, workflow: Workflow, *, history: bool = False) -> WorkflowPublic:
    machine = inventory.get_machine_by_id(session, workflow.machine_id)
    return to_public(workflow, machine.name, history=history)


def _check(
    session: Session,
    ref: str,
    workflow: Workflow,
    machine: Machine,
    principal: Principal,
    action: policy.Action,
) -> None:
    """A tenant asking for a workflow of another project's machine, or of its machine before
    the machine was its, gets the 404 of a workflow that does not exist."""
    missing = NotFound(f"workflow {ref!r} not found", field="workflow")
    require(principal, action, machine.project_id, missing=missing)
    since = inventory.tenant_since(principal, machine)
    if since is not None and workflow.created_at < since:
        raise missing


def _locked(
    session: Session, ref: str, principal: Principal, action: policy.Action
) -> tuple[Workflow, Machine]:
    workflow, machine = engine.lock_workflow(session, ref)
    _check(session, ref, workflow, machine, principal, action)
    return workflow, machine


def _audit(request: Request, workflow: Workflow, machine: Machine, before: str | None) -> None:
    note_audit(
        request,
        "workflow",
        workflow.id,
        project_id=machine.project_id,
        summary={"machine": machine.name, "before": before, "after": workflow.state},
    )


@router.post("", status_code=201, response_model=WorkflowPublic)
def create_workflow(
    body: WorkflowCreate, request: Request, services: ServicesDep, principal: ProjectWriter
) -> WorkflowPublic:
    with services.db.write() as session:
        machine = inventory.get_machine_for(
            session, body.machine, principal, policy.Action.PROVISION
        )
        workflow = engine.create_workflow(
            session,
            machine=machine,
            template_name=body.template,
            hardware_map=body.hardware_map,
            name=body.name,
            kind=body.kind,
            boot=body.boot,
            reboot=body.reboot,
        )
        _audit(request, workflow, machine, None)
        return to_public(workflow, machine.name)


@router.get("", response_model=WorkflowList)
def list_workflows(
    services: ServicesDep,
    principal: ProjectReader,
    machine: str | None = None,
    state: str | None = None,
) -> WorkflowList:
    projects = visible_projects(principal)
    with services.db.read() as session:
        machine_row = (
            inventory.get_machine_for(session, machine, principal, policy.Action.READ)
            if machine
            else None
        )
        names = inventory.machine_names(session)
        if projects is None:
            rows = engine.list_workflows(session, machine=machine_row, state=state)
        else:
            since = inventory.assigned_since(session, projects)
            rows = [
                w
                for w in engine.list_workflows(
                    session, machine=machine_row, state=state, machine_ids=list(since)
                )
                if (bound := since.get(w.machine_id)) is None or w.created_at >= bound
            ]
        items = [to_public(w, names.get(w.machine_id, "?")) for w in rows]
    return WorkflowList(items=items, count=len(items))


@router.get("/{ref}", response_model=WorkflowPublic)
def show_workflow(
    ref: str, services: ServicesDep, principal: ProjectReader, history: bool = True
) -> WorkflowPublic:
    with services.db.read() as session:
        workflow = engine.get_workflow(session, ref)
        machine = inventory.get_machine_by_id(session, workflow.machine_id)
        _check(session, ref, workflow, machine, principal, policy.Action.READ)
        return to_public(workflow, machine.name, history=history)


@router.post("/{ref}/cancel", response_model=WorkflowPublic)
def cancel_workflow(
    ref: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> WorkflowPublic:
    with services.db.write() as session:
        workflow, machine = _locked(session, ref, principal, policy.Action.PROVISION)
        before = workflow.state
        engine.cancel(session, workflow, machine, utcnow())
        _audit(request, workflow, machine, before)
        return _public(session, workflow)


@router.post("/{ref}/resume", response_model=WorkflowPublic)
def resume_workflow(
    ref: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> WorkflowPublic:
    with services.db.write() as session:
        workflow, machine = _locked(session, ref, principal, policy.Action.PROVISION)
        before = workflow.state
        engine.resume(session, workflow, machine, utcnow())
        _audit(request, workflow, machine, before)
        return _public(session, workflow)


@router.post("/{ref}/rerun", response_model=WorkflowPublic)
def rerun_workflow(
    ref: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> WorkflowPublic:
    with services.db.write() as session:
        workflow, machine = _locked(session, ref, principal, policy.Action.PROVISION)
        before = workflow.state
        engine.rerun(session, workflow, machine)
        _audit(request, workflow, machine, before)
        return _public(session, workflow)


@router.delete("/{ref}", status_code=204)
def delete_workflow(ref: str, request: Request, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        workflow, machine = engine.lock_workflow(session, ref)
        if WorkflowState(workflow.state) not in FINAL_WORKFLOW_STATES:
            raise Conflict(
                f"workflow {workflow.name} is {workflow.state}; cancel it first", field="state"
            )
        _audit(request, workflow, machine, workflow.state)
        session.delete(workflow)
    return Response(status_code=204)
