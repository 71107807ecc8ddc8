"""Hardware reservations: a machine the provider keeps for one project. Only that project's
devices take it (`hardware_reservation_id` on create), and no other create does."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.cloud.tables import Device, HardwareReservation
from metalflow.errors import Conflict, NotFound
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.tenancy import service as tenancy


def reservation_missing(reservation_id: str) -> NotFound:
    return NotFound(f"hardware reservation {reservation_id!r} not found", field="id")


def reserve(session: Session, machine_name: str, project_id: str) -> HardwareReservation:
    machine = inventory.lock(session, inventory.get_machine(session, machine_name))
    tenancy.get_project(session, project_id)
    held = session.scalar(
        select(HardwareReservation).where(HardwareReservation.machine_id == machine.id)
    )
    if held is not None:
        raise Conflict(
            f"machine {machine.name} is reserved already ({held.id}); delete that reservation"
            " first",
            field="machine",
        )
    if machine.project_id not in (None, project_id):
        raise Conflict(
            f"machine {machine.name} is another project's now; reserve it once it is free",
            field="machine",
        )
    reservation = HardwareReservation(
        id=str(uuid.uuid4()), machine_id=machine.id, project_id=project_id
    )
    session.add(reservation)
    events.record(
        session,
        "machine.reserved",
        machine_id=machine.id,
        machine_name=machine.name,
        reservation=reservation.id,
        project_id=project_id,
    )
    return reservation


def get_reservation(session: Session, reservation_id: str) -> HardwareReservation:
    found = session.get(HardwareReservation, reservation_id)
    if found is None:
        raise reservation_missing(reservation_id)
    return found


def list_reservations(session: Session, project_ids: list[str] | None) -> list[HardwareReservation]:
    query = select(HardwareReservation).order_by(HardwareReservation.created_at)
    if project_ids is not None:
        query = query.where(HardwareReservation.project_id.in_(project_ids))
    return list(session.scalars(query))


def release(session: Session, reservation: HardwareReservation) -> None:
    """The machine goes back to everyone's pool; a device on it keeps running."""
    machine = session.get_one(Machine, reservation.machine_id)
    session.delete(reservation)
    events.record(
        session,
        "machine.unreserved",
        machine_id=machine.id,
        machine_name=machine.name,
        reservation=reservation.id,
    )


def device_on(session: Session, reservation: HardwareReservation) -> Device | None:
    return session.scalar(select(Device).where(Device.machine_id == reservation.machine_id))
