"""Machine input and output shapes (pydantic): metalflow's own `Machine` kind and the API."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,198}[a-z0-9])?$"
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
MAX_USER_DATA = 64 * 1024


def normalize_mac(value: str) -> str:
    raw = value.strip().lower()
    if not _MAC.match(raw):
        raise ValueError(f"{value!r} is not a MAC address; write it as 52:54:00:12:34:56")
    digits = raw.replace(":", "").replace("-", "")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NetbootSpec(Strict):
    allow_pxe: bool = Field(default=True, alias="allowPXE")
    allow_workflow: bool = Field(default=True, alias="allowWorkflow")


class InterfaceSpec(Strict):
    mac: str
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    nameservers: list[str] = Field(default_factory=list)
    hostname: str | None = None
    vlan: int | None = Field(default=None, ge=1, le=4094)
    lease_time: int | None = Field(default=None, ge=60)
    netboot: NetbootSpec = Field(default_factory=NetbootSpec)

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        return normalize_mac(value)

    @field_validator("ip", "gateway")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ValueError(f"nameserver {item!r} is not an IP address") from None
        return out

    @field_validator("netmask")
    @classmethod
    def _netmask(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.IPv4Network(f"0.0.0.0/{value}")
        except ValueError:
            raise ValueError(f"{value!r} is not a netmask; write e.g. 255.255.255.0") from None
        return value


class DiskSpec(Strict):
    device: str
    size_bytes: int | None = Field(default=None, ge=0)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not value.startswith("/dev/"):
            raise ValueError(f"{value!r} is not a device path; write e.g. /dev/sda")
        return value


class BmcSpec(Strict):
    driver: Literal["ipmi", "redfish", "qemu", "manual", "webhook"]
    address: str = ""
    username: str | None = None
    password: SecretStr | None = None


class MachineSpec(Strict):
    """What an operator declares about a machine; everything else is discovered or derived."""

    name: str = Field(pattern=NAME_PATTERN)
    project: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    arch: Literal["x86_64", "aarch64"] = "x86_64"
    uefi: bool = True
    hostname: str | None = None
    interfaces: list[InterfaceSpec] = Field(default_factory=list)
    disks: list[DiskSpec] = Field(default_factory=list)
    bmc: BmcSpec | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    user_data: str | None = Field(default=None, alias="userData")

    @field_validator("user_data")
    @classmethod
    def _user_data_size(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > MAX_USER_DATA:
            raise ValueError(
                f"user-data is {len(value.encode())} bytes; the limit is {MAX_USER_DATA} bytes"
            )
        return value

    @model_validator(mode="after")
    def _unique_within(self) -> MachineSpec:
        seen_mac: dict[str, int] = {}
        seen_ip: dict[str, int] = {}
        for index, iface in enumerate(self.interfaces):
            if iface.mac in seen_mac:
                raise ValueError(
                    f"interfaces[{index}].mac {iface.mac} repeats interfaces[{seen_mac[iface.mac]}]"
                )
            seen_mac[iface.mac] = index
            if iface.ip is not None:
                if iface.ip in seen_ip:
                    raise ValueError(
                        f"interfaces[{index}].ip {iface.ip} repeats interfaces[{seen_ip[iface.ip]}]"
                    )
                seen_ip[iface.ip] = index
        return self

    def fingerprint(self) -> dict[str, Any]:
        """Everything declared, secrets excluded: equal fingerprints mean re-apply is a no-op."""
        return self.model_dump(mode="json", exclude={"bmc": {"password"}})


class InterfacePublic(BaseModel):
    mac: str
    ip: str | None
    netmask: str | None
    gateway: str | None
    nameservers: list[str]
    hostname: str | None
    vlan: int | None
    allow_pxe: bool
    allow_workflow: bool


class BmcPublic(BaseModel):
    driver: str
    address: str
    username: str | None
    has_password: bool


class MachinePublic(BaseModel):
    id: str
    name: str
    project: str
    labels: dict[str, str]
    arch: str
    uefi: bool
    hostname: str | None
    state: str
    state_reason: str | None
    interfaces: list[InterfacePublic]
    disks: list[dict[str, Any]]
    bmc: BmcPublic | None
    attributes: dict[str, Any]
    metadata: dict[str, Any]
    workflow: str | None
    created_at: str
    updated_at: str


class MachineList(BaseModel):
    items: list[MachinePublic]
    count: int


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str
    reason: str | None = None
