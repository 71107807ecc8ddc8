"""Machines API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.errors import Invalid
from metalflow.inventory import service
from metalflow.inventory.lifecycle import MachineEvent
from metalflow.inventory.schemas import (
    AgentToken,
    MachineList,
    MachinePublic,
    TransitionRequest,
)
from metalflow.inventory.tables import Machine
from metalflow.names import check_name
from metalflow.services import Reader, ServicesDep, Writer
from metalflow.workflows import service as workflows

router = APIRouter(prefix="/machines", tags=["machines"])


def public(session: Session, machine: Machine) -> MachinePublic:
    active = workflows.active_workflow_ids(session, [machine.id])
    return service.to_public(machine, active.get(machine.id))


def _labels(raw: list[str]) -> dict[str, str]:
    labels = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Invalid(f"label filter {item!r} must be key=value", field="label")
        labels[key] = value
    return labels


@router.get("", response_model=MachineList)
def list_machines(
    services: ServicesDep,
    _: Reader,
    state: str | None = None,
    label: list[str] = Query(default_factory=list),  # noqa: B008
) -> MachineList:
    with services.db.read() as session:
        machines = service.list_machines(session, state=state, labels=_labels(label))
        active = workflows.active_workflow_ids(session, [m.id for m in machines])
        items = [service.to_public(m, active.get(m.id)) for m in machines]
    return MachineList(items=items, count=len(items))


@router.get("/{name}", response_model=MachinePublic)
def show_machine(name: str, services: ServicesDep, _: Reader) -> MachinePublic:
    with services.db.read() as session:
        return public(session, service.get_machine(session, name))


@router.delete("/{name}", status_code=204)
def delete_machine(name: str, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        machine = service.lock(session, service.get_machine(session, name))
        service.delete_machine(session, machine)
    services.auth.forget(machine.id)
    return Response(status_code=204)


@router.post("/{name}/transition", response_model=MachinePublic)
def transition_machine(
    name: str, body: TransitionRequest, services: ServicesDep, _: Writer
) -> MachinePublic:
    with services.db.write() as session:
        machine = service.lock(session, service.get_machine(session, name))
        service.operator_transition(session, machine, body.event, body.reason)
        return public(session, machine)


@router.post("/{name}/agent-token")
def agent_token(name: str, services: ServicesDep, _: Writer) -> AgentToken:
    with services.db.read() as session:
        machine = service.get_machine(session, name)
        return AgentToken(
            token=services.keyring.agent_token(machine.id, machine.agent_token_generation)
        )


@router.post("/{name}/agent-token/rotate")
def rotate_agent_token(name: str, services: ServicesDep, _: Writer) -> AgentToken:
    """Revoke the machine's current agent token and return the new one."""
    with services.db.write() as session:
        machine = service.get_machine(session, name)
        machine.agent_token_generation += 1
        token = services.keyring.agent_token(machine.id, machine.agent_token_generation)
        events.record(
            session, "machine.token_rotated", machine_id=machine.id, machine_name=machine.name
        )
    services.auth.forget(machine.id)
    return AgentToken(token=token)


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


@router.post("/{name}/provision", status_code=201)
def provision(
    name: str, body: ProvisionRequest, services: ServicesDep, _: Writer
) -> dict[str, Any]:
    with services.db.write() as session:
        machine = service.get_machine(session, name)
        power = body.power if body.power is not None else machine.bmc_driver is not None
        workflow = workflows.create_workflow(
            session,
            machine=machine,
            template_name=body.template,
            hardware_map=body.hardware_map,
            name=body.name,
            boot=workflows.NETBOOT_MODE if power else None,
            reboot=body.reboot,
        )
        return workflows.to_public(workflow, machine.name)


@router.post("/{name}/deprovision")
def deprovision(
    name: str, body: DeprovisionRequest, services: ServicesDep, _: Writer
) -> dict[str, Any]:
    """With a template (e.g. a disk wipe), run it; without, release the machine at once."""
    with services.db.write() as session:
        machine = service.get_machine(session, name)
        workflow_out = None
        if body.template is not None:
            workflow = workflows.create_workflow(
                session, machine=machine, template_name=body.template, kind="deprovision"
            )
            workflow_out = workflows.to_public(workflow, machine.name)
        else:
            machine = service.lock(session, machine)
            service.transition(session, machine, MachineEvent.DEPROVISION)
            service.transition(session, machine, MachineEvent.DEPROVISIONED)
            service.set_netboot(machine, False)
        return {
            "machine": public(session, machine).model_dump(by_alias=True),
            "workflow": workflow_out,
        }
