"""IPAM API: prefixes, their usage, and allocations from them (provider tokens for now)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from metalflow.ipam import service
from metalflow.ipam.schemas import (
    AllocationRequest,
    Family,
    PrefixCreate,
    PrefixDetail,
    PrefixList,
    PrefixPublic,
    PrefixUsage,
)
from metalflow.ipam.tables import IpBlock, Kind, Status
from metalflow.services import Reader, ServicesDep, Writer

router = APIRouter(prefix="/ipam", tags=["ipam"])


def detail(session: Session, block: IpBlock) -> PrefixDetail:
    usage = (
        PrefixUsage.of(service.stats(session, block))
        if block.status in service.HOLDS_CHILDREN
        else None
    )
    return PrefixDetail(**PrefixPublic.of(block).model_dump(), usage=usage)


@router.post("/prefixes", status_code=201, response_model=PrefixDetail)
def create_prefix(body: PrefixCreate, services: ServicesDep, _: Writer) -> PrefixDetail:
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
        return detail(session, service.create_prefix(session, spec))


@router.get("/prefixes", response_model=PrefixList)
def list_prefixes(
    services: ServicesDep,
    _: Reader,
    family: Family | None = None,
    kind: Kind | None = None,
    status: Status | None = None,
    metro: str | None = None,
    project: str | None = None,
    parent: str | None = None,
) -> PrefixList:
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
        items = [PrefixPublic.of(block) for block in blocks]
    return PrefixList(items=items, count=len(items))


@router.get("/prefixes/{ref:path}/usage", response_model=PrefixUsage)
def prefix_usage(ref: str, services: ServicesDep, _: Reader) -> PrefixUsage:
    with services.db.read() as session:
        return PrefixUsage.of(service.stats(session, service.get(session, ref)))


@router.post("/prefixes/{ref:path}/allocations", status_code=201, response_model=PrefixDetail)
def allocate(ref: str, body: AllocationRequest, services: ServicesDep, _: Writer) -> PrefixDetail:
    with services.db.write() as session:
        holder = service.get(session, ref)
        block = service.allocate(
            session,
            holder.id,
            prefixlen=body.prefixlen,
            at=body.cidr,
            strategy=body.allocation_strategy,
            status=Status(body.status),
            project_id=body.project,
            machine_id=body.machine,
        )
        return detail(session, block)


@router.get("/prefixes/{ref:path}", response_model=PrefixDetail)
def show_prefix(ref: str, services: ServicesDep, _: Reader) -> PrefixDetail:
    with services.db.read() as session:
        return detail(session, service.get(session, ref))


@router.delete("/prefixes/{ref:path}", status_code=204)
def delete_prefix(ref: str, services: ServicesDep, _: Writer) -> Response:
    """A pool is deleted (it must hand out nothing); a reservation or assignment is released
    into quarantine for the configured time."""
    quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
    with services.db.write() as session:
        block = service.get(session, ref)
        if block.status == Status.POOL.value:
            service.delete_prefix(session, block.id)
        else:
            service.release(session, block.id, quarantine=quarantine)
    return Response(status_code=204)
