"""A machine's provision and deprovision: the machines API's verbs that start workflows; a
tenant's for the machines of its projects (policy.Action.PROVISION)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, field_validator

from metalflow.inventory import service as inventory
from metalflow.inventory.lifecycle import MachineEvent
from metalflow.names import check_name
from metalflow.services import ProjectWriter, ServicesDep, note_audit
from metalflow.tenancy import policy
from metalflow.workflows import engine
from metalflow.workflows.schemas import Deprovisioned, WorkflowPublic, to_public

router = APIRouter(prefix="/machines", tags=["machines"])


class ProvisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str
    hardware_map: dict[str, str] | None = None
    name: str | None = None
    power: bool | None = None
    """Power the machine into PXE through its BMC (default: when it has one)."""
    reboot: bool = False
    """After the workflow, reboot the machine into its disk through the BMC."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "name")


class DeprovisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str | None = None


@router.post("/{name}/provision", status_code=201, response_model=WorkflowPublic)
def provision(
    name: str,
    body: ProvisionRequest,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> WorkflowPublic:
    with services.db.write() as session:
        machine = inventory.get_machine_for(session, name, principal, policy.Action.PROVISION)
        power = body.power if body.power is not None else machine.bmc_driver is not None
        workflow = engine.create_workflow(
            session,
            machine=machine,
            template_name=body.template,
            hardware_map=body.hardware_map,
            name=body.name,
            boot=engine.NETBOOT_MODE if power else None,
            reboot=body.reboot,
        )
        note_audit(
            request,
            "workflow",
            workflow.id,
            project_id=machine.project_id,
            summary={"machine": machine.name, "template": body.template, "kind": workflow.kind},
        )
        return to_public(workflow, machine.name)


@router.post("/{name}/deprovision", response_model=Deprovisioned)
def deprovision(
    name: str,
    body: DeprovisionRequest,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> Deprovisioned:
    """With a template (e.g. a disk wipe), run it; without, release the machine at once."""
    with services.db.write() as session:
        machine = inventory.get_machine_for(session, name, principal, policy.Action.PROVISION)
        before = machine.state
        workflow_out = None
        if body.template is not None:
            workflow = engine.create_workflow(
                session, machine=machine, template_name=body.template, kind="deprovision"
            )
            workflow_out = to_public(workflow, machine.name)
        else:
            machine = inventory.lock(session, machine)
            inventory.transition(session, machine, MachineEvent.DEPROVISION)
            inventory.transition(session, machine, MachineEvent.DEPROVISIONED)
            inventory.set_netboot(machine, False)
        note_audit(
            request,
            "machine",
            machine.id,
            project_id=machine.project_id,
            summary={
                "name": machine.name,
                "before": before,
                "after": machine.state,
                "workflow": None if workflow_out is None else workflow_out.id,
            },
        )
        active = engine.active_workflow_ids(session, [machine.id])
        return Deprovisioned(
            machine=inventory.to_public(machine, active.get(machine.id)), workflow=workflow_out
        )
