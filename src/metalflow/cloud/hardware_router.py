"""Hardware reservations: the provider reserves a machine for a project (/api/v1); the tenant
lists and reads its reservations on the Metal API (/metal/v1)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from metalflow.cloud import hardware
from metalflow.cloud.devices_schemas import PlanBrief
from metalflow.cloud.metal import Href, Meta, MetalModel, PageDep, href, link
from metalflow.cloud.tables import HardwareReservation, Plan
from metalflow.inventory.lifecycle import MachineState
from metalflow.inventory.tables import Machine
from metalflow.services import (
    ProjectReader,
    Reader,
    ServicesDep,
    Writer,
    note_audit,
    require,
)
from metalflow.tenancy import policy
from metalflow.tenancy import service as tenancy

provider_router = APIRouter(prefix="/hardware-reservations", tags=["hardware-reservations"])
router = APIRouter(tags=["metal-hardware-reservations"])


class ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machine: str
    project: str


class ReservationPublic(BaseModel):
    id: str
    machine: str
    project: str
    device: str | None
    created_at: dt.datetime


class ReservationList(BaseModel):
    items: list[ReservationPublic]


def _provider_view(session: Session, reservation: HardwareReservation) -> ReservationPublic:
    machine = session.get_one(Machine, reservation.machine_id)
    device = hardware.device_on(session, reservation)
    return ReservationPublic(
        id=reservation.id,
        machine=machine.name,
        project=reservation.project_id,
        device=device.id if device else None,
        created_at=reservation.created_at,
    )


@provider_router.post("", status_code=201, response_model=ReservationPublic)
def reserve(
    body: ReservationRequest, request: Request, services: ServicesDep, _: Writer
) -> ReservationPublic:
    """Keep a machine for one project: only its devices take it (with
    `hardware_reservation_id`)."""
    with services.db.write() as session:
        reservation = hardware.reserve(session, body.machine, body.project)
        session.flush()
        note_audit(
            request,
            "hardware_reservation",
            reservation.id,
            project_id=body.project,
            summary={"machine": body.machine},
        )
        return _provider_view(session, reservation)


@provider_router.get("", response_model=ReservationList)
def list_reservations(services: ServicesDep, _: Reader) -> ReservationList:
    with services.db.read() as session:
        found = hardware.list_reservations(session, None)
        return ReservationList(items=[_provider_view(session, r) for r in found])


@provider_router.delete("/{reservation_id}", status_code=204)
def release(reservation_id: str, request: Request, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        reservation = hardware.get_reservation(session, reservation_id)
        note_audit(
            request,
            "hardware_reservation",
            reservation.id,
            project_id=reservation.project_id,
        )
        hardware.release(session, reservation)
    return Response(status_code=204)


class MetalReservation(MetalModel):
    id: str | None = None
    short_id: str | None = None
    created_at: str | None = None
    plan: PlanBrief | None = None
    project: Href | None = None
    device: Href | None = None
    provisionable: bool | None = None
    spare: bool | None = None
    need_of_service: bool | None = None
    switch_uuid: str | None = None
    href: str | None = None


class MetalReservationList(MetalModel):
    hardware_reservations: list[MetalReservation]
    meta: Meta | None = None


def _metal_view(session: Session, reservation: HardwareReservation) -> MetalReservation:
    machine = session.get_one(Machine, reservation.machine_id)
    device = hardware.device_on(session, reservation)
    plan = session.get(Plan, machine.plan_id) if machine.plan_id else None
    return MetalReservation(
        id=reservation.id,
        short_id=reservation.id[:8],
        created_at=reservation.created_at.isoformat(),
        plan=None
        if plan is None
        else PlanBrief(
            id=plan.id,
            slug=plan.slug,
            name=plan.name,
            class_=plan.plan_class,
            line=plan.line,
            href=href(f"/plans/{plan.id}"),
        ),
        project=link(f"/projects/{reservation.project_id}"),
        device=link(f"/devices/{device.id}") if device else None,
        provisionable=device is None and machine.state == MachineState.READY.value,
        spare=False,
        need_of_service=False,
        switch_uuid=None,
        href=href(f"/hardware-reservations/{reservation.id}"),
    )


@router.get(
    "/projects/{project_id}/hardware-reservations",
    response_model=MetalReservationList,
    response_model_exclude_unset=True,
)
def list_project_reservations(
    project_id: str, services: ServicesDep, principal: ProjectReader, page: PageDep
) -> MetalReservationList:
    with services.db.read() as session:
        require(principal, policy.Action.READ, project_id, tenancy.project_missing(project_id))
        tenancy.get_project(session, project_id)
        found = hardware.list_reservations(session, [project_id])
        shown = found[page.offset : page.offset + page.size]
        return MetalReservationList(
            hardware_reservations=[_metal_view(session, r) for r in shown],
            meta=page.meta(f"/projects/{project_id}/hardware-reservations", len(found)),
        )


@router.get(
    "/hardware-reservations/{reservation_id}",
    response_model=MetalReservation,
    response_model_exclude_unset=True,
)
def get_reservation(
    reservation_id: str, services: ServicesDep, principal: ProjectReader
) -> MetalReservation:
    with services.db.read() as session:
        reservation = hardware.get_reservation(session, reservation_id)
        missing = hardware.reservation_missing(reservation_id)
        require(principal, policy.Action.READ, reservation.project_id, missing)
        return _metal_view(session, reservation)
