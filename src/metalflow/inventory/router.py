"""Machines API."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.errors import Invalid
from metalflow.inventory import service
from metalflow.inventory.schemas import AgentToken, MachineList, MachinePublic, TransitionRequest
from metalflow.inventory.tables import Machine
from metalflow.services import Reader, ServicesDep, Writer
from metalflow.workflows import engine as workflows

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
