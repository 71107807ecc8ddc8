"""Machine input and output shapes (pydantic): metalflow's own `Machine` kind and the API."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from metalflow.power.driver import driver_names
from metalflow.values import IPXE_MAGIC as IPXE_MAGIC
from metalflow.values import NAME_PATTERN as NAME_PATTERN
from metalflow.values import check_http_url as check_http_url
from metalflow.values import check_ipxe_script as check_ipxe_script
from metalflow.values import check_script_words as check_script_words
from metalflow.values import normalize_mac as normalize_mac

MAX_USER_DATA = 64 * 1024
"""Bytes as stored and served: the metadata index holds every machine's user-data in memory."""
MAX_METADATA_JSON = 256 * 1024
"""`spec.metadata` (and each free field of a Hardware spec), as Kubernetes bounds annotations: the
metadata index and every stored row hold it in full."""
MAX_LABELS_JSON = 64 * 1024
MAX_BMC_OPTIONS_JSON = 16 * 1024


def decode_base64(value: str, what: str) -> bytes:
    """Standard base64 (RFC 4648, `=` padding); line breaks and spaces, as `base64` wraps its
    output, are ignored."""
    compact = "".join(value.split())
    for position, char in enumerate(compact):
        if not (char.isascii() and (char.isalnum() or char in "+/=")):
            raise ValueError(
                f"{what} is not valid base64: {char!r} (at offset {position}) is not in the"
                " base64 alphabet A-Z a-z 0-9 + / (and = padding); encode the bytes with"
                " `base64 -w0 FILE`"
            )
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise ValueError(
            f"{what} is not valid base64 ({exc}): it comes in groups of 4 characters, the"
            " last one padded with = or == at the very end; encode the bytes with"
            " `base64 -w0 FILE`"
        ) from None


def json_sized(value: Any, what: str, limit: int) -> Any:
    """`value` as the JSON types it is stored as (a YAML timestamp as its text), refused past
    `limit` bytes of compact UTF-8 JSON: free-form fields are capped by their encoded size, the
    one measure that bounds every later copy of them. Called before pydantic copies them."""
    try:
        encoded = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except (TypeError, ValueError) as exc:  # a NaN, a key that is a date
        raise ValueError(
            f"{what} cannot be stored as JSON ({exc}); quote such keys and values"
        ) from None
    size = len(encoded.encode())
    if size > limit:
        raise ValueError(f"{what} is {size:,} bytes as JSON; the limit is {limit:,}")
    return json.loads(encoded)


def check_user_data_size(data: bytes, what: str, info: ValidationInfo) -> None:
    if len(data) <= MAX_USER_DATA:
        return
    fix = (
        "a Tinkerbell Hardware carries text only: apply the machine as kind Machine"
        " (metalflow/v1) with the gzip'd bytes base64-encoded as userDataBase64"
        if (info.context or {}).get("source") == "Hardware"
        else "gzip it and send the gzip'd bytes base64-encoded as userDataBase64"
        " (cloud-init decompresses gzip'd user-data itself)"
    )
    raise ValueError(f"{what} is {len(data)} bytes; the limit is {MAX_USER_DATA} bytes: {fix}")


def user_data_fields(data: bytes | None) -> dict[str, str]:
    """How stored user-data is shown: `userData` when it is UTF-8 text, else `userDataBase64`,
    so that what is shown can be applied again unchanged."""
    if data is None:
        return {}
    try:
        return {"userData": data.decode()}
    except UnicodeDecodeError:
        return {"userDataBase64": base64.b64encode(data).decode()}


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
    lease_time: int | None = Field(default=None, ge=60, le=2**32 - 1)
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
            network = ipaddress.IPv4Network(f"0.0.0.0/{value}")
        except ValueError:
            raise ValueError(f"{value!r} is not a netmask; write e.g. 255.255.255.0") from None
        return str(network.netmask)


class DiskSpec(Strict):
    device: str
    size_bytes: int | None = Field(default=None, ge=0)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not value.startswith("/dev/"):
            raise ValueError(f"{value!r} is not a device path; write e.g. /dev/sda")
        return value


BMC_STORED_KEYS = frozenset({"port", "insecure_tls"})
"""Kept beside the driver options in `Machine.bmc_options`, so an option may not use them."""


class BmcSpec(Strict):
    driver: str
    """A registered power driver: metalflow's own or a plug-in's (the `metalflow.power`
    entry points)."""
    address: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    insecure_tls: bool = False
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """The driver's own settings (redfish `system`, ipmi `cipher_suite`, webhook `url`) and the
    power job's (`power_timeout`, `soft_off_timeout`, `poll_interval`)."""

    @field_validator("driver")
    @classmethod
    def _driver(cls, value: str) -> str:
        known = driver_names()
        if value not in known:
            raise ValueError(f"unknown driver {value!r}; known: {', '.join(known)}")
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _options_size(cls, value: Any) -> Any:
        return json_sized(value, "options", MAX_BMC_OPTIONS_JSON)

    @field_validator("options")
    @classmethod
    def _options(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        clash = sorted(BMC_STORED_KEYS & set(value))
        if clash:
            raise ValueError(f"{clash[0]} goes beside options (bmc.{clash[0]}), not inside them")
        return value

    def stored_options(self) -> dict[str, str | int | float | bool]:
        """The `Machine.bmc_options` column: port and insecure_tls when set, then the options."""
        extra: dict[str, str | int | float | bool] = {}
        if self.port is not None:
            extra["port"] = self.port
        if self.insecure_tls:
            extra["insecure_tls"] = True
        return {**extra, **self.options}


class BootSpec(Strict):
    """Per-machine netboot overrides: an own iPXE script (wins), else a URL to chain to, plus
    kernel arguments and console for the install environment."""

    ipxe_script: str | None = None
    ipxe_url: str | None = None
    kernel_args: str | None = None
    console: str | None = None

    @field_validator("ipxe_script")
    @classmethod
    def _script(cls, value: str | None) -> str | None:
        return None if value is None else check_ipxe_script(value, "ipxe_script")

    @field_validator("ipxe_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value, "ipxe_url")

    @field_validator("kernel_args", "console")
    @classmethod
    def _words(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_script_words(value, str(info.field_name))

    def stored(self) -> dict[str, str]:
        """The `Machine.boot` column: only what is set."""
        return self.model_dump(exclude_none=True)


class MachineSpec(Strict):
    """What an operator declares about a machine; everything else is discovered or derived."""

    name: str = Field(pattern=NAME_PATTERN)
    project: str = "default"
    metro: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict)
    arch: Literal["x86_64", "aarch64"] = "x86_64"
    uefi: bool = True
    hostname: str | None = None
    interfaces: list[InterfaceSpec] = Field(default_factory=list)
    disks: list[DiskSpec] = Field(default_factory=list)
    bmc: BmcSpec | None = None
    boot: BootSpec | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    user_data: str | None = Field(default=None, alias="userData")
    user_data_base64: str | None = Field(default=None, alias="userDataBase64")

    @field_validator("labels", "metadata", mode="before")
    @classmethod
    def _free_form_size(cls, value: Any, info: ValidationInfo) -> Any:
        limit = MAX_LABELS_JSON if info.field_name == "labels" else MAX_METADATA_JSON
        return json_sized(value, str(info.field_name), limit)

    @field_validator("user_data")
    @classmethod
    def _user_data(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            data = value.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. "\ud800" in JSON
            raise ValueError(
                f"userData is not valid Unicode text (at offset {exc.start}); send the bytes"
                " base64-encoded as userDataBase64 instead"
            ) from None
        check_user_data_size(data, "userData", info)
        return value

    @field_validator("user_data_base64")
    @classmethod
    def _user_data_base64(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        data = decode_base64(value, "userDataBase64")
        check_user_data_size(data, "userDataBase64", info)
        return base64.b64encode(data).decode()

    @model_validator(mode="after")
    def _one_user_data(self) -> MachineSpec:
        """At most one form; bytes that are UTF-8 text are kept as `userData`, the form they
        are shown in, so applying what is shown again changes nothing."""
        if self.user_data is not None and self.user_data_base64 is not None:
            raise ValueError(
                "userData and userDataBase64 are both set; give one: userData for text,"
                " userDataBase64 for any bytes (e.g. gzip'd cloud-config)"
            )
        if self.user_data_base64 is not None:
            shown = user_data_fields(base64.b64decode(self.user_data_base64))
            self.user_data = shown.get("userData")
            self.user_data_base64 = shown.get("userDataBase64")
        return self

    def user_data_bytes(self) -> bytes | None:
        """The user-data as stored and served, from whichever form was given."""
        if self.user_data_base64 is not None:
            return base64.b64decode(self.user_data_base64)
        return None if self.user_data is None else self.user_data.encode()

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
        """Everything declared, secrets excluded: equal fingerprints mean re-apply is a no-op.

        `user_data_base64` appears only when set, so text user-data fingerprints as it did
        before binary user-data existed.
        """
        exclude: dict[str, Any] = {"bmc": {"password"}}
        if self.user_data_base64 is None:
            exclude["user_data_base64"] = True
        return self.model_dump(mode="json", exclude=exclude)


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
    port: int | None = None
    username: str | None
    has_password: bool
    insecure_tls: bool = False
    options: dict[str, Any] = Field(default_factory=dict)


class BootPublic(BaseModel):
    ipxe_script: str | None = None
    ipxe_url: str | None = None
    kernel_args: str | None = None
    console: str | None = None


class MachinePublic(BaseModel):
    id: str
    name: str
    project: str
    project_id: str | None
    """The tenant project it is assigned to; None while it is the provider's."""
    metro: str | None
    labels: dict[str, str]
    arch: str
    uefi: bool
    hostname: str | None
    state: str
    state_reason: str | None
    interfaces: list[InterfacePublic]
    disks: list[dict[str, Any]]
    bmc: BmcPublic | None
    boot: BootPublic | None
    attributes: dict[str, Any]
    metadata: dict[str, Any]
    user_data: str | None = Field(default=None, alias="userData")
    user_data_base64: str | None = Field(default=None, alias="userDataBase64")
    """One of the two (see `user_data_fields`), under the keys a Machine spec takes."""
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


class ProjectAssignment(BaseModel):
    """`PUT /machines/NAME/project`: the tenant project to give the machine to, or null to
    give it back to the provider (the key is required, so that an empty body changes nothing)."""

    model_config = ConfigDict(extra="forbid")
    project: str | None


class AgentToken(BaseModel):
    """The bearer token the machine's agent authenticates with."""

    token: str
