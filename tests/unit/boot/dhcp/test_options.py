"""Single option values against the examples in their RFCs."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.boot.dhcp.options import (
    ascii_text,
    classless_routes,
    ip_list,
    parse_classless_routes,
    parse_client_arches,
    parse_client_machine_id,
    parse_relay_agent_info,
    parse_user_classes,
    pxe_vendor_options,
    u32,
)

ROUTER = IPv4Address("10.0.0.1")


def test_fixed_width_values() -> None:
    assert ip_list([IPv4Address("192.0.2.53"), IPv4Address("192.0.2.54")]) == bytes.fromhex(
        "c0000235c0000236"
    )
    assert ip_list([]) == b""
    assert u32(86400) == bytes.fromhex("00015180")


@pytest.mark.parametrize(
    ("destination", "encoded"),
    [
        # The table in RFC 3442: subnet number and mask width to significant octets.
        ("0.0.0.0/0", "00"),
        ("10.0.0.0/8", "08 0a"),
        ("10.17.0.0/16", "10 0a11"),
        ("10.27.129.0/24", "18 0a1b81"),
        ("10.229.0.128/25", "19 0ae50080"),
        ("10.198.122.47/32", "20 0ac67a2f"),
    ],
)
def test_classless_routes_use_only_the_significant_octets(destination: str, encoded: str) -> None:
    route = (IPv4Network(destination), ROUTER)
    assert classless_routes([route]) == bytes.fromhex(encoded) + ROUTER.packed
    assert parse_classless_routes(bytes.fromhex(encoded) + ROUTER.packed) == (route,)


@given(
    st.lists(
        st.tuples(
            st.builds(
                lambda address, width: IPv4Network((address, width), strict=False),
                st.ip_addresses(v=4),
                st.integers(0, 32),
            ),
            st.ip_addresses(v=4),
        ),
        max_size=8,
    )
)
def test_classless_routes_round_trip(routes: list[tuple[IPv4Network, IPv4Address]]) -> None:
    assert parse_classless_routes(classless_routes(routes)) == tuple(routes)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("21 0a000000 0a000001", id="width-33"),
        pytest.param("18 0a1b81 0a00", id="router-cut-short"),
        pytest.param("18 0a1b", id="destination-cut-short"),
        pytest.param("08 0b 0a000001 09 0ac0 0a000001", id="host-bits-set"),
    ],
)
def test_malformed_classless_routes_raise_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        parse_classless_routes(bytes.fromhex(value))


def test_pxe_vendor_options_hold_discovery_control_and_end() -> None:
    """PXE spec 2.1 §2.4.6: tag 6, length 1, bit 3 set = boot the offered file directly."""
    assert pxe_vendor_options() == bytes.fromhex("06 01 08 ff")
    assert pxe_vendor_options(3) == bytes.fromhex("06 01 03 ff")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", ()),
        (b"iPXE", (b"iPXE",)),
        (b"\x04iPXE", (b"iPXE",)),
        (b"\x04iPXE\x0aTinkerbell", (b"iPXE", b"Tinkerbell")),
        (b"\x04iPXE\x0a", (b"\x04iPXE\x0a",)),
        (b"\x00", (b"\x00",)),
    ],
)
def test_user_classes_accept_rfc_3004_and_plain_strings(
    value: bytes, expected: tuple[bytes, ...]
) -> None:
    assert parse_user_classes(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"", ()),
        (b"\x01\x06eth0/1\x02\x00", ((1, b"eth0/1"), (2, b""))),
        (b"\x01", None),
        (b"\x01\x07eth0/1", None),
    ],
)
def test_relay_agent_info_sub_options(
    value: bytes, expected: tuple[tuple[int, bytes], ...] | None
) -> None:
    assert parse_relay_agent_info(value) == expected


def test_client_identity_options() -> None:
    assert parse_client_arches(b"\x00\x07") == (7,)
    assert parse_client_arches(b"\x00\x10\x00\x07") == (16, 7)
    assert parse_client_arches(b"") == ()
    assert parse_client_arches(b"\x00") == ()
    guid = bytes(range(16))
    assert parse_client_machine_id(b"\x00" + guid) == UUID(bytes=guid)
    assert parse_client_machine_id(b"\x01" + guid) is None
    assert parse_client_machine_id(guid) is None


def test_ascii_text_refuses_what_nvt_ascii_cannot_carry() -> None:
    assert ascii_text("node-1.lab.example") == b"node-1.lab.example"
    assert ascii_text("nœud") is None
