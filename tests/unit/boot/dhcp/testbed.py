"""The test bed's networks, boot settings and inventory, shared by the policy tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from metalflow.boot.dhcp.network import AddressRange, DhcpMode, NetworkConfig, Route
from metalflow.boot.dhcp.policy import BootSettings
from metalflow.index.views import MachineView
from tests.factories import interface_view, machine_view
from tests.unit.boot.dhcp.captures import QEMU_MAC_TEXT

IP = IPv4Address
SERVER = IP("192.0.2.1")
SETTINGS = BootSettings(http_url="http://192.0.2.1:7080")
DISCOVERY = BootSettings(http_url="http://192.0.2.1:7080", discovery=True)
LAN = NetworkConfig(
    subnet=IPv4Network("192.0.2.0/24"),
    gateway=IP("192.0.2.254"),
    nameservers=(IP("192.0.2.53"),),
    domain="lab.example",
    ntp_servers=(IP("192.0.2.123"),),
    lease_time=3600,
    pool=AddressRange(start=IP("192.0.2.100"), end=IP("192.0.2.199")),
)
RACK = NetworkConfig(subnet=IPv4Network("10.20.0.0/24"), gateway=IP("10.20.0.1"), lease_time=600)
PROXY = NetworkConfig(subnet=IPv4Network("192.0.2.0/24"), mode=DhcpMode.PROXY)
MANY_ROUTES = NetworkConfig(
    subnet=IPv4Network("192.0.2.0/24"),
    gateway=IP("192.0.2.254"),
    domain="a-rather-long-search-domain." * 6 + "example",
    routes=tuple(
        Route(destination=IPv4Network(f"10.{n}.0.0/16"), gateway=IP("192.0.2.253"))
        for n in range(40)
    ),
)


def machine(
    mac: str = QEMU_MAC_TEXT,
    *,
    ip: str | None = "192.0.2.10",
    workflow: bool = True,
    allow_pxe: bool = True,
    hostname: str | None = "node1",
    netmask: str | None = None,
    gateway: str | None = None,
    nameservers: tuple[str, ...] = (),
    lease_time: int | None = None,
) -> MachineView:
    iface = interface_view(
        mac,
        ip=ip,
        netmask=netmask,
        gateway=gateway,
        nameservers=nameservers,
        hostname=hostname,
        lease_time=lease_time,
        allow_pxe=allow_pxe,
    )
    return machine_view(
        name="rack1-u07",
        state="ready",
        agent_token_generation=1,
        has_active_workflow=workflow,
        interfaces=(iface,),
    )
