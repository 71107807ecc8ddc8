"""IPAM API: the provider's prefixes and allocations; projects' reservations, their assignments
to machines (elastic IPs), and brought prefixes (BYO, imported by the provider).

Tenant routes decide each block by its projects (`service.projects_of`: a brought prefix's
allowed projects count too); anything outside the caller's projects is the very 404 of a block
that does not exist.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from metalflow.errors import Forbidden, NotFound
from metalflow.ipam import service
from metalflow.ipam.schemas import (
    AllocationRequest,
    AssignmentCreate,
    AssignmentList,
    AssignmentMove,
    AssignmentPublic,
    ByoImport,
    Family,
    PrefixCreate,
    PrefixDetail,
    PrefixList,
    PrefixPublic,
    PrefixUsage,
    ReservationCreate,
    ReservationDetail,
    ReservationList,
)
from metalflow.ipam.tables import IpBlock, Kind, Status
from metalflow.services import (
    ProjectReader,
    ProjectWriter,
    ServicesDep,
    Writer,
    note_audit,
    require,
    visible,
)
from metalflow.tenancy import audit
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.policy import Action

router = APIRouter(prefix="/ipam", tags=["ipam"])

Responses = dict[int | str, dict[str, Any]]
"""Error statuses a route declares beyond those its kind implies (api.openapi adds those)."""
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
NO_PROJECT: Responses = {
    404: {"description": "No such project in the caller's reach", "content": ERROR_CONTENT}
}
TAKEN: Responses = {
    409: {
        "description": "The space is used up or taken; the message names the prefix and its use",
        "content": ERROR_CONTENT,
    }
}
STILL_ASSIGNED: Responses = {
    409: {"description": "Still assigned: unassign its addresses first", "content": ERROR_CONTENT}
}


def detail(session: Session, block: IpBlock) -> PrefixDetail:
    usage = (
        PrefixUsage.of(service.stats(session, block))
        if block.status in service.HOLDS_CHILDREN
        else None
    )
    return PrefixDetail(**PrefixPublic.of(block).model_dump(), usage=usage)


def require_any(
    principal: Principal, action: Action, projects: frozenset[str], missing: NotFound
) -> None:
    """`require` for a block of several projects: one of them that allows `action` will do; a
    403 only when the caller sees one of them, else `missing`."""
    refusal: Forbidden | None = None
    candidates: list[str | None] = [*sorted(projects)] or [None]
    for project in candidates:
        try:
            require(principal, action, project, missing)
            return
        except Forbidden as exc:
            refusal = exc
        except NotFound:
            continue
    raise refusal or missing


def _audit(request: Request, resource_type: str, block: IpBlock, **summary: object) -> None:
    note_audit(
        request,
        resource_type,
        block.id,
        project_id=block.project_id,
        summary={"cidr": block.cidr, **summary},
    )


@router.post("/prefixes", status_code=201, response_model=PrefixDetail)
def create_prefix(
    body: PrefixCreate, request: Request, services: ServicesDep, _: Writer
) -> PrefixDetail:
    spec = service.PrefixSpec(
        cidr=body.cidr,
        kind=body.kind,
        metro=body.metro,
        project_id=body.project,
        tags=body.tags,
        description=body.description,
        provisioning=body.provisioning,
        byo=body.byo,
        allowed_projects=body.allowed_projects,
    )
    with services.db.write() as session:
        block = service.create_prefix(session, spec)
        _audit(request, "ipam_prefix", block, created=True)
        return detail(session, block)


@router.get("/prefixes", response_model=PrefixList)
def list_prefixes(
    services: ServicesDep,
    principal: ProjectReader,
    family: Family | None = None,
    kind: Kind | None = None,
    status: Status | None = None,
    metro: str | None = None,
    project: str | None = None,
    parent: str | None = None,
) -> PrefixList:
    """The provider sees every prefix; a tenant those of its projects."""
    projects = visible(principal)
    with services.db.read() as session:
        blocks = service.list_prefixes(
            session,
            family=None if family is None else int(family),
            kind=kind,
            status=status,
            metro=metro,
            project_id=project,
            parent_id=parent,
        )
        items = [
            PrefixPublic.of(block)
            for block in blocks
            if projects is None or service.projects_of(block) & projects
        ]
    return PrefixList(items=items, count=len(items))


def _visible_prefix(session: Session, principal: Principal, ref: str) -> IpBlock:
    block = service.get(session, ref)
    require_any(principal, Action.READ, service.projects_of(block), service.missing_prefix(ref))
    return block


@router.get("/prefixes/{ref:path}/usage", response_model=PrefixUsage)
def prefix_usage(ref: str, services: ServicesDep, principal: ProjectReader) -> PrefixUsage:
    with services.db.read() as session:
        return PrefixUsage.of(service.stats(session, _visible_prefix(session, principal, ref)))


@router.post("/prefixes/{ref:path}/allocations", status_code=201, response_model=PrefixDetail)
def allocate(
    ref: str, body: AllocationRequest, request: Request, services: ServicesDep, _: Writer
) -> PrefixDetail:
    # The hot path: the allocation and its audit entry are one transaction, one commit.
    with services.db.write() as session:
        holder = service.get(session, ref)
        block = service.allocate(
            session,
            holder,
            prefixlen=body.prefixlen,
            at=body.cidr,
            strategy=body.allocation_strategy,
            status=Status(body.status),
            project_id=body.project,
            machine_id=body.machine,
        )
        audit.record(
            session,
            request,
            "ipam_prefix",
            block.id,
            project_id=block.project_id,
            summary={"cidr": block.cidr, "allocated_from": holder.cidr},
        )
        return detail(session, block)


@router.get("/prefixes/{ref:path}", response_model=PrefixDetail)
def show_prefix(ref: str, services: ServicesDep, principal: ProjectReader) -> PrefixDetail:
    with services.db.read() as session:
        return detail(session, _visible_prefix(session, principal, ref))


@router.delete("/prefixes/{ref:path}", status_code=204)
def delete_prefix(ref: str, request: Request, services: ServicesDep, _: Writer) -> Response:
    """A pool is deleted (it must hand out nothing); a reservation or assignment is released
    into quarantine for the configured time."""
    quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
    with services.db.write() as session:
        block = service.get(session, ref)
        _audit(request, "ipam_prefix", block, status=block.status, deleted=True)
        if block.status == Status.POOL.value:
            service.delete_prefix(session, block.id)
        else:
            service.release(session, block.id, quarantine=quarantine)
    return Response(status_code=204)


def reservation_detail(
    session: Session, reservation: IpBlock, projects: frozenset[str] | None
) -> ReservationDetail:
    assignments = service.list_assignments(session, visible=projects, reservation_id=reservation.id)
    return ReservationDetail(
        **detail(session, reservation).model_dump(),
        assignments=[AssignmentPublic.of(block, elastic=True) for block in assignments],
    )


@router.post(
    "/reservations",
    status_code=201,
    response_model=ReservationDetail,
    responses={**NO_PROJECT, **TAKEN},
)
def reserve(
    body: ReservationCreate, request: Request, services: ServicesDep, principal: ProjectWriter
) -> ReservationDetail:
    """Tenants reserve public or private space of the sizes offered; the provider any."""
    require(principal, Action.WRITE, body.project, service.missing_project(body.project))
    projects = visible(principal)
    with services.db.write() as session:
        reservation = service.reserve(
            session,
            body.project,
            body.kind,
            int(body.family),
            body.size,
            body.metro,
            by_tenant=projects is not None,
            description=body.description,
        )
        _audit(request, "ipam_reservation", reservation, kind=reservation.kind)
        return reservation_detail(session, reservation, projects)


@router.get("/reservations", response_model=ReservationList)
def list_reservations(
    services: ServicesDep, principal: ProjectReader, project: str | None = None
) -> ReservationList:
    with services.db.read() as session:
        found = service.list_reservations(session, visible=visible(principal), project_id=project)
        items = [detail(session, block) for block in found]
    return ReservationList(items=items, count=len(items))


def _reservation(session: Session, principal: Principal, ref: str, action: Action) -> IpBlock:
    reservation = service.get_reservation(session, ref)
    missing = service.missing_reservation(ref)
    require_any(principal, Action.READ, service.projects_of(reservation), missing)
    if action is not Action.READ:
        require_any(principal, action, service.projects_of(reservation), missing)
    return reservation


@router.post(
    "/reservations/{ref:path}/assignments",
    status_code=201,
    response_model=AssignmentPublic,
    responses=TAKEN,
)
def assign(
    ref: str,
    body: AssignmentCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> AssignmentPublic:
    """An address or sub-block of the reservation, to a machine of its projects."""
    with services.db.write() as session:
        reservation = _reservation(session, principal, ref, Action.WRITE)
        machine = service.machine_for(session, reservation, body.machine)
        missing = service.missing_machine(body.machine, reservation)
        require(principal, Action.WRITE, machine.project_id, missing)
        block = service.assign(
            session, reservation.id, machine.id, address=body.address, size=body.size
        )
        _audit(request, "ipam_assignment", block, machine=machine.id, reservation=reservation.id)
        return AssignmentPublic.of(block, elastic=True)


@router.get("/reservations/{ref:path}", response_model=ReservationDetail)
def show_reservation(
    ref: str, services: ServicesDep, principal: ProjectReader
) -> ReservationDetail:
    projects = visible(principal)
    with services.db.read() as session:
        reservation = _reservation(session, principal, ref, Action.READ)
        return reservation_detail(session, reservation, projects)


@router.delete("/reservations/{ref:path}", status_code=204, responses=STILL_ASSIGNED)
def release_reservation(
    ref: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """Refused while any of it is assigned; its block is quarantined before anyone reserves it
    again. A brought prefix is removed by the provider only."""
    quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
    with services.db.write() as session:
        reservation = _reservation(session, principal, ref, Action.READ)
        if reservation.byo and visible(principal) is not None:
            raise Forbidden(
                f"{reservation.cidr} was brought by its project: the provider removes it"
                " (`metalflow ipam release-reservation` with a provider token)"
            )
        owner = frozenset() if reservation.project_id is None else {reservation.project_id}
        require_any(principal, Action.DELETE, frozenset(owner), service.missing_reservation(ref))
        _audit(request, "ipam_reservation", reservation, released=True)
        service.release_reservation(session, reservation.id, quarantine=quarantine)
    return Response(status_code=204)


def _assignment(session: Session, principal: Principal, ref: str, action: Action) -> IpBlock:
    assignment = service.get_assignment(session, ref)
    missing = service.missing_assignment(ref)
    projects = service.assignment_projects(session, assignment)
    require_any(principal, Action.READ, projects, missing)
    if action is not Action.READ:
        require_any(principal, action, projects, missing)
    return assignment


def _is_elastic(session: Session, block: IpBlock) -> bool:
    holder = service.holder_of(session, block)
    return holder is not None and holder.status == Status.RESERVATION.value


@router.get("/assignments", response_model=AssignmentList)
def list_assignments(
    services: ServicesDep,
    principal: ProjectReader,
    machine: str | None = None,
    reservation: str | None = None,
) -> AssignmentList:
    """Every address given to a machine (elastic or per-host) in the caller's projects."""
    projects = visible(principal)
    with services.db.read() as session:
        machine_id = None
        if machine is not None:
            found = service.find_machine(session, machine)
            if found is None:
                return AssignmentList(items=[], count=0)
            machine_id = found.id
        blocks = service.list_assignments(
            session, visible=projects, machine_id=machine_id, reservation_id=reservation
        )
        items = [
            AssignmentPublic.of(block, elastic=_is_elastic(session, block)) for block in blocks
        ]
    return AssignmentList(items=items, count=len(items))


@router.get("/assignments/{ref:path}", response_model=AssignmentPublic)
def show_assignment(ref: str, services: ServicesDep, principal: ProjectReader) -> AssignmentPublic:
    with services.db.read() as session:
        block = _assignment(session, principal, ref, Action.READ)
        return AssignmentPublic.of(block, elastic=_is_elastic(session, block))


@router.patch("/assignments/{ref:path}", response_model=AssignmentPublic)
def move_assignment(
    ref: str,
    body: AssignmentMove,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> AssignmentPublic:
    """Move an elastic address to another machine of its reservation's projects."""
    with services.db.write() as session:
        block = _assignment(session, principal, ref, Action.WRITE)
        before = block.machine_id
        reservation = service.holder_of(session, block)
        if reservation is not None and reservation.status == Status.RESERVATION.value:
            machine = service.machine_for(session, reservation, body.machine)
            missing = service.missing_machine(body.machine, reservation)
            require(principal, Action.WRITE, machine.project_id, missing)
        moved = service.move(session, block.id, body.machine)
        _audit(
            request, "ipam_assignment", moved, machine={"before": before, "after": moved.machine_id}
        )
        return AssignmentPublic.of(moved, elastic=True)


@router.delete("/assignments/{ref:path}", status_code=204)
def unassign(
    ref: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """Back to the reservation's free space at once: only its projects can be given it."""
    with services.db.write() as session:
        block = _assignment(session, principal, ref, Action.WRITE)
        _audit(request, "ipam_assignment", block, machine=block.machine_id, unassigned=True)
        service.unassign(session, block.id)
    return Response(status_code=204)


@router.post(
    "/byo", status_code=201, response_model=ReservationDetail, responses={**NO_PROJECT, **TAKEN}
)
def import_byo(
    body: ByoImport, request: Request, services: ServicesDep, _: Writer
) -> ReservationDetail:
    """The provider imports a tenant's own prefix as its project's reservation."""
    with services.db.write() as session:
        reservation = service.import_byo(
            session,
            body.cidr,
            body.project,
            body.allowed_projects,
            kind=body.kind,
            metro=body.metro,
            description=body.description,
        )
        _audit(
            request,
            "ipam_reservation",
            reservation,
            byo=True,
            allowed_projects=list(reservation.allowed_projects),
        )
        return reservation_detail(session, reservation, None)
