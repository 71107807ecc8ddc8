"""Equinix Metal's IP reservation and assignment shapes, as equinix-metal 0.11.0's models
(IPReservation, IPAssignment, IPReservationList, IPAssignmentList, IPAvailabilitiesList,
IPReservationRequestInput, IPAssignmentInput, IPAssignmentUpdateInput) and packet-python
1.44.3's `reserve_ip_address` / `create_device_ip` bodies have them.

A reservation carries `type` and never `assigned_to`; an assignment carries `assigned_to` and
never `type`: equinix-metal's `find_ip_address_by_id` must validate a `GET /ips/{id}` answer as
exactly one of IPAssignment and IPReservation, and tells them apart by those two fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from metalflow.cloud.metal import Href, Meta, MetalModel

IpType = Literal["public_ipv4", "private_ipv4", "global_ipv4", "public_ipv6"]
MAX_QUANTITY = 1 << 128
MAX_TAGS = 100


class IpMetro(MetalModel):
    id: str | None = None
    code: str | None = None
    name: str | None = None
    country: str | None = None
    href: str | None = None


class ParentBlock(MetalModel):
    network: str | None = None
    netmask: str | None = None
    cidr: int | None = None
    href: str | None = None


class IpAssignment(MetalModel):
    id: str | None = None
    address: str | None = None
    address_family: int | None = None
    cidr: int | None = None
    netmask: str | None = None
    network: str | None = None
    gateway: str | None = None
    public: bool | None = None
    management: bool | None = None
    enabled: bool | None = None
    global_ip: bool | None = None
    manageable: bool | None = None
    assigned_to: Href | None = None
    parent_block: ParentBlock | None = None
    metro: IpMetro | None = None
    created_at: dt.datetime | None = None
    href: str | None = None


class IpReservation(MetalModel):
    id: str | None = None
    type: IpType | None = None
    address: str | None = None
    network: str | None = None
    netmask: str | None = None
    cidr: int | None = None
    gateway: str | None = None
    address_family: int | None = None
    public: bool | None = None
    management: bool | None = None
    enabled: bool | None = None
    global_ip: bool | None = None
    manageable: bool | None = None
    available: str | None = None
    """The href of the reservation's free subnets (`/ips/{id}/available?cidr=N`)."""
    state: Literal["created", "pending"] | None = None
    tags: list[str] | None = None
    details: str | None = None
    metro: IpMetro | None = None
    project: Href | None = None
    project_lite: Href | None = None
    assignments: list[IpAssignment] | None = None
    """Each an href, or the whole assignment with `include=assignments`."""
    created_at: dt.datetime | None = None
    href: str | None = None


class IpAddress(RootModel[IpReservation | IpAssignment]):
    """What `/ips/{id}` answers: a reservation or an assignment, never both."""


class IpReservationList(MetalModel):
    ip_addresses: list[IpReservation] | None = None
    meta: Meta | None = None


class IpAssignmentList(MetalModel):
    ip_addresses: list[IpAssignment] | None = None


class IpAvailabilities(MetalModel):
    available: list[str] | None = None


Tags = list[Annotated[str, Field(min_length=1, max_length=200)]]


class IpReservationRequest(MetalModel):
    """`POST /projects/{id}/ips`. `quantity` counts addresses (a power of two); `details` is
    the reservation's description; `comments` (Equinix's note for whoever approves a request)
    go on the audit record, since a reservation here is made at once."""

    type: IpType
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    metro: str | None = Field(default=None, max_length=64)
    facility: str | None = Field(default=None, max_length=64)
    details: str | None = Field(default=None, max_length=2000)
    comments: str | None = Field(default=None, max_length=2000)
    tags: Tags | None = Field(default=None, max_length=MAX_TAGS)
    customdata: dict[str, Any] | None = None
    fail_on_approval_required: bool | None = None
    href: str | None = Field(default=None, max_length=2000)


class IpAssignmentRequest(MetalModel):
    """`POST /devices/{id}/ips`: an address (or sub-block in CIDR) of a project reservation."""

    address: str = Field(min_length=1, max_length=64)
    manageable: bool | None = None
    customdata: dict[str, Any] | None = None
    href: str | None = Field(default=None, max_length=2000)


class IpUpdate(MetalModel):
    """`PATCH|PUT /ips/{id}`: what a reservation or assignment says about itself."""

    tags: Tags | None = Field(default=None, max_length=MAX_TAGS)
    details: str | None = Field(default=None, max_length=2000)
    customdata: dict[str, Any] | None = None
    href: str | None = Field(default=None, max_length=2000)
