"""One Settings object for every part of metalflow: environment (METALFLOW_*), then flags."""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from metalflow.values import DhcpMode, check_http_url, check_script_words

DEFAULT_DATA_DIR = Path("metalflow-data")
DEFAULT_HTTP = "0.0.0.0:7080"
DEFAULT_IPXE_DIR = Path("/usr/lib/ipxe")
DEFAULT_CONSOLE = "console=tty0 console=ttyS0,115200"


class ScriptToken(StrEnum):
    """The token an install script carries (docs/agent-protocol.md, Identity)."""

    BOOT = "boot"
    AGENT = "agent"


class TlsMode(StrEnum):
    """Where the HTTPS listener's certificate comes from without --tls-cert and --tls-key."""

    SELF_SIGNED = "self-signed"


class Role(StrEnum):
    """What one `metalflow up` process runs; several processes on one PostgreSQL may split them."""

    API = "api"
    BOOT = "boot"
    METADATA = "metadata"
    CONTROLLER = "controller"
    POWER = "power"


ALL_ROLES = frozenset(Role)

HOST_SIZE_RANGES: dict[str, tuple[int, int, int]] = {
    "public4": (4, 28, 32),
    "private4": (4, 28, 32),
    "public6": (6, 64, 128),
    "project_private4": (4, 16, 30),
    "project_public6": (6, 40, 64),
}
"""Each per-host size setting: its IP family and the prefix lengths it may take."""
PACKET_HOST_SIZES: dict[str, int] = {
    "public4": 31,
    "private4": 31,
    "public6": 127,
    "project_private4": 25,
    "project_public6": 56,
}
"""Packet's per-host layer 3: a /31 public and private IPv4 and a /127 public IPv6 per machine,
from a /25 private IPv4 and a /56 IPv6 block per project and metro."""
HOLDS = {"project_private4": "private4", "project_public6": "public6"}
"""A project's block and the host blocks carved from it: the block must hold them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METALFLOW_", extra="forbid")

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="where SQLite, keys and tokens live"
    )
    database: str | None = Field(
        default=None, description="SQLAlchemy URL; default is a SQLite file in the data dir"
    )
    http: str = Field(default=DEFAULT_HTTP, description="ADDR:PORT of the API and boot HTTP server")
    https: str | None = Field(
        default=None,
        description="ADDR:PORT of a second listener serving the same API over HTTPS (the Metal"
        " API's clients speak HTTPS only); needs tls_cert and tls_key, or tls",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain) of the HTTPS listener"
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    tls: TlsMode | None = Field(
        default=None,
        description="self-signed: the HTTPS listener's certificate is signed by a CA of the data"
        " dir's own (DATA_DIR/tls/ca.pem, the bundle to give clients), made once and kept",
    )
    db_pool_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="PostgreSQL connections per process; more than the cores in use only adds"
        " contention",
    )
    event_retention_hours: float = Field(
        default=30 * 24,
        ge=0,
        description="events older than this are deleted (0 keeps them forever)",
    )
    audit_retention_days: float = Field(
        default=365,
        ge=0,
        description="audit entries older than this are deleted, once an hour (0 keeps them"
        " forever)",
    )
    roles: Annotated[frozenset[Role], NoDecode] = Field(
        default=ALL_ROLES,
        description="what this process runs, comma-separated: api (/api/v1), boot (DHCP, TFTP,"
        " RA, /boot), metadata (its port, on the API port), controller (timeout sweeps, event"
        " and audit pruning, IP quarantine), power (power jobs, BMC sync)",
    )
    controller_interval: float = Field(
        default=1.0, gt=0, description="seconds between timeout and retry sweeps"
    )
    ipam_quarantine_seconds: float = Field(
        default=3600,
        ge=0,
        description="released IP blocks wait this long before they are handed out again",
    )

    ipam_host_sizes: dict[str, int] = Field(
        default_factory=lambda: dict(PACKET_HOST_SIZES),
        description="prefix lengths of what a machine assigned to a project gets, as JSON:"
        f" {json.dumps(PACKET_HOST_SIZES)} (keys left out keep these)",
    )
    ipam_metro_sizes: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='per-metro overrides of ipam_host_sizes, as JSON: {"am6": {"public4": 32}}',
    )

    interface: str | None = Field(
        default=None,
        description="network interface the DHCP and TFTP servers listen on (none: boot services"
        " other than HTTP are off)",
    )
    dhcp_mode: DhcpMode = Field(
        default=DhcpMode.RESERVATION,
        description="reservation (full DHCP), proxy (ProxyDHCP beside the site's DHCP) or off;"
        " for the interface's own network when boot_config names none",
    )
    boot_config: Path | None = Field(
        default=None, description="YAML file with `networks:` (subnets, modes, options, pools)"
    )
    dhcp_pool: str | None = Field(
        default=None,
        description="START-END: addresses for machines not in inventory, on the interface's"
        " network (reservation mode)",
    )
    public_url: str | None = Field(
        default=None,
        description="base URL machines reach the HTTP server at; default http://INTERFACE_IP:PORT",
    )
    dhcp_port: int = Field(default=67, ge=1, lt=65536, description="DHCP server port")
    tftp_port: int = Field(default=69, ge=1, lt=65536, description="TFTP server port")
    ipxe_dir: Path = Field(
        default=DEFAULT_IPXE_DIR, description="iPXE binaries (Debian's ipxe package)"
    )
    boot_dir: Path | None = Field(
        default=None, description="more files served over TFTP and under /boot/assets/"
    )
    kernel: Path | None = Field(default=None, description="install environment kernel")
    initrd: Path | None = Field(default=None, description="install environment initramfs")
    kernel_args: str = Field(
        default="", description="extra kernel command line for every install environment boot"
    )
    console: str = Field(default=DEFAULT_CONSOLE, description="console= arguments of the kernel")
    discovery: bool = Field(
        default=False, description="netboot unknown machines into the install environment"
    )
    script_token: ScriptToken = Field(
        default=ScriptToken.BOOT,
        description="token in the install script: boot (bound to the workflow's start,"
        " short-lived, exchanged once for the run's token) or agent (the machine's agent token,"
        " valid until rotated: Tinkerbell's behaviour)",
    )
    boot_token_ttl: float = Field(
        default=1800.0,
        gt=0,
        le=7 * 24 * 3600,
        description="seconds a boot token may wait for its exchange (kernel and initrd over the"
        " slowest link first)",
    )
    script_token_any_address: bool = Field(
        default=False,
        description="serve install scripts (their token) to any address, not only to the one"
        " metalflow's DHCP gave the MAC: for DHCP relays and foreign DHCP servers",
    )
    discovery_networks: list[str] = Field(
        default_factory=list,
        description="networks whose machines may register through discovery (none: any)",
    )
    discovery_rate_per_address: int = Field(
        default=10, ge=1, le=100_000, description="discoveries per minute from one address"
    )
    discovery_rate: int = Field(
        default=100, ge=1, le=100_000, description="discoveries per minute from all addresses"
    )
    ipv6_ra: bool = Field(
        default=True,
        description="answer netbooting machines' IPv6 router solicitations (iPXE waits ~13 s"
        " for one otherwise); the answer announces no router and no prefix",
    )
    power_sync_interval: float = Field(
        default=60.0,
        ge=0,
        description="seconds between reads of every BMC's power state (0: no periodic sync)",
    )
    power_workers: int = Field(
        default=32, ge=1, le=1024, description="BMC calls (jobs and sync reads) at once"
    )
    metadata_port: int = Field(
        default=50061, ge=0, le=65535, description="port of the metadata service (0: off)"
    )
    metadata_on_api_port: bool = Field(
        default=False, description="also serve the metadata paths on the API port"
    )
    metadata_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="networks whose X-Forwarded-For names the metadata caller",
    )
    bios_file: str = Field(default="undionly.kpxe", description="boot file for legacy BIOS")
    uefi_file: str = Field(default="ipxe.efi", description="boot file for UEFI x86-64")
    arm64_file: str = Field(default="snp-arm64.efi", description="boot file for UEFI arm64")

    @field_validator("http")
    @classmethod
    def _http_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--http must be ADDR:PORT, e.g. 0.0.0.0:7080 (got {value!r})")
        return value

    @field_validator("https")
    @classmethod
    def _https_has_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--https must be ADDR:PORT, e.g. 0.0.0.0:7443 (got {value!r})")
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> Settings:
        """An HTTPS listener has one source of its certificate; TLS options need one."""
        given = self.tls_cert is not None or self.tls_key is not None
        if self.https is None:
            if given or self.tls is not None:
                raise ValueError(
                    "--tls, --tls-cert and --tls-key are for the HTTPS listener: add --https"
                    " ADDR:PORT"
                )
            return self
        if self.tls is not None and given:
            raise ValueError(
                "--tls self-signed makes its own certificate: leave out --tls-cert and --tls-key,"
                " or --tls"
            )
        if self.tls is None and (self.tls_cert is None or self.tls_key is None):
            raise ValueError(
                "--https needs --tls-cert FILE and --tls-key FILE, or --tls self-signed"
            )
        if self.https_port == self.http_port and self.https_host == self.http_host:
            raise ValueError(
                f"--https {self.https} is the --http address: give the HTTPS listener its own port"
            )
        return self

    @field_validator("roles", mode="before")
    @classmethod
    def _known_roles(cls, value: object) -> object:
        """Comma-separated in the environment as on the command line; each one named."""
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, (list, tuple, set, frozenset)):
            return value
        valid = ", ".join(Role)
        roles = set()
        for word in (str(name).strip() for name in names):
            if not word:
                continue
            try:
                roles.add(Role(word))
            except ValueError:
                raise ValueError(f"--roles: {word!r} is not a role (valid: {valid})") from None
        if not roles:
            raise ValueError(f"--roles needs at least one role (valid: {valid})")
        return frozenset(roles)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_http_url(value, "--public-url")
            except ValueError as exc:
                raise ValueError(f"{exc}; e.g. http://192.0.2.1:7080") from None
        return value

    @field_validator("kernel_args", "console")
    @classmethod
    def _script_words(cls, value: str, info: ValidationInfo) -> str:
        """They go into every install script as they are: refused here, not at each boot."""
        return check_script_words(value, f"--{str(info.field_name).replace('_', '-')}")

    @field_validator("bios_file", "uefi_file", "arm64_file")
    @classmethod
    def _boot_file_name(cls, value: str, info: ValidationInfo) -> str:
        """A name in the boot tree, sent in DHCP's file field (128 bytes) as it is."""
        if not re.fullmatch(r"[A-Za-z0-9._-][A-Za-z0-9._/-]{0,126}", value) or ".." in value:
            raise ValueError(
                f"METALFLOW_{str(info.field_name).upper()} must be a file name in the boot tree"
                f" (letters, digits, . _ - /, no '..'), e.g. ipxe.efi; got {value!r}"
            )
        return value

    @field_validator("metadata_trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"--metadata-trusted-proxy {network!r} is not an address or network,"
                    " e.g. 192.0.2.5 or 192.0.2.0/28"
                ) from None
        return value

    @field_validator("discovery_networks")
    @classmethod
    def _discovery_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"--discovery-networks {network!r} is not an address or network,"
                    " e.g. 192.0.2.0/24,2001:db8::/64"
                ) from None
        return value

    @field_validator("ipam_host_sizes")
    @classmethod
    def _host_sizes(cls, value: dict[str, int]) -> dict[str, int]:
        return _checked_sizes("METALFLOW_IPAM_HOST_SIZES", {**PACKET_HOST_SIZES, **value})

    @field_validator("ipam_metro_sizes")
    @classmethod
    def _metro_sizes(
        cls, value: dict[str, dict[str, int]], info: ValidationInfo
    ) -> dict[str, dict[str, int]]:
        """Each override is checked with the defaults it leaves in place, at start-up."""
        defaults = info.data.get("ipam_host_sizes", PACKET_HOST_SIZES)
        for metro, sizes in value.items():
            if not metro.strip():
                raise ValueError(
                    "METALFLOW_IPAM_METRO_SIZES: a metro code is empty: key each override by"
                    ' its metro, e.g. {"am6": {"public4": 32}}'
                )
            _checked_sizes(f"METALFLOW_IPAM_METRO_SIZES[{metro!r}]", sizes)
            _checked_sizes(f"METALFLOW_IPAM_METRO_SIZES[{metro!r}]", {**defaults, **sizes})
        return value

    def host_sizes(self, metro: str) -> dict[str, int]:
        """The per-host sizes in `metro`: its overrides over the defaults."""
        return {**self.ipam_host_sizes, **self.ipam_metro_sizes.get(metro, {})}

    @functools.cached_property
    def discovery_allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.discovery_networks]

    @functools.cached_property
    def metadata_trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.metadata_trusted_proxies]

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0].strip("[]")

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2])

    @property
    def https_host(self) -> str | None:
        return None if self.https is None else self.https.rpartition(":")[0].strip("[]")

    @property
    def https_port(self) -> int | None:
        return None if self.https is None else int(self.https.rpartition(":")[2])

    @property
    def database_url(self) -> str:
        if self.database:
            url = self.database
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            return url
        return f"sqlite:///{(self.data_dir / 'metalflow.db').resolve()}"


def _checked_sizes(setting: str, sizes: Mapping[str, int]) -> dict[str, int]:
    """Known keys, each in its family's range, and a project's blocks that hold a host's."""
    for key, size in sizes.items():
        if key not in HOST_SIZE_RANGES:
            known = ", ".join(HOST_SIZE_RANGES)
            raise ValueError(f"{setting}: {key!r} is not a per-host size: use one of {known}")
        family, shortest, longest = HOST_SIZE_RANGES[key]
        if not shortest <= size <= longest:
            raise ValueError(
                f"{setting}: {key} must be an IPv{family} prefix length from {shortest} to"
                f" {longest} (got {size!r})"
            )
    for project_key, host_key in HOLDS.items():
        if project_key in sizes and host_key in sizes and sizes[project_key] > sizes[host_key]:
            raise ValueError(
                f"{setting}: a /{sizes[project_key]} {project_key} block cannot hold a"
                f" /{sizes[host_key]} {host_key}: make {project_key} at most {sizes[host_key]}"
            )
    return dict(sizes)
