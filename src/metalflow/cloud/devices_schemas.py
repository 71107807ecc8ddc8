"""Devices as Equinix Metal's clients send and read them.

Requests accept what packet-python 1.44.3 and equinix-metal 0.11.0 send, unmodified: packet-python
posts `tags: {}` and `features: {}` (objects, when empty), `billing_cycle`, `spot_instance`,
`public_ipv4_subnet_size` and `project_id` on every create, and `ipxe_script_url: null` on every
update. What metalflow does not offer (spot instances, other billing than hourly, storage layouts)
is refused by name rather than ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from metalflow.cloud.metal import Href, Meta, MetalModel

MAX_USERDATA = 64 * 1024
"""As the inventory's user-data: what the metadata service serves."""
MAX_TAGS = 50
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def check_hostname(value: str) -> str:
    """RFC 1123: dot-separated labels of letters, digits and inner hyphens, 253 at most."""
    name = value.lower()
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"{value!r} is not an RFC 1123 hostname: dot-separated labels of 1-63 letters, digits"
            " and hyphens (not first or last), 253 characters at most"
        )
    return name


class IpAddressRequest(MetalModel):
    address_family: Literal[4, 6]
    public: bool
    cidr: int | None = None
    ip_reservations: list[str] | None = None


class SshKeyInline(MetalModel):
    key: str
    label: str | None = None


class DeviceCreate(MetalModel):
    plan: str = Field(min_length=1, max_length=64)
    metro: str = Field(min_length=1, max_length=64)
    operating_system: str = Field(min_length=1, max_length=64)
    hostname: str | None = Field(default=None, max_length=253)
    description: str = Field(default="", max_length=1000)
    userdata: str = Field(default="", max_length=MAX_USERDATA)
    customdata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    ip_addresses: list[IpAddressRequest] | None = Field(default=None, max_length=8)
    project_ssh_keys: list[str] = Field(default_factory=list, max_length=100)
    user_ssh_keys: list[str] = Field(default_factory=list, max_length=100)
    ssh_keys: list[SshKeyInline] = Field(default_factory=list, max_length=100)
    no_ssh_keys: bool = False
    always_pxe: bool = False
    ipxe_script_url: str | None = Field(default=None, max_length=2000)
    hardware_reservation_id: str | None = Field(default=None, max_length=64)
    locked: bool = False
    billing_cycle: Literal["hourly"] = "hourly"
    spot_instance: Literal[False] = False
    public_ipv4_subnet_size: int | None = None
    project_id: str | None = None
    """packet-python repeats the path's project in the body; it must agree."""
    features: dict[str, Any] | list[str] = Field(default_factory=list)
    facility: str | None = None
    """Equinix's facilities became metros; a facility is refused with how to name the metro."""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        return None if value is None else check_hostname(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _empty_tags(cls, value: object) -> object:
        """packet-python sends an empty object for no tags."""
        return [] if value == {} else value


class DeviceUpdate(MetalModel):
    hostname: str | None = Field(default=None, max_length=253)
    description: str | None = Field(default=None, max_length=1000)
    userdata: str | None = Field(default=None, max_length=MAX_USERDATA)
    customdata: dict[str, Any] | None = None
    tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)
    locked: bool | None = None
    always_pxe: bool | None = None
    ipxe_script_url: str | None = Field(default=None, max_length=2000)
    billing_cycle: Literal["hourly"] | None = None
    spot_instance: Literal[False] | None = None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        return None if value is None else check_hostname(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _empty_tags(cls, value: object) -> object:
        """packet-python sends an empty object for no tags."""
        return [] if value == {} else value


class DeviceAction(MetalModel):
    type: Literal["power_on", "power_off", "reboot", "reinstall", "rescue"]
    operating_system: str | None = Field(default=None, max_length=64)
    """reinstall: another operating system (default: the device's)."""
    preserve_data: bool = False
    deprovision_fast: bool = False
    ipxe_script_url: str | None = Field(default=None, max_length=2000)
    force_delete: bool | None = None


class PlanBrief(MetalModel):
    id: str | None = None
    slug: str | None = None
    name: str | None = None
    class_: str | None = Field(default=None, alias="class")
    line: str | None = None
    description: str | None = None
    specs: dict[str, Any] | None = None
    href: str | None = None


class OperatingSystemBrief(MetalModel):
    id: str | None = None
    slug: str | None = None
    name: str | None = None
    distro: str | None = None
    version: str | None = None
    provisionable_on: list[str] | None = None
    preinstallable: bool | None = None
    licensed: bool | None = None
    href: str | None = None


class MetroBrief(MetalModel):
    id: str | None = None
    code: str | None = None
    name: str | None = None
    country: str | None = None
    href: str | None = None


class AvailableAction(MetalModel):
    type: str | None = None
    name: str | None = None


class DeviceAddress(MetalModel):
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
    parent_block: dict[str, Any] | None = None
    created_at: str | None = None
    href: str | None = None


class DevicePublic(MetalModel):
    id: str | None = None
    short_id: str | None = None
    hostname: str | None = None
    description: str | None = None
    state: str | None = None
    tags: list[str] | None = None
    billing_cycle: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    locked: bool | None = None
    always_pxe: bool | None = None
    ipxe_script_url: str | None = None
    userdata: str | None = None
    customdata: dict[str, Any] | None = None
    operating_system: OperatingSystemBrief | None = None
    plan: PlanBrief | None = None
    metro: MetroBrief | None = None
    facility: dict[str, Any] | None = None
    project: Href | None = None
    project_lite: Href | None = None
    ip_addresses: list[DeviceAddress] | None = None
    ssh_keys: list[Href] | None = None
    volumes: list[Any] | None = None
    hardware_reservation: Href | None = None
    actions: list[AvailableAction] | None = None
    provisioning_percentage: float | None = None
    network_ports: list[Any] | None = None
    spot_instance: bool | None = None
    iqn: str | None = None
    href: str | None = None


class DeviceList(MetalModel):
    devices: list[DevicePublic]
    meta: Meta | None = None


class DeviceEvent(MetalModel):
    """One of metalflow's events about the device's machine, as Equinix lists events."""

    id: str | None = None
    type: str | None = None
    state: str | None = None
    body: str | None = None
    interpolated: str | None = None
    relationships: list[Href] | None = None
    created_at: str | None = None
    href: str | None = None


class DeviceEventList(MetalModel):
    events: list[DeviceEvent]
    meta: Meta | None = None
