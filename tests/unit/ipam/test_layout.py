"""The layout a machine is told of its block, per Equinix Metal's per-host addressing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.ipam.allocator import InvalidSize, Network
from metalflow.ipam.layout import TENANT_SIZES, block_layout, validate_tenant_size


def layout_of(text: str) -> tuple[str | None, str, str, int, str]:
    layout = block_layout(ipaddress.ip_network(text))
    gateway = None if layout.gateway is None else str(layout.gateway)
    return (
        gateway,
        str(layout.first_host),
        str(layout.last_host),
        layout.usable,
        str(layout.netmask),
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("192.0.2.0/29", ("192.0.2.1", "192.0.2.2", "192.0.2.6", 5, "255.255.255.248")),
        ("192.0.2.4/30", ("192.0.2.5", "192.0.2.6", "192.0.2.6", 1, "255.255.255.252")),
        ("192.0.2.6/31", ("192.0.2.6", "192.0.2.6", "192.0.2.7", 2, "255.255.255.254")),
        ("192.0.2.9/32", (None, "192.0.2.9", "192.0.2.9", 1, "255.255.255.255")),
        ("2001:db8::/127", ("2001:db8::", "2001:db8::", "2001:db8::1", 2, "ffff:" * 7 + "fffe")),
        ("2001:db8::5/128", (None, "2001:db8::5", "2001:db8::5", 1, "ffff:" * 7 + "ffff")),
        ("2001:db8::/126", ("2001:db8::1", "2001:db8::2", "2001:db8::3", 2, "ffff:" * 7 + "fffc")),
    ],
    ids=["v4-29", "v4-30", "v4-31", "v4-32", "v6-127", "v6-128", "v6-126"],
)
def test_layout_of_each_kind_of_block(
    block: str, expected: tuple[str | None, str, str, int, str]
) -> None:
    assert layout_of(block) == expected


def test_a_point_to_point_machine_takes_the_upper_address_and_a_single_one_its_own() -> None:
    assert str(block_layout(ipaddress.ip_network("192.0.2.6/31")).machine_address) == "192.0.2.7"
    assert str(block_layout(ipaddress.ip_network("2001:db8::/127")).machine_address) == (
        "2001:db8::1"
    )
    assert str(block_layout(ipaddress.ip_network("192.0.2.9/32")).machine_address) == "192.0.2.9"
    assert str(block_layout(ipaddress.ip_network("192.0.2.0/29")).machine_address) == "192.0.2.2"


def test_a_v6_64_has_every_address_but_the_router_anycast_and_the_gateway() -> None:
    layout = block_layout(ipaddress.ip_network("2001:db8:1:2::/64"))
    assert str(layout.last_host) == "2001:db8:1:2:ffff:ffff:ffff:ffff"
    assert layout.usable == 2**64 - 2


networks = st.one_of(
    st.builds(
        lambda address, prefixlen: ipaddress.IPv4Network((address, prefixlen), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda address, prefixlen: ipaddress.IPv6Network((address, prefixlen), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)


@settings(max_examples=300)
@given(networks)
def test_gateway_and_hosts_lie_in_the_block_and_usable_counts_the_host_range(
    network: Network,
) -> None:
    layout = block_layout(network)
    first, last = int(layout.first_host), int(layout.last_host)
    assert int(network.network_address) <= first <= last <= int(network.broadcast_address)
    assert layout.usable == last - first + 1
    if layout.gateway is not None:
        assert layout.gateway in network
    assert layout.machine_address != layout.gateway
    if network.prefixlen <= network.max_prefixlen - 2:
        assert layout.gateway is not None
        assert int(layout.first_host) == int(layout.gateway) + 1


@pytest.mark.parametrize(("family", "sizes"), sorted(TENANT_SIZES.items()))
def test_every_offered_tenant_size_is_accepted(family: int, sizes: tuple[int, ...]) -> None:
    assert [validate_tenant_size(family, size) for size in sizes] == list(sizes)


def test_a_size_not_offered_lists_the_ones_that_are() -> None:
    with pytest.raises(InvalidSize) as raised:
        validate_tenant_size(4, 27)
    assert str(raised.value) == "/27 is not offered for IPv4: use one of /28, /29, /30, /31, /32"
    assert raised.value.field == "prefixlen"
    with pytest.raises(
        InvalidSize, match=r"^/48 is not offered for IPv6: use one of /56, /64, /127"
    ):
        validate_tenant_size(6, 48)


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(InvalidSize) as raised:
        validate_tenant_size(5, 29)
    assert str(raised.value) == "address family 5 is unknown: use 4 or 6"
    assert raised.value.field == "address_family"
