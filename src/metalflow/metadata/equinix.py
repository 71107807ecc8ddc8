"""The Equinix Metal (Packet) style `GET /metadata` document, as Tinkerbell's Hegel serves it.

Images built for Equinix Metal read this JSON (their `packet-networking` and cloud-init's
`DataSourceEquinixMetal`-era tooling): addresses with netmask, cidr, gateway, family, public
and management flags; interfaces by name and MAC; and the URLs to report back to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metalflow.index.instance import Instance


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
            "addresses": [
                {
                    "address": address.address,
                    "netmask": address.netmask,
                    "gateway": address.gateway,
                    "cidr": address.cidr,
                    "address_family": address.family,
                    "family": address.family,
                    "public": address.public,
                    "management": address.management,
                    "enabled": True,
                }
                for address in instance.addresses
            ],
            "interfaces": [{"name": nic.name, "mac": nic.mac} for nic in instance.nics],
            "bonding": {"mode": instance.bonding_mode},
        },
        "storage": dict(instance.storage),
        "api_url": urls.api,
        "phone_home_url": urls.phone_home,
        "user_state_url": urls.user_state,
    }


def iqn(instance: Instance) -> str:
    """An iSCSI qualified name unique to the instance, in Equinix's form."""
    return f"iqn.2026-12.net.metalflow:device.{instance.id}"
