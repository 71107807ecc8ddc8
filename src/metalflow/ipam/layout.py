"""What a machine is told about a block assigned to it: netmask, gateway and host addresses.

Point-to-point blocks follow Equinix Metal's per-host layer-3 addressing: a /31 (RFC 3021) or
/127 (RFC 6164) has both addresses usable and the LOWER one is the gateway, so the machine takes
the upper; a /32 or /128 is the machine's one address, with no gateway. In larger blocks the
gateway is network+1; IPv4 hosts run from network+2 to broadcast-1, IPv6 hosts from network+2 to
the last address. `ipaddress.hosts()` follows the RFCs for /31 and /127 too but has no gateway,
so the rule is written here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from metalflow.ipam.allocator import InvalidSize, Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TENANT_SIZES: dict[int, tuple[int, ...]] = {4: (28, 29, 30, 31, 32), 6: (56, 64, 127, 128)}
"""The prefix lengths a tenant may reserve, per IP family."""


@dataclass(frozen=True, slots=True)
class BlockLayout:
    network: Network
    netmask: Address
    gateway: Address | None
    first_host: Address
    last_host: Address
    usable: int
    """Addresses a host may use, the gateway's included for /31 and /127 (both are usable)."""

    @property
    def machine_address(self) -> Address:
        """The address the machine takes: the first usable one that is not the gateway."""
        return self.last_host if self.first_host == self.gateway else self.first_host


def block_layout(network: Network) -> BlockLayout:
    host_bits = network.max_prefixlen - network.prefixlen
    start = network.network_address
    if host_bits == 0:
        return BlockLayout(network, network.netmask, None, start, start, 1)
    if host_bits == 1:
        return BlockLayout(network, network.netmask, start, start, start + 1, 2)
    end = network.broadcast_address
    last_host = end - 1 if network.version == 4 else end
    usable = int(last_host) - int(start) - 1
    return BlockLayout(network, network.netmask, start + 1, start + 2, last_host, usable)


def validate_tenant_size(family: int, prefixlen: int) -> int:
    """The prefix length a tenant asked for, if the family offers it."""
    if family not in TENANT_SIZES:
        raise InvalidSize(f"address family {family} is unknown: use 4 or 6", field="address_family")
    sizes = TENANT_SIZES[family]
    if prefixlen not in sizes:
        offered = ", ".join(f"/{size}" for size in sizes)
        raise InvalidSize(
            f"/{prefixlen} is not offered for IPv{family}: use one of {offered}",
            field="prefixlen",
        )
    return prefixlen
