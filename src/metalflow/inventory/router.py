"""Machines API: the provider sees and changes every machine; a tenant sees those assigned to
its projects, and every other one is a 404 like a machine that does not exist."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.db.base import utcnow
from metalflow.errors import Invalid
from metalflow.inventory import service
from metalflow.inventory.schemas import (
    AgentToken,
    MachineList,
    MachinePublic,
    ProjectAssignment,
    TransitionRequest,
)
from metalflow.inventory.tables import Machine
from metalflow.ipam import hosts
from metalflow.ipam import service as ipam
from metalflow.services import (
    ProjectReader,
    Services,
    ServicesDep,
    Writer,
    note_audit,
    visible,
)
from metalflow.tenancy import policy
from metalflow.tenancy.auth import Principal
from metalflow.workflows import engine as workflows

router = APIRouter(prefix="/machines", tags=["machines"])


def public(session: Session, machine: Machine, principal: Principal | None = None) -> MachinePublic:
    """The machine as `principal` may see it: a tenant is not shown the BMC (the provider's
    out-of-band network and credentials)."""
    active = workflows.active_workflow_ids(session, [machine.id])
    return _shown(service.to_public(machine, active.get(machine.id)), principal)


def _shown(machine: MachinePublic, principal: Principal | None) -> MachinePublic:
    if principal is None or visible(principal) is None:
        return machine
    return machine.model_copy(update={"bmc": None})


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
    principal: ProjectReader,
    state: str | None = None,
    label: list[str] = Query(default_factory=list),  # noqa: B008
    project: str | None = Query(None, description="only machines assigned to this project id"),
) -> MachineList:
    projects = visible(principal)
    if project is not None:
        wanted = frozenset({project})
        projects = wanted if projects is None else wanted & projects
    with services.db.read() as session:
        machines = service.list_machines(
            session, state=state, labels=_labels(label), projects=projects
        )
        active = workflows.active_workflow_ids(session, [m.id for m in machines])
        items = [_shown(service.to_public(m, active.get(m.id)), principal) for m in machines]
    return MachineList(items=items, count=len(items))


@router.get("/{name}", response_model=MachinePublic)
def show_machine(name: str, services: ServicesDep, principal: ProjectReader) -> MachinePublic:
    with services.db.read() as session:
        machine = service.get_machine_for(session, name, principal, policy.Action.READ)
        return public(session, machine, principal)


@router.put("/{name}/project", response_model=MachinePublic)
def assign_project(
    name: str, body: ProjectAssignment, request: Request, services: ServicesDep, _: Writer
) -> MachinePublic:
    """Give the machine to a tenant project (its users then see, power and provision it), or
    back to the provider with `{"project": null}`. A machine standing in a metro gets its
    per-host addresses from that metro's pools (a 409 names a missing pool, nothing changes);
    one without a metro gets none (a lab without per-host layer 3)."""
    with services.db.write() as session:
        machine = service.lock(session, service.get_machine(session, name))
        before, after = service.assign_project(session, machine, body.project)
        if before != after:
            _leave_project(session, services, machine.id)
        if after is not None and before != after and machine.metro is not None:
            sizes = hosts.host_sizes(services.settings, machine.metro)
            hosts.give_host_addresses(session, machine.id, after, machine.metro, sizes)
        note_audit(
            request,
            "machine",
            machine.id,
            project_id=after if after is not None else before,
            summary={"name": machine.name, "before": before, "after": after},
        )
        return public(session, machine)


def _leave_project(
    session: Session, services: Services, machine_id: str, *, with_provisioning: bool = False
) -> None:
    """A machine leaving its project (or deleted) gives back its elastic addresses to their
    reservations and its per-host ones into quarantine."""
    ipam.unassign_machine(session, machine_id)
    quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
    hosts.release_host_addresses(
        session, machine_id, utcnow(), quarantine=quarantine, with_provisioning=with_provisioning
    )


@router.delete("/{name}", status_code=204)
def delete_machine(name: str, request: Request, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        machine = service.lock(session, service.get_machine(session, name))
        note_audit(request, "machine", machine.id, project_id=machine.project_id)
        _leave_project(session, services, machine.id, with_provisioning=True)
        service.delete_machine(session, machine)
    services.auth.forget(machine.id)
    return Response(status_code=204)


@router.post("/{name}/transition", response_model=MachinePublic)
def transition_machine(
    name: str, body: TransitionRequest, request: Request, services: ServicesDep, _: Writer
) -> MachinePublic:
    with services.db.write() as session:
        machine = service.lock(session, service.get_machine(session, name))
        before = machine.state
        service.operator_transition(session, machine, body.event, body.reason)
        note_audit(
            request,
            "machine",
            machine.id,
            project_id=machine.project_id,
            summary={"name": machine.name, "before": before, "after": machine.state},
        )
        return public(session, machine)


@router.post("/{name}/agent-token")
def agent_token(name: str, services: ServicesDep, _: Writer) -> AgentToken:
    with services.db.read() as session:
        machine = service.get_machine(session, name)
        return AgentToken(
            token=services.keyring.agent_token(machine.id, machine.agent_token_generation)
        )


@router.post("/{name}/agent-token/rotate")
def rotate_agent_token(name: str, request: Request, services: ServicesDep, _: Writer) -> AgentToken:
    """Revoke the machine's current agent token and return the new one."""
    with services.db.write() as session:
        machine = service.get_machine(session, name)
        machine.agent_token_generation += 1
        token = services.keyring.agent_token(machine.id, machine.agent_token_generation)
        events.record(
            session, "machine.token_rotated", machine_id=machine.id, machine_name=machine.name
        )
        note_audit(request, "machine", machine.id, project_id=machine.project_id)
    services.auth.forget(machine.id)
    return AgentToken(token=token)
