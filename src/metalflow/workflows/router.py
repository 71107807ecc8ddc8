"""Workflows API: create, list, show (with the journal), cancel, resume, re-run, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy.orm import Session

from metalflow.db.base import utcnow
from metalflow.errors import Conflict
from metalflow.inventory import service as inventory
from metalflow.names import check_name
from metalflow.services import Reader, ServicesDep, Writer
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


@router.post("", status_code=201, response_model=WorkflowPublic)
def create_workflow(body: WorkflowCreate, services: ServicesDep, _: Writer) -> WorkflowPublic:
    with services.db.write() as session:
        machine = inventory.get_machine(session, body.machine)
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
        return to_public(workflow, machine.name)


@router.get("", response_model=WorkflowList)
def list_workflows(
    services: ServicesDep, _: Reader, machine: str | None = None, state: str | None = None
) -> WorkflowList:
    with services.db.read() as session:
        machine_row = inventory.get_machine(session, machine) if machine else None
        names = inventory.machine_names(session)
        rows = engine.list_workflows(session, machine=machine_row, state=state)
        items = [to_public(w, names.get(w.machine_id, "?")) for w in rows]
    return WorkflowList(items=items, count=len(items))


@router.get("/{ref}", response_model=WorkflowPublic)
def show_workflow(
    ref: str, services: ServicesDep, _: Reader, history: bool = True
) -> WorkflowPublic:
    with services.db.read() as session:
        return _public(session, engine.get_workflow(session, ref), history=history)


@router.post("/{ref}/cancel", response_model=WorkflowPublic)
def cancel_workflow(ref: str, services: ServicesDep, _: Writer) -> WorkflowPublic:
    with services.db.write() as session:
        workflow, machine = engine.lock_workflow(session, ref)
        engine.cancel(session, workflow, machine, utcnow())
        return _public(session, workflow)


@router.post("/{ref}/resume", response_model=WorkflowPublic)
def resume_workflow(ref: str, services: ServicesDep, _: Writer) -> WorkflowPublic:
    with services.db.write() as session:
        workflow, machine = engine.lock_workflow(session, ref)
        engine.resume(session, workflow, machine, utcnow())
        return _public(session, workflow)


@router.post("/{ref}/rerun", response_model=WorkflowPublic)
def rerun_workflow(ref: str, services: ServicesDep, _: Writer) -> WorkflowPublic:
    with services.db.write() as session:
        workflow, machine = engine.lock_workflow(session, ref)
        engine.rerun(session, workflow, machine)
        return _public(session, workflow)


@router.delete("/{ref}", status_code=204)
def delete_workflow(ref: str, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        workflow, _machine = engine.lock_workflow(session, ref)
        if WorkflowState(workflow.state) not in FINAL_WORKFLOW_STATES:
            raise Conflict(
                f"workflow {workflow.name} is {workflow.state}; cancel it first", field="state"
            )
        session.delete(workflow)
    return Response(status_code=204)
