"""IP reservations and assignments in Equinix Metal's words, from the IPAM's blocks: pure.

Written by hand from equinix-metal 0.11.0's models (IPReservation, IPAssignment and the
`FindIPAddressById200Response` one-of that tells them apart by `type` and `assigned_to`),
packet-python 1.44.3's IPAddress, and ipam.layout for what a block tells its host. Where the
clients leave a field's meaning open, the choice is said below.

- A reservation's `type` is its kind and family; the IPAM's private IPv6 and global IPv6 blocks
  have no Equinix type, so the Metal API does not show them (`ip_type` is None).
- `quantity` counts addresses, a power of two; IPv6 is reserved as a /64 or a /56, as Equinix
  offered it.
- `address` is the address the host takes (ipam.layout: the gateway's neighbour), `gateway` is
  left out where a block has none (a /32 or /128).
- A reservation's `available` is the href of its free subnets, `/ips/{id}/available`; its
  `assignments` are hrefs, or whole IPAssignments with `include=assignments`.
- An assignment from a reservation is an elastic IP (`management: false`); one from a pool is
  a device's per-host address (`management: true`), whose pool is no reservation, so its
  `parent_block` has no href.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from metalflow.errors import Invalid
from metalflow.ipam.allocator import Network
from metalflow.ipam.layout import block_layout

TYPES: dict[tuple[str, int], str] = {
    ("public", 4): "public_ipv4",
    ("private", 4): "private_ipv4",
    ("global", 4): "global_ipv4",
    ("public", 6): "public_ipv6",
}
"""Equinix's reservation type of each (IPAM kind, family)."""
KIND_AND_FAMILY = {ip_type: kind_and_family for kind_and_family, ip_type in TYPES.items()}
IPV6_SIZES = (64, 56)
MAX_AVAILABLE = 1024
"""At most this many subnets in one `/ips/{id}/available` answer (a /56 holds 2^72 /128s)."""


def ip_type(kind: str, family: int) -> str | None:
    return TYPES.get((kind, family))


def reservation_prefixlen(ip_type: str, quantity: int) -> int:
    """The prefix length of a reservation of `quantity` addresses of `ip_type`."""
    _, family = KIND_AND_FAMILY[ip_type]
    bits = 32 if family == 4 else 128
    power = quantity.bit_length() - 1
    if family == 6:
        offered = " or ".join(f"{1 << (bits - size)} (a /{size})" for size in IPV6_SIZES)
        if quantity <= 0 or quantity != 1 << power or bits - power not in IPV6_SIZES:
            raise Invalid(
                f"{ip_type} is reserved as a /64 or a /56: ask for a quantity of {offered}",
                field="body.quantity",
            )
        return bits - power
    if quantity <= 0 or quantity != 1 << power or power > bits:
        raise Invalid(
            f"quantity {quantity} is not a power of two up to {1 << bits}: ask for 1, 2, 4, 8"
            " or 16 addresses (a /32 to a /28)",
            field="body.quantity",
        )
    return bits - power


def available_subnets(
    free: Iterable[Network], prefixlen: int, limit: int = MAX_AVAILABLE
) -> list[str]:
    """The free /prefixlen subnets of a block whose free space is `free` (disjoint blocks), by
    address, at most `limit` of them."""
    ordered = sorted(free, key=lambda network: int(network.network_address))
    subnets = (
        network.subnets(new_prefix=prefixlen)
        for network in ordered
        if network.prefixlen <= prefixlen <= network.max_prefixlen
    )
    return [str(subnet) for subnet in itertools.islice(itertools.chain(*subnets), limit)]


@dataclass(frozen=True)
class Block:
    """What a shape needs of an IPAM block."""

    id: str
    cidr: str
    kind: str
    created_at: dt.datetime
    project_id: str | None = None
    tags: Sequence[str] = ()
    description: str = ""


@dataclass(frozen=True)
class Metro:
    code: str
    id: str | None = None
    name: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Parent:
    """The block an assignment was given from; `elastic` when it is a reservation."""

    id: str
    cidr: str
    elastic: bool


def metro_document(metro: Metro | None, root: str) -> dict[str, Any] | None:
    """The metro as Equinix nests it; only its code when the catalogue does not know it."""
    if metro is None:
        return None
    if metro.id is None:
        return {"code": metro.code}
    return {
        "id": metro.id,
        "code": metro.code,
        "name": metro.name,
        "country": metro.country,
        "href": f"{root}/locations/metros/{metro.id}",
    }


def _addressing(network: Network) -> dict[str, Any]:
    layout = block_layout(network)
    document: dict[str, Any] = {
        "address": str(layout.machine_address),
        "network": str(network.network_address),
        "netmask": str(network.netmask),
        "cidr": network.prefixlen,
        "address_family": network.version,
    }
    if layout.gateway is not None:
        document["gateway"] = str(layout.gateway)
    return document


def _without_none(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if value is not None}


def reservation_document(
    block: Block,
    *,
    family: int,
    metro: Metro | None,
    assignment_ids: Sequence[str],
    root: str,
    included: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """An IPReservation; None for a block of no Equinix type. Its assignments are hrefs, or
    the `included` documents (`include=assignments`)."""
    found = ip_type(block.kind, family)
    if found is None:
        return None
    network = ipaddress.ip_network(block.cidr)
    project = None if block.project_id is None else {"href": f"{root}/projects/{block.project_id}"}
    return _without_none(
        {
            "id": block.id,
            "type": found,
            **_addressing(network),
            "public": block.kind != "private",
            "management": False,
            "enabled": True,
            "global_ip": block.kind == "global",
            "manageable": True,
            "available": f"{root}/ips/{block.id}/available",
            "state": "created",
            "tags": [str(tag) for tag in block.tags],
            "details": block.description,
            "metro": metro_document(metro, root),
            "project": project,
            "project_lite": project,
            "assignments": (
                [{"href": f"{root}/ips/{each}"} for each in assignment_ids]
                if included is None
                else list(included)
            ),
            "created_at": block.created_at,
            "href": f"{root}/ips/{block.id}",
        }
    )


def assignment_document(
    block: Block, *, parent: Parent, assigned_to: str, metro: Metro | None, root: str
) -> dict[str, Any]:
    """An IPAssignment given to what `assigned_to` names (a device's href, or a machine's)."""
    network = ipaddress.ip_network(block.cidr)
    holder = ipaddress.ip_network(parent.cidr)
    parent_block: dict[str, Any] = {
        "network": str(holder.network_address),
        "netmask": str(holder.netmask),
        "cidr": holder.prefixlen,
    }
    if parent.elastic:
        parent_block["href"] = f"{root}/ips/{parent.id}"
    return _without_none(
        {
            "id": block.id,
            **_addressing(network),
            "public": block.kind != "private",
            "management": not parent.elastic,
            "enabled": True,
            "global_ip": block.kind == "global",
            "manageable": True,
            "assigned_to": {"href": assigned_to},
            "parent_block": parent_block,
            "metro": metro_document(metro, root),
            "created_at": block.created_at,
            "href": f"{root}/ips/{block.id}",
        }
    )
