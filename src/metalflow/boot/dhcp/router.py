"""`GET /api/v1/dhcp/leases`: what the dynamic pools have handed out, as stored."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import select

from metalflow.boot.dhcp.schemas import LeaseList, LeasePublic
from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.services import Reader, ServicesDep

router = APIRouter(prefix="/dhcp", tags=["dhcp"])


@router.get("/leases")
def list_leases(
    services: ServicesDep,
    _: Reader,
    subnet: str | None = Query(None, description="only this subnet, e.g. 192.0.2.0/24"),
    limit: int = Query(1000, ge=1, le=100_000),
) -> LeaseList:
    query = select(DhcpLease).order_by(DhcpLease.subnet, DhcpLease.address).limit(limit)
    if subnet is not None:
        query = query.where(DhcpLease.subnet == subnet)
    with services.db.read() as session:
        items = [
            LeasePublic(
                mac=lease.mac,
                address=lease.address,
                subnet=lease.subnet,
                hostname=lease.hostname,
                expires_at=lease.expires_at.isoformat(),
                updated_at=lease.updated_at.isoformat(),
            )
            for lease in session.scalars(query)
        ]
    return LeaseList(items=items, count=len(items))
