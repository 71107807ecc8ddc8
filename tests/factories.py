"""Builders of the in-memory machine views the boot and metadata tests answer from."""

from __future__ import annotations

from ipaddress import IPv4Address

from metalflow.index.views import BootOptions, InterfaceView, MachineView


def _ip(value: str | None) -> IPv4Address | None:
    return IPv4Address(value) if value else None


def interface_view(
    mac: str,
    *,
    ip: str | None = None,
    netmask: str | None = None,
    gateway: str | None = None,
    nameservers: tuple[str, ...] = (),
    hostname: str | None = None,
    lease_time: int | None = None,
    allow_pxe: bool = True,
    allow_workflow: bool = True,
) -> InterfaceView:
    return InterfaceView(
        mac=mac,
        ip=_ip(ip),
        netmask=_ip(netmask),
        gateway=_ip(gateway),
        nameservers=tuple(map(IPv4Address, nameservers)),
        hostname=hostname,
        lease_time=lease_time,
        allow_pxe=allow_pxe,
        allow_workflow=allow_workflow,
    )


def machine_view(
    *,
    id: str = "m-1",
    name: str = "m1",
    hostname: str | None = None,
    uefi: bool = False,
    state: str = "provisioning",
    agent_token_generation: int = 0,
    has_active_workflow: bool = True,
    interfaces: tuple[InterfaceView, ...] = (),
    boot: BootOptions | None = None,
) -> MachineView:
    return MachineView(
        id=id,
        name=name,
        hostname=hostname,
        arch="x86_64",
        uefi=uefi,
        state=state,
        agent_token_generation=agent_token_generation,
        has_active_workflow=has_active_workflow,
        interfaces=interfaces,
        boot=boot or BootOptions(),
    )
