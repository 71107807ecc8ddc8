"""Values of single DHCP options, one small builder or parser per option family.

Builders return the option's value (no code, no length): the codec frames it. Parsers of
client-sent options never raise; they return None or () for a value they cannot read, so a
policy can say what was wrong instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network
from uuid import UUID

PXE_DISCOVERY_CONTROL = 6
"""PXE spec 2.1 §2.4.6: the option 43 sub-option that controls boot server discovery."""
PXE_SKIP_DISCOVERY = 8
"""Bit 3: a boot file name is in this offer, so download it without discovery or menu."""


def ip_list(addresses: Iterable[IPv4Address]) -> bytes:
    """Options 3, 6, 42 and friends: addresses back to back (RFC 2132 §3.5, §3.8, §8.3)."""
    return b"".join(address.packed for address in addresses)


def u32(value: int) -> bytes:
    """Options 51, 58, 59: seconds as an unsigned 32-bit integer (RFC 2132 §9.2, §9.11)."""
    return value.to_bytes(4, "big")


def ascii_text(value: str) -> bytes | None:
    """Options 12 and 15 (RFC 2132 §3.14, §3.17) are NVT ASCII; None when `value` is not."""
    return value.encode("ascii") if value.isascii() else None


def classless_routes(routes: Iterable[tuple[IPv4Network, IPv4Address]]) -> bytes:
    """Option 121 (RFC 3442): prefix length, the significant octets of the destination, router.

    A client that gets option 121 ignores option 3, so callers include the default route.
    """
    parts = []
    for destination, router in routes:
        width = destination.prefixlen
        parts.append(bytes((width,)))
        parts.append(destination.network_address.packed[: (width + 7) // 8])
        parts.append(router.packed)
    return b"".join(parts)


def parse_classless_routes(value: bytes) -> tuple[tuple[IPv4Network, IPv4Address], ...]:
    """The inverse of `classless_routes`; raises ValueError on a malformed value."""
    routes = []
    pos = 0
    while pos < len(value):
        width = value[pos]
        if width > 32:
            raise ValueError(f"route prefix length {width} is over 32")
        octets = (width + 7) // 8
        end = pos + 1 + octets + 4
        if end > len(value):
            raise ValueError(f"route at byte {pos} runs past the end of the option")
        destination = value[pos + 1 : pos + 1 + octets].ljust(4, b"\0")
        routes.append(
            (IPv4Network((IPv4Address(destination), width)), IPv4Address(value[end - 4 : end]))
        )
        pos = end
    return tuple(routes)


def pxe_vendor_options(discovery_control: int = PXE_SKIP_DISCOVERY) -> bytes:
    """Option 43 for a PXEClient: sub-option 6 (PXE spec 2.1 §2.4.6), then End.

    The default tells the ROM to boot the file in the offer instead of running discovery.
    """
    return bytes((PXE_DISCOVERY_CONTROL, 1, discovery_control, 255))


def parse_user_classes(value: bytes) -> tuple[bytes, ...]:
    """Option 77 (RFC 3004 §4): length-prefixed class names.

    iPXE (and older ISC clients) send one plain string such as b"iPXE" instead; when the value
    does not parse as RFC 3004, it is taken as one class.
    """
    classes = []
    pos = 0
    while pos < len(value):
        length = value[pos]
        end = pos + 1 + length
        if length == 0 or end > len(value):
            return (value,)
        classes.append(value[pos + 1 : end])
        pos = end
    return tuple(classes)


def parse_relay_agent_info(value: bytes) -> tuple[tuple[int, bytes], ...] | None:
    """Option 82 (RFC 3046 §2.0): sub-options such as 1 (circuit id) and 2 (remote id)."""
    sub_options = []
    pos = 0
    while pos < len(value):
        if pos + 1 >= len(value):
            return None
        end = pos + 2 + value[pos + 1]
        if end > len(value):
            return None
        sub_options.append((value[pos], value[pos + 2 : end]))
        pos = end
    return tuple(sub_options)


def parse_client_arches(value: bytes) -> tuple[int, ...]:
    """Option 93 (RFC 4578 §2.1): one or more 16-bit architecture types; () when malformed."""
    if not value or len(value) % 2:
        return ()
    return tuple(int.from_bytes(value[pos : pos + 2], "big") for pos in range(0, len(value), 2))


def parse_client_machine_id(value: bytes) -> UUID | None:
    """Option 97 (RFC 4578 §2.3): type 0, then a 16-byte GUID, kept in the order sent."""
    if len(value) != 17 or value[0] != 0:
        return None
    return UUID(bytes=value[1:])
