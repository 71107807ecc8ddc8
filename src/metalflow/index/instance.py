"""What a machine's OS is told about itself, gathered once from the inventory's fields.

The shape follows Tinkerbell's Hardware `spec.metadata` (which Hegel serves): `instance` holds
id, hostname, ssh_keys, userdata, tags, operating_system, ips and storage; `facility` holds the
facility code and plan. A machine applied in metalflow's own kind may leave all of it out: the
id, hostname and addresses then come from the machine and its interfaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ParentBlock:
    """The block an IPAM assignment was taken from, as Equinix's `parent_block` shows it."""

    network: str
    netmask: str
    cidr: int


@dataclass(slots=True)
class Address:
    address: str
    netmask: str
    gateway: str | None
    family: int
    public: bool
    management: bool
    cidr: int
    nic: int | None = None
    """Index of the NIC the address belongs on; None: the first NIC (or the bond)."""
    id: str | None = None
    """The IPAM block the address comes from; None for an address typed in the inventory."""
    parent: ParentBlock | None = None
    routes: tuple[str, ...] = ()
    """Networks reached through this address's gateway; none: it may carry the default route
    (a private /31's gateway routes the private networks only, in Packet's model)."""

    @property
    def network(self) -> str:
        return str(
            ipaddress.ip_network(f"{self.address}/{self.cidr}", strict=False).network_address
        )


PRIVATE_SUPERNETS = tuple(
    ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)


def private_routes(address: str, parent: str) -> tuple[str, ...]:
    """What a private IPv4 address's gateway routes: the RFC 1918 network holding it (Packet
    routes 10.0.0.0/8 through the private /31's gateway), else the block it was taken from
    (the project's), never the default route."""
    parsed = ipaddress.ip_address(address)
    supernet = next((net for net in PRIVATE_SUPERNETS if parsed in net), None)
    return (str(supernet or ipaddress.ip_network(parent)),)


def prefix_length(address: str, netmask: str) -> int | None:
    """24 for 255.255.255.0, 64 for 64 or ffff:ffff:ffff:ffff::; None when it is no netmask."""
    try:
        if ":" in netmask:
            bits = format(int(ipaddress.IPv6Address(netmask)), "0128b")
            ones = bits.count("1")
            return ones if bits == "1" * ones + "0" * (128 - ones) else None
        return ipaddress.ip_network(f"{address}/{netmask}", strict=False).prefixlen
    except ValueError:
        return None


@dataclass(slots=True)
class Nic:
    name: str
    mac: str
    nameservers: tuple[str, ...] = ()
    vlan: int | None = None


@dataclass(slots=True)
class Instance:
    id: str
    hostname: str
    facility: str = ""
    plan: str = ""
    tags: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    user_data: bytes | None = None
    operating_system: dict[str, str] = field(default_factory=dict)
    addresses: tuple[Address, ...] = ()
    nics: tuple[Nic, ...] = ()
    storage: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    """Tinkerbell's `metadata.custom`: Equinix's customdata."""
    bonding_mode: int = 0
    """Linux bonding mode (4 = 802.3ad) from `instance.network.bonding.mode`; 0 = none."""

    def first_address(self, family: int, *, public: bool) -> str | None:
        return next(
            (a.address for a in self.addresses if a.family == family and a.public == public),
            None,
        )


@dataclass(slots=True)
class InterfaceFields:
    """The inventory's interface row, as far as metadata needs it."""

    mac: str
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    nameservers: Sequence[str] = ()
    vlan: int | None = None


def instance_from(
    *,
    machine_id: str,
    name: str,
    hostname: str | None,
    interfaces: Sequence[InterfaceFields],
    metadata: Mapping[str, Any],
    user_data: bytes | None,
    assigned: Sequence[Address] = (),
) -> Instance:
    """Fields given in `metadata` win; the machine's own fill what they leave out. Addresses
    IPAM assigned to the machine (`assigned`), when it has any, are its addresses: one source
    of truth, never typed twice; without them, `instance.ips`, else the interfaces' own."""
    instance = _mapping(metadata.get("instance"))
    facility = _mapping(metadata.get("facility"))
    data = user_data if user_data is not None else instance.get("userdata")
    ips = instance.get("ips")
    if assigned:
        addresses = tuple(assigned)
    elif isinstance(ips, list) and ips:
        addresses = _addresses(ips)
    else:
        addresses = _interface_addresses(interfaces)
    return Instance(
        id=str(instance.get("id") or machine_id),
        hostname=str(instance.get("hostname") or hostname or name),
        facility=str(facility.get("facility_code") or ""),
        plan=str(facility.get("plan_slug") or ""),
        tags=tuple(str(tag) for tag in _list(instance.get("tags"))),
        ssh_keys=tuple(str(key).strip() for key in _list(instance.get("ssh_keys")) if key),
        user_data=data.encode() if isinstance(data, str) else data,
        operating_system={
            str(key): str(value)
            for key, value in _mapping(instance.get("operating_system")).items()
            if isinstance(value, str | int | float)
        },
        addresses=addresses,
        nics=tuple(
            Nic(f"eth{index}", iface.mac, tuple(iface.nameservers), iface.vlan)
            for index, iface in enumerate(interfaces)
        ),
        storage=dict(_mapping(instance.get("storage"))),
        custom=dict(_mapping(metadata.get("custom"))),
        bonding_mode=_int(_mapping(_mapping(instance.get("network")).get("bonding")).get("mode")),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _addresses(ips: list[Any]) -> tuple[Address, ...]:
    found = []
    for entry in ips:
        if not isinstance(entry, Mapping) or not entry.get("address"):
            continue
        try:
            parsed = ipaddress.ip_address(str(entry["address"]))
        except ValueError:
            continue
        default_mask = "255.255.255.255" if parsed.version == 4 else "128"
        netmask = str(entry.get("netmask") or default_mask)
        cidr = prefix_length(str(parsed), netmask)
        if cidr is None:
            continue
        found.append(
            Address(
                address=str(parsed),
                netmask=netmask,
                gateway=_gateway(entry.get("gateway"), parsed.version),
                family=parsed.version,
                public=bool(entry.get("public", False)),
                management=bool(entry.get("management", False)),
                cidr=cidr,
            )
        )
    return tuple(found)


def _gateway(value: object, version: int) -> str | None:
    """A gateway of the address's own family, else none (junk is skipped, never fatal)."""
    try:
        gateway = ipaddress.ip_address(str(value)) if value else None
    except ValueError:
        return None
    return str(gateway) if gateway is not None and gateway.version == version else None


def _interface_addresses(interfaces: Sequence[InterfaceFields]) -> tuple[Address, ...]:
    """An interface's reserved address: private, and the management one for the first."""
    found: list[Address] = []
    for index, iface in enumerate(interfaces):
        netmask = iface.netmask or "255.255.255.255"
        cidr = prefix_length(iface.ip, netmask) if iface.ip else None
        if iface.ip is None or cidr is None:
            continue
        found.append(
            Address(
                address=iface.ip,
                netmask=netmask,
                gateway=iface.gateway,
                family=4,
                public=False,
                management=not found,
                cidr=cidr,
                nic=index,
            )
        )
    return tuple(found)
