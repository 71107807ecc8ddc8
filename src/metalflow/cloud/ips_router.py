"""`/metal/v1` IP reservations and assignments: Equinix Metal's routes over the IPAM's services.

A reservation is `ipam.service.reserve` from the metro's pools, an assignment is
`ipam.service.assign` to the machine a device runs on, a release is `release_reservation` (into
quarantine) or `unassign`. Each block is decided by its projects as the IPAM's own router
decides it (`require_any`): another tenant's IP is the 404 of one that does not exist.
Customdata is refused when it is not empty: the IPAM's blocks have nowhere to keep it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.cloud import ips
from metalflow.cloud.ips_schemas import (
    IpAddress,
    IpAssignment,
    IpAssignmentList,
    IpAssignmentRequest,
    IpAvailabilities,
    IpReservation,
    IpReservationList,
    IpReservationRequest,
    IpUpdate,
)
from metalflow.cloud.metal import METAL_PREFIX, Fields, FieldsDep, PageDep, href
from metalflow.cloud.tables import Device, Metro
from metalflow.errors import Forbidden, Invalid, MetalflowError, NotFound
from metalflow.inventory.tables import Machine
from metalflow.ipam import allocator, service
from metalflow.ipam.router import require_any
from metalflow.ipam.tables import IpBlock, Kind, Status
from metalflow.services import (
    ProjectReader,
    ProjectWriter,
    ServicesDep,
    note_audit,
    require,
    visible,
)
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.policy import Action
from metalflow.tenancy.tables import Project

router = APIRouter(tags=["metal: ips"])

TYPES_PATTERN = "^({0})(,({0}))*$".format("|".join(ips.KIND_AND_FAMILY))


@contextmanager
def _fields(names: Mapping[str, str]) -> Iterator[None]:
    """The IPAM's errors under the names of this request's fields."""
    try:
        yield
    except MetalflowError as exc:
        if exc.field is None or exc.field not in names:
            raise
        raise type(exc)(exc.message, field=names[exc.field]) from exc


def missing_ip(ref: str) -> NotFound:
    return NotFound(
        f"no IP reservation or assignment {ref!r}: list a project's with"
        " GET /metal/v1/projects/{id}/ips",
        field="id",
    )


def missing_device(ref: str) -> NotFound:
    return NotFound(
        f"no device {ref!r}: list a project's with GET /metal/v1/projects/{{id}}/devices",
        field="id",
    )


def _no_customdata(customdata: dict[str, Any] | None) -> None:
    if customdata:
        raise Invalid(
            "customdata is not kept on IP addresses here: leave it out, or keep it in tags or"
            " details",
            field="body.customdata",
        )


def _facts(block: IpBlock) -> ips.Block:
    return ips.Block(
        id=block.id,
        cidr=block.cidr,
        kind=block.kind,
        created_at=block.created_at,
        project_id=block.project_id,
        tags=tuple(str(tag) for tag in block.tags),
        description=block.description,
    )


def _metro(session: Session, code: str | None) -> ips.Metro | None:
    if code is None:
        return None
    found = session.scalar(select(Metro).where(Metro.code == code))
    if found is None:
        return ips.Metro(code=code)
    return ips.Metro(code=code, id=found.id, name=found.name, country=found.country)


def reservation_document(
    session: Session, block: IpBlock, projects: frozenset[str] | None, fields: Fields
) -> dict[str, Any] | None:
    assignments = service.list_assignments(session, visible=projects, reservation_id=block.id)
    included = (
        [assignment_document(session, assignment) for assignment in assignments]
        if fields.expands("assignments")
        else None
    )
    return ips.reservation_document(
        _facts(block),
        family=block.family,
        metro=_metro(session, block.metro),
        assignment_ids=[assignment.id for assignment in assignments],
        root=METAL_PREFIX,
        included=included,
    )


def _assigned_to(session: Session, block: IpBlock) -> str:
    """The device the block's machine runs, else the machine (or the block itself, for an
    allocation given to no machine): IPAssignment requires `assigned_to`."""
    if block.machine_id is None:
        return f"/api/v1/ipam/prefixes/{block.id}"
    device = session.scalar(select(Device.id).where(Device.machine_id == block.machine_id))
    if device is not None:
        return href(f"/devices/{device}")
    machine = session.get(Machine, block.machine_id)
    return f"/api/v1/machines/{block.machine_id if machine is None else machine.name}"


def assignment_document(session: Session, block: IpBlock) -> dict[str, Any]:
    holder = service.holder_of(session, block)
    parent = ips.Parent(
        id=block.id if holder is None else holder.id,
        cidr=block.cidr if holder is None else holder.cidr,
        elastic=holder is not None and holder.status == Status.RESERVATION.value,
    )
    return ips.assignment_document(
        _facts(block),
        parent=parent,
        assigned_to=_assigned_to(session, block),
        metro=_metro(session, block.metro),
        root=METAL_PREFIX,
    )


def _shown(document: dict[str, Any] | None, fields: Fields, ref: str) -> IpAddress:
    if document is None:
        raise missing_ip(ref)
    return IpAddress.model_validate(fields.keep(document))


def _reservation_shown(
    session: Session, block: IpBlock, principal: Principal, fields: Fields
) -> IpReservation:
    document = reservation_document(session, block, visible(principal), fields)
    if document is None:
        raise missing_ip(block.id)
    return IpReservation.model_validate(fields.keep(document))


def _ip(session: Session, principal: Principal, ref: str, action: Action) -> IpBlock:
    """A reservation or assignment the caller may `action`, else the 404 of a missing one."""
    block = session.get(IpBlock, ref)
    missing = missing_ip(ref)
    if block is None:
        raise missing
    if block.status == Status.RESERVATION.value:
        if ips.ip_type(block.kind, block.family) is None:
            raise missing
        projects = service.projects_of(block)
    elif block.status == Status.ASSIGNMENT.value:
        projects = service.assignment_projects(session, block)
    else:
        raise missing
    require_any(principal, Action.READ, projects, missing)
    if action is not Action.READ:
        require_any(principal, action, projects, missing)
    return block


def _document(
    session: Session, block: IpBlock, principal: Principal, fields: Fields
) -> dict[str, Any] | None:
    if block.status == Status.RESERVATION.value:
        return reservation_document(session, block, visible(principal), fields)
    return assignment_document(session, block)


def _project_in_reach(
    session: Session, principal: Principal, project_id: str, action: Action
) -> None:
    missing = service.missing_project(project_id)
    require(principal, Action.READ, project_id, missing)
    if action is not Action.READ:
        require(principal, action, project_id, missing)
    if visible(principal) is None and session.get(Project, project_id) is None:
        raise missing


@router.get(
    "/projects/{id}/ips",
    response_model=IpReservationList,
    response_model_exclude_unset=True,
)
def list_reservations(
    id: str,
    services: ServicesDep,
    principal: ProjectReader,
    page: PageDep,
    fields: FieldsDep,
    types: Annotated[
        list[Annotated[str, Query(pattern=TYPES_PATTERN, max_length=200)]] | None,
        Query(max_length=20, description="Reservation types, repeated or comma-separated"),
    ] = None,
) -> IpReservationList:
    """The project's reservations (a brought prefix it is allowed too), by family and address."""
    wanted = None if types is None else {t for each in types for t in each.split(",")}
    projects = visible(principal)
    with services.db.read() as session:
        _project_in_reach(session, principal, id, Action.READ)
        found = service.list_reservations(session, visible=projects, project_id=id)
        shown = [
            block
            for block in found
            if (kind := ips.ip_type(block.kind, block.family)) is not None
            and (wanted is None or kind in wanted)
        ]
        documents = [
            reservation_document(session, block, projects, fields)
            for block in shown[page.offset : page.offset + page.size]
        ]
    query = {} if wanted is None else {"types": ",".join(sorted(wanted))}
    return IpReservationList(
        ip_addresses=[
            IpReservation.model_validate(fields.keep(document))
            for document in documents
            if document is not None
        ],
        meta=page.meta(f"/projects/{id}/ips", len(shown), query),
    )


@router.post(
    "/projects/{id}/ips",
    status_code=201,
    response_model=IpReservation,
    response_model_exclude_unset=True,
)
def reserve(
    id: str,
    body: IpReservationRequest,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    fields: FieldsDep,
) -> IpReservation:
    """A block of `quantity` addresses from the metro's pools of the type's kind and family."""
    _no_customdata(body.customdata)
    if body.facility is not None:
        raise Invalid(
            "facilities are not served here: leave facility out and give metro (a code from"
            " GET /metal/v1/locations/metros)",
            field="body.facility",
        )
    if body.metro is None:
        raise Invalid(
            "give metro: the code of the metro to reserve in (GET /metal/v1/locations/metros)",
            field="body.metro",
        )
    prefixlen = ips.reservation_prefixlen(body.type, body.quantity)
    kind, family = ips.KIND_AND_FAMILY[body.type]
    with services.db.write() as session:
        _project_in_reach(session, principal, id, Action.WRITE)
        if session.scalar(select(Metro.id).where(Metro.code == body.metro)) is None:
            codes = sorted(session.scalars(select(Metro.code)))
            raise Invalid(
                f"no metro {body.metro!r}: use one of {', '.join(codes) or 'none yet'}",
                field="body.metro",
            )
        renamed = {
            "kind": "body.type",
            "family": "body.type",
            "metro": "body.metro",
            "size": "body.quantity",
        }
        with _fields(renamed):
            block = service.reserve(
                session,
                id,
                Kind(kind),
                family,
                prefixlen,
                body.metro,
                by_tenant=visible(principal) is not None,
                description=body.details or "",
            )
        if body.tags:
            block.tags = list(body.tags)
            session.flush()
        summary: dict[str, Any] = {"cidr": block.cidr, "type": body.type}
        if body.comments:
            summary["comments"] = body.comments
        note_audit(request, "ip_reservation", block.id, project_id=id, summary=summary)
        return _reservation_shown(session, block, principal, fields)


@router.get("/ips/{id}", response_model=IpAddress, response_model_exclude_unset=True)
def show_ip(
    id: str, services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> IpAddress:
    """A reservation (it has `type`) or an assignment (it has `assigned_to`)."""
    with services.db.read() as session:
        block = _ip(session, principal, id, Action.READ)
        return _shown(_document(session, block, principal, fields), fields, id)


@router.patch("/ips/{id}", response_model=IpAddress, response_model_exclude_unset=True)
@router.put("/ips/{id}", response_model=IpAddress, response_model_exclude_unset=True)
def update_ip(
    id: str,
    body: IpUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    fields: FieldsDep,
) -> IpAddress:
    """Tags and details (the block's description); the space it holds never changes here."""
    _no_customdata(body.customdata)
    with services.db.write() as session:
        block = _ip(session, principal, id, Action.WRITE)
        before = {"tags": list(block.tags), "details": block.description}
        service.update_prefix(
            session,
            block,
            kind=Kind(block.kind),
            metro=block.metro,
            tags=block.tags if body.tags is None else body.tags,
            description=block.description if body.details is None else body.details,
            provisioning=block.provisioning,
            allowed_projects=block.allowed_projects,
        )
        after = {"tags": list(block.tags), "details": block.description}
        note_audit(
            request,
            "ip_reservation" if block.status == Status.RESERVATION.value else "ip_assignment",
            block.id,
            project_id=block.project_id,
            summary={"cidr": block.cidr, "before": before, "after": after},
        )
        return _shown(_document(session, block, principal, fields), fields, id)


@router.delete("/ips/{id}", status_code=204)
def delete_ip(
    id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """A reservation is released (refused while any of it is assigned) into quarantine in its
    pool; an assignment is unassigned, back to its reservation at once."""
    quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
    with services.db.write() as session:
        block = _ip(session, principal, id, Action.READ)
        if block.status == Status.ASSIGNMENT.value:
            projects = service.assignment_projects(session, block)
            require_any(principal, Action.WRITE, projects, missing_ip(id))
            note_audit(
                request,
                "ip_assignment",
                block.id,
                project_id=block.project_id,
                summary={"cidr": block.cidr, "machine": block.machine_id, "unassigned": True},
            )
            service.unassign(session, block.id)
            return Response(status_code=204)
        if block.byo and visible(principal) is not None:
            raise Forbidden(
                f"{block.cidr} was brought by its project: the provider removes it"
                " (`metalflow ipam release-reservation` with a provider token)"
            )
        owner = frozenset() if block.project_id is None else frozenset({block.project_id})
        require_any(principal, Action.DELETE, owner, missing_ip(id))
        note_audit(
            request,
            "ip_reservation",
            block.id,
            project_id=block.project_id,
            summary={"cidr": block.cidr, "released": True},
        )
        service.release_reservation(session, block.id, quarantine=quarantine)
    return Response(status_code=204)


@router.get("/ips/{id}/available", response_model=IpAvailabilities)
def available(
    id: str,
    services: ServicesDep,
    principal: ProjectReader,
    cidr: Annotated[int, Query(ge=0, le=128, description="The prefix length of the subnets")],
) -> IpAvailabilities:
    """The reservation's free /cidr subnets, by address (at most `ips.MAX_AVAILABLE`)."""
    with services.db.read() as session:
        block = _ip(session, principal, id, Action.READ)
        if block.status != Status.RESERVATION.value:
            raise Invalid(
                f"{block.cidr} is an assignment: ask the reservation it was given from",
                field="id",
            )
        network = service.network_of(block)
        if not network.prefixlen <= cidr <= network.max_prefixlen:
            raise Invalid(
                f"/{cidr} does not fit in {block.cidr}: use"
                f" {network.prefixlen}..{network.max_prefixlen}",
                field="query.cidr",
            )
        free = service.free_space(session, block)
    return IpAvailabilities(available=ips.available_subnets(free, cidr))


def _device(session: Session, principal: Principal, ref: str, action: Action) -> tuple[Device, str]:
    """A device the caller may `action`, and the machine it runs on (a deleted one runs on
    none)."""
    device = session.get(Device, ref)
    missing = missing_device(ref)
    if device is None or device.machine_id is None:
        raise missing
    require(principal, Action.READ, device.project_id, missing)
    if action is not Action.READ:
        require(principal, action, device.project_id, missing)
    return device, device.machine_id


@router.get("/devices/{id}/ips", response_model=IpAssignmentList, response_model_exclude_unset=True)
def device_ips(
    id: str, services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> IpAssignmentList:
    """Every address of the device's machine: per-host ones and elastic ones."""
    with services.db.read() as session:
        _, machine_id = _device(session, principal, id, Action.READ)
        blocks = service.list_assignments(
            session, visible=visible(principal), machine_id=machine_id
        )
        documents = [assignment_document(session, block) for block in blocks]
    return IpAssignmentList(
        ip_addresses=[IpAssignment.model_validate(fields.keep(each)) for each in documents]
    )


@router.post(
    "/devices/{id}/ips",
    status_code=201,
    response_model=IpAssignment,
    response_model_exclude_unset=True,
)
def assign(
    id: str,
    body: IpAssignmentRequest,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
    fields: FieldsDep,
) -> IpAssignment:
    """An address (or sub-block) of one of the device's project's reservations, to its machine."""
    _no_customdata(body.customdata)
    if body.manageable is False:
        raise Invalid(
            "every address here is configured through the metadata service: leave manageable"
            " out or set it true",
            field="body.manageable",
        )
    try:
        wanted = ipaddress.ip_network(body.address, strict=False)
    except ValueError as exc:
        raise Invalid(
            f"{body.address!r} is not an address or CIDR block: give one of a reservation's"
            " addresses (GET /metal/v1/ips/{id}/available)",
            field="body.address",
        ) from exc
    with services.db.write() as session:
        device, machine_id = _device(session, principal, id, Action.WRITE)
        reservations = service.list_reservations(
            session, visible=frozenset({device.project_id}), project_id=device.project_id
        )
        holder = next(
            (
                block
                for block in reservations
                if wanted.version == block.family
                and allocator.inside(wanted, service.network_of(block))
            ),
            None,
        )
        if holder is None:
            held = ", ".join(block.cidr for block in reservations) or "none yet"
            raise Invalid(
                f"{body.address} is not in a reservation of project {device.project_id}: use an"
                f" address of one ({held}), or reserve one with POST"
                f" /metal/v1/projects/{device.project_id}/ips",
                field="body.address",
            )
        renamed = {"address": "body.address", "machine": "body.address", "size": "body.address"}
        with _fields(renamed):
            block = service.assign(session, holder.id, machine_id, address=body.address)
        note_audit(
            request,
            "ip_assignment",
            block.id,
            project_id=block.project_id,
            summary={"cidr": block.cidr, "device": device.id, "reservation": holder.id},
        )
        return IpAssignment.model_validate(fields.keep(assignment_document(session, block)))
