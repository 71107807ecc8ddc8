"""Choosing an address from a dynamic pool: pure, so its rules are property-tested."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from metalflow.boot.dhcp.network import AddressRange

IPv4 = ipaddress.IPv4Address


def pick_address(
    pool: AddressRange,
    is_free: Callable[[IPv4], bool],
    *,
    requested: IPv4 | None = None,
    start: int = 0,
) -> IPv4 | None:
    """The requested address when it is in the pool and free, else the first free address at or
    after offset `start` (wrapping), else None. Scanning from a moving start keeps a nearly full
    pool from being rescanned from its beginning for every client."""
    if requested is not None and requested in pool and is_free(requested):
        return requested
    first = int(pool.start)
    size = pool.size
    for step in range(size):
        candidate = IPv4(first + (start + step) % size)
        if is_free(candidate):
            return candidate
    return None
