"""What `GET /api/v1/dhcp/leases` sends."""

from __future__ import annotations

from pydantic import BaseModel


class LeasePublic(BaseModel):
    mac: str
    address: str
    subnet: str
    hostname: str | None
    expires_at: str
    updated_at: str


class LeaseList(BaseModel):
    items: list[LeasePublic]
    count: int
