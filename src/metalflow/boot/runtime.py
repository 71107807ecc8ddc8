"""The boot services of `metalflow up --interface IFACE`: DHCP and TFTP on the interface, beside
the HTTP server, in the same asyncio loop, answering from the shared in-memory index."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from anyio import to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metalflow.boot.assets import boot_tree
from metalflow.boot.dhcp.leases import LeaseStore
from metalflow.boot.dhcp.network import AddressRange, DhcpMode, NetworkConfig
from metalflow.boot.dhcp.policy import BootSettings
from metalflow.boot.dhcp.server import DhcpServer, InterfaceAddress, interface_address
from metalflow.boot.errors import BootSetupError
from metalflow.boot.ra import RouterAdvertiser
from metalflow.boot.tftp.server import TftpServer, TransferRecord
from metalflow.config import Settings
from metalflow.errors import validation_message
from metalflow.metrics import Metrics
from metalflow.recorder import UNKNOWN_CALLERS
from metalflow.services import Services
from metalflow.urls import base_url

log = logging.getLogger("metalflow.boot")


class BootConfig(BaseModel):
    """The `--boot-config` file."""

    model_config = ConfigDict(extra="forbid")
    networks: list[NetworkConfig] = Field(min_length=1)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(
        ".[", "["
    )


def load_boot_config(path: Path) -> list[NetworkConfig]:
    """The networks of a `--boot-config` file; any fault names the file and the field."""
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BootSetupError(f"--boot-config {path}: {exc.strerror}", field="boot_config") from None
    except yaml.YAMLError as exc:
        raise BootSetupError(
            f"--boot-config {path}: not YAML ({exc})", field="boot_config"
        ) from None
    try:
        return BootConfig.model_validate(raw).networks
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _field(error["loc"])
        message = validation_message(error)
        raise BootSetupError(f"--boot-config {path}: {where}: {message}", field=where) from None


def parse_pool(value: str, subnet: ipaddress.IPv4Network) -> AddressRange:
    """`--dhcp-pool START-END`, inside the interface's own subnet."""
    start, sep, end = value.partition("-")
    try:
        pool = AddressRange(start=ipaddress.IPv4Address(start.strip()), end=end.strip())
    except (ValueError, ValidationError):
        pool = None
    if not sep or pool is None:
        raise BootSetupError(
            f"--dhcp-pool must be START-END, e.g. 192.0.2.100-192.0.2.199 (got {value!r})",
            field="dhcp_pool",
        )
    for address in (pool.start, pool.end):
        if address not in subnet:
            raise BootSetupError(
                f"--dhcp-pool address {address} is outside {subnet}, the network of the interface",
                field="dhcp_pool",
            )
    return pool


def networks_for(settings: Settings, local: InterfaceAddress) -> list[NetworkConfig]:
    """The configured networks, or else the interface's own network in `--dhcp-mode`."""
    if settings.boot_config is not None:
        if settings.dhcp_pool or settings.dhcp_mode is not DhcpMode.RESERVATION:
            raise BootSetupError(
                "--boot-config sets mode and pool per network; drop --dhcp-mode/--dhcp-pool",
                field="boot_config",
            )
        networks = load_boot_config(settings.boot_config)
        if not any(local.address in net.subnet for net in networks):
            log.warning(
                "event=boot.config.no_local_network interface=%s address=%s reason=no network"
                " in --boot-config holds the interface's address: only relayed requests are"
                " answered",
                local.name,
                local.address,
            )
        return networks
    pool = parse_pool(settings.dhcp_pool, local.network) if settings.dhcp_pool else None
    if pool is not None and settings.dhcp_mode is not DhcpMode.RESERVATION:
        raise BootSetupError("--dhcp-pool needs --dhcp-mode reservation", field="dhcp_pool")
    return [
        NetworkConfig(
            subnet=local.network,
            mode=settings.dhcp_mode,
            server_ip=local.address,
            pool=pool,
        )
    ]


def boot_settings(settings: Settings, url: str) -> BootSettings:
    return BootSettings(
        http_url=url,
        bios_file=settings.bios_file,
        uefi_x64_file=settings.uefi_file,
        uefi_arm64_file=settings.arm64_file,
        discovery=settings.discovery,
    )


def check_boot_files(settings: Settings) -> None:
    """Fail at start, not at the first machine's boot, when a configured file is missing."""
    for option, path in (
        ("--kernel", settings.kernel),
        ("--initrd", settings.initrd),
        ("--boot-config", settings.boot_config),
    ):
        if path is not None and not path.is_file():
            raise BootSetupError(f"{option} {path}: no such file", field=option.lstrip("-"))
    if settings.boot_dir is not None and not settings.boot_dir.is_dir():
        raise BootSetupError(f"--boot-dir {settings.boot_dir}: no such directory", field="boot_dir")


@dataclass(frozen=True)
class BootPlan:
    """What the boot servers will serve, checked before anything is opened or written."""

    local: InterfaceAddress
    networks: list[NetworkConfig]


def plan_boot(settings: Settings, interface: str) -> BootPlan:
    try:
        local = interface_address(interface)
    except OSError as exc:
        raise BootSetupError(f"--interface {interface}: {exc}", field="interface") from None
    return BootPlan(local, networks_for(settings, local))


class BootServers:
    """DHCP (unless mode off everywhere) and TFTP on the planned interface."""

    def __init__(self, settings: Settings, services: Services, plan: BootPlan) -> None:
        self.settings = settings
        self.services = services
        self.local = plan.local
        self.networks = plan.networks
        index = services.index
        self.leases = LeaseStore(services.db, lambda address: index.by_ip(address) is not None)
        self.dhcp: DhcpServer | None = None
        self.tftp_outcomes: collections.Counter[str] = collections.Counter()
        self._lease_writer: asyncio.Task[None] | None = None
        if any(net.mode is not DhcpMode.OFF for net in self.networks):
            self.dhcp = DhcpServer(
                interface=self.local,
                networks=[net for net in self.networks if net.mode is not DhcpMode.OFF],
                boot=boot_settings(
                    settings, base_url(settings, f"{self.local.address}:{settings.http_port}")
                ),
                index=index,
                leases=self.leases,
                events=services.boot_events,
                port=settings.dhcp_port,
            )
        self.tftp = TftpServer(boot_tree(settings), on_transfer=self._on_transfer)
        self.advertiser: RouterAdvertiser | None = None
        if settings.ipv6_ra:
            self.advertiser = RouterAdvertiser(
                self.local.name, lambda mac: index.by_mac(mac) is not None, settings.discovery
            )
        self._register_metrics(services.metrics)

    def _register_metrics(self, metrics: Metrics) -> None:
        dhcp = self.dhcp
        if dhcp is not None:
            metrics.register_counts(
                "metalflow_dhcp_replies", "DHCP replies sent", "kind", lambda: dhcp.replies
            )
            metrics.register_counts(
                "metalflow_dhcp_dropped",
                "DHCP packets not answered",
                "reason",
                lambda: dhcp.dropped,
            )
            leases = self.leases
            metrics.register_counts(
                "metalflow_dhcp_lease_writes",
                "Group commits of pool leases, and the lease changes they carried",
                "what",
                lambda: {"commits": leases.commits, "leases": leases.committed_leases},
            )
        advertiser = self.advertiser
        if advertiser is not None:
            metrics.register_counts(
                "metalflow_ipv6_ra",
                "IPv6 router solicitations answered, and those ignored by reason",
                "outcome",
                lambda: {"answered": advertiser.answered, **advertiser.ignored},
            )
        metrics.register_counts(
            "metalflow_tftp_dropped", "TFTP packets dropped", "reason", lambda: self.tftp.dropped
        )
        metrics.register_counts(
            "metalflow_tftp_transfers", "TFTP transfers", "outcome", lambda: self.tftp_outcomes
        )

    def _on_transfer(self, record: TransferRecord) -> None:
        self.tftp_outcomes[str(record.outcome)] += 1
        found = self.services.index.by_ip(ipaddress.IPv4Address(record.client[0]))
        self.services.boot_events.record(
            "tftp.transfer",
            found[0] if found else None,
            f"{record.filename}:{record.outcome}" if found else UNKNOWN_CALLERS,
            file=record.filename,
            outcome=record.outcome,
            bytes=record.bytes_sent,
            client=record.client[0],
            error=record.error or None,
        )

    async def start(self) -> None:
        """Open the sockets; a port that cannot be had is a BootSetupError naming it."""
        try:
            if self.dhcp is not None:
                await to_thread.run_sync(self.leases.load)
                self._lease_writer = asyncio.create_task(self.leases.run())
                await self.dhcp.start()
            await self.tftp.start(str(self.local.address), self.settings.tftp_port)
        except OSError as exc:
            await self.stop()
            raise BootSetupError(
                f"--interface {self.local.name}: cannot open the DHCP/TFTP ports"
                f" (DHCP {self.settings.dhcp_port}, TFTP {self.settings.tftp_port}): {exc}"
                " (another DHCP or TFTP server running? not root?)",
                field="interface",
            ) from None
        if self.advertiser is not None:
            try:
                self.advertiser.start()
            except OSError as exc:
                log.warning(
                    "event=ra.unavailable interface=%s error=%s: iPXE will wait ~13 s per boot"
                    " for an IPv6 router (IPv6 disabled on the interface?)",
                    self.local.name,
                    exc,
                )
                self.advertiser = None
        log.info(
            "event=boot.up interface=%s address=%s tftp=%s:%d",
            self.local.name,
            self.local.address,
            self.local.address,
            self.settings.tftp_port,
        )

    async def stop(self) -> None:
        """Close the sockets, then write the leases still queued (releases among them)."""
        if self.dhcp is not None:
            self.dhcp.close()
        if self.advertiser is not None:
            self.advertiser.close()
        if self._lease_writer is not None:
            self._lease_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_writer
            self._lease_writer = None
            await self.leases.drain()
        await self.tftp.close()
