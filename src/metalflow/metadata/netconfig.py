"""cloud-init network configuration version 2 (netplan's schema) for the installed OS.

Each NIC is matched by MAC and renamed eth0, eth1, ... as the inventory orders them. An address
from the machine's own interface goes on that interface (on its VLAN when it has one); addresses
from Tinkerbell metadata, which name no NIC, go on the first NIC, or on `bond0` of all NICs when
a bonding mode is set (as Equinix Metal bonds). IPAM's per-host addresses name no NIC either:
a public /31 and /127 whose lower addresses are the default gateways, and a private /31 whose
gateway routes only the private network (10.0.0.0/8, Packet's model). Default routes come from
the first gateway of each family that routes no network of its own (`_routes` says in which
form). Served as NoCloud `network-config`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from metalflow.index.instance import Address, Instance

BOND_MODES = {
    1: "active-backup",
    2: "balance-xor",
    3: "broadcast",
    4: "802.3ad",
    5: "balance-tlb",
    6: "balance-alb",
}
"""Linux bonding mode numbers (Equinix's `bonding.mode`) to netplan's names; 0 is balance-rr."""


def network_config(instance: Instance) -> dict[str, Any]:
    ethernets: dict[str, dict[str, Any]] = {
        nic.name: {"match": {"macaddress": nic.mac}, "set-name": nic.name} for nic in instance.nics
    }
    config: dict[str, Any] = {"version": 2, "ethernets": ethernets}
    if not instance.nics:
        return config
    bonded = is_bonded(instance)
    shared = "bond0" if bonded else instance.nics[0].name
    devices: dict[str, dict[str, Any]] = {}
    if bonded:
        mode = BOND_MODES.get(instance.bonding_mode, "balance-rr")
        config["bonds"] = {
            "bond0": {
                "interfaces": [nic.name for nic in instance.nics],
                "parameters": {"mode": mode},
            }
        }
        devices["bond0"] = config["bonds"]["bond0"]
    devices.update(ethernets)
    vlans: dict[str, dict[str, Any]] = {}
    for address in instance.addresses:
        target = shared if address.nic is None or bonded else _device(instance, address, vlans)
        entry = devices.get(target) or vlans[target]
        entry.setdefault("addresses", []).append(f"{address.address}/{address.cidr}")
    if vlans:
        config["vlans"] = vlans
        devices.update(vlans)
    _routes(instance, devices, shared)
    nameservers = sorted({server for nic in instance.nics for server in nic.nameservers})
    for entry in devices.values():
        if nameservers and "addresses" in entry:
            # A list of its own: YAML would write a shared one as an anchor and aliases.
            entry["nameservers"] = {"addresses": list(nameservers)}
    return config


def is_bonded(instance: Instance) -> bool:
    """Whether every address goes on `bond0` of all NICs."""
    return instance.bonding_mode > 0 and len(instance.nics) > 1


def untagged_nic(instance: Instance, address: Address) -> int | None:
    """The NIC whose own link (not a VLAN on it) carries `address` here: the first one for an
    address that names no NIC, and for every address of a bond; None for a VLAN's address."""
    if address.nic is None or is_bonded(instance):
        return 0
    return address.nic if instance.nics[address.nic].vlan is None else None


def _device(instance: Instance, address: Address, vlans: dict[str, dict[str, Any]]) -> str:
    assert address.nic is not None
    nic = instance.nics[address.nic]
    if nic.vlan is None:
        return nic.name
    name = f"{nic.name}.{nic.vlan}"
    vlans.setdefault(name, {"id": nic.vlan, "link": nic.name})
    return name


def _routes(instance: Instance, devices: dict[str, dict[str, Any]], shared: str) -> None:
    """One default route per family, on the device that holds the gateway's address.

    A gateway in the address's subnet is `gateway4`/`gateway6`, deprecated by netplan but still
    applied, as cloud-init 22.4 (Debian 12) garbles routes: `to: ::/0` becomes ::/64, and for
    ifupdown a route is a net-tools `route` command, not installed there by default; a gateway
    is ifupdown's own `ip route add default ... onlink` and networkd's `Gateway=`. A gateway
    outside the subnet needs an `on-link` route, which of cloud-init's renderers only netplan
    keeps. An address's own `routes` (the private networks behind a private /31's gateway)
    are routes: netplan and networkd apply them, ENI only with net-tools installed.
    """
    for family, default in ((4, "0.0.0.0/0"), (6, "::/0")):
        gateway = next(
            (a for a in instance.addresses if a.family == family and a.gateway and not a.routes),
            None,
        )
        if gateway is None or gateway.gateway is None:
            continue
        holder = _holder(devices, gateway, shared)
        in_subnet = ipaddress.ip_address(gateway.gateway) in ipaddress.ip_network(
            f"{gateway.address}/{gateway.cidr}", strict=False
        )
        if in_subnet:
            devices[holder][f"gateway{family}"] = gateway.gateway
        else:
            route = {"to": default, "via": gateway.gateway, "on-link": True}
            devices[holder].setdefault("routes", []).append(route)
    for address in instance.addresses:
        if address.gateway is None:
            continue
        for network in address.routes:
            route = {"to": network, "via": address.gateway}
            devices[_holder(devices, address, shared)].setdefault("routes", []).append(route)


def _holder(devices: dict[str, dict[str, Any]], address: Address, shared: str) -> str:
    """The device that carries `address`."""
    return next(
        (
            name
            for name, entry in devices.items()
            if f"{address.address}/{address.cidr}" in entry.get("addresses", [])
        ),
        shared,
    )
