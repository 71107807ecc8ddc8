"""The Equinix Metal (Packet) style `GET /metadata` document, as Tinkerbell's Hegel serves it.

Images built for Equinix Metal read this JSON (their `packet-networking` and cloud-init's
`DataSourceEquinixMetal`-era tooling): addresses with id, netmask, network, cidr, gateway,
family, public and management flags and the parent block; interfaces by name and MAC; and the
URLs to report back to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metalflow.index.instance import Address, Instance


@dataclass(slots=True)
class Urls:
    api: str
    phone_home: str
    user_state: str


def document(instance: Instance, urls: Urls) -> dict[str, Any]:
    return {
        "id": instance.id,
        "hostname": instance.hostname,
        "iqn": iqn(instance),
        "plan": instance.plan,
        "facility": instance.facility,
        "operating_system": dict(instance.operating_system),
        "ssh_keys": list(instance.ssh_keys),
        "tags": list(instance.tags),
        "customdata": dict(instance.custom),
        "network": {
            "addresses": [_address(address) for address in instance.addresses],
            "interfaces": [{"name": nic.name, "mac": nic.mac} for nic in instance.nics],
            "bonding": {"mode": instance.bonding_mode},
        },
        "storage": dict(instance.storage),
        "api_url": urls.api,
        "phone_home_url": urls.phone_home,
        "user_state_url": urls.user_state,
    }


def _address(address: Address) -> dict[str, Any]:
    """An address as Equinix lists it; `id` and `parent_block` are the IPAM block's and the
    block it came from (both null for an address typed in the inventory, which IPAM does not
    manage)."""
    parent = address.parent
    return {
        "id": address.id,
        "address": address.address,
        "netmask": address.netmask,
        "gateway": address.gateway,
        "network": address.network,
        "cidr": address.cidr,
        "address_family": address.family,
        "family": address.family,
        "public": address.public,
        "management": address.management,
        "manageable": address.id is not None,
        "enabled": True,
        "parent_block": None
        if parent is None
        else {"network": parent.network, "netmask": parent.netmask, "cidr": parent.cidr},
    }


def iqn(instance: Instance) -> str:
    """An iSCSI qualified name unique to the instance, in Equinix's form."""
    return f"iqn.2026-12.net.metalflow:device.{instance.id}"
