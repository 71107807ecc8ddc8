"""The Metal API's IP shapes from IPAM blocks: sizes from quantities, free subnets, and documents
that equinix-metal 0.11.0 validates as exactly one of IPReservation and IPAssignment."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest
from equinix_metal.models.find_ip_address_by_id200_response import FindIPAddressById200Response
from equinix_metal.models.ip_assignment import IPAssignment
from equinix_metal.models.ip_reservation import IPReservation
from hypothesis import given
from hypothesis import strategies as st

from metalflow.cloud import ips
from metalflow.cloud.ips_schemas import IpAddress
from metalflow.errors import Invalid

ROOT = "/metal/v1"
CREATED = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def block(cidr: str, kind: str = "public", **fields: Any) -> ips.Block:
    return ips.Block(id="b" * 32, cidr=cidr, kind=kind, created_at=CREATED, **fields)


def as_client_sees(document: dict[str, Any]) -> object:
    """The document through the server's model and out as JSON, read by equinix-metal."""
    body = IpAddress.model_validate(document).model_dump_json(exclude_unset=True)
    return FindIPAddressById200Response.from_json(body).actual_instance


@given(power=st.integers(0, 32), ip_type=st.sampled_from(["public_ipv4", "private_ipv4"]))
def test_an_ipv4_quantity_is_a_power_of_two_and_gives_its_prefix(power: int, ip_type: str) -> None:
    assert ips.reservation_prefixlen(ip_type, 1 << power) == 32 - power


@given(quantity=st.integers(-5, 1 << 40).filter(lambda q: q <= 0 or q & (q - 1)))
def test_an_ipv4_quantity_that_is_no_power_of_two_is_refused_naming_it(quantity: int) -> None:
    with pytest.raises(Invalid) as refused:
        ips.reservation_prefixlen("public_ipv4", quantity)
    assert refused.value.field == "body.quantity"
    assert "power of two" in refused.value.message


@given(power=st.integers(0, 130))
def test_ipv6_is_a_64_or_a_56_only(power: int) -> None:
    if 128 - power in (64, 56):
        assert ips.reservation_prefixlen("public_ipv6", 1 << power) == 128 - power
        return
    with pytest.raises(Invalid) as refused:
        ips.reservation_prefixlen("public_ipv6", 1 << power)
    assert refused.value.field == "body.quantity"
    assert "18446744073709551616 (a /64)" in refused.value.message


def test_only_kinds_and_families_equinix_has_get_a_type() -> None:
    assert ips.ip_type("global", 4) == "global_ipv4"
    assert ips.ip_type("public", 6) == "public_ipv6"
    assert ips.ip_type("private", 6) is None
    assert (
        ips.reservation_document(
            block("fd00::/64", "private"), family=6, metro=None, assignment_ids=[], root=ROOT
        )
        is None
    )


@st.composite
def free_space(draw: st.DrawFn) -> list[ipaddress.IPv4Network]:
    """A /24 split into disjoint subnets, some of them free, in any order."""
    parts = [ipaddress.IPv4Network("198.51.100.0/24")]
    for _ in range(draw(st.integers(0, 12))):
        index = draw(st.integers(0, len(parts) - 1))
        if parts[index].prefixlen < 32:
            parts[index : index + 1] = list(parts[index].subnets())
    free = [part for part in parts if draw(st.booleans())]
    return draw(st.permutations(free))


@given(free=free_space(), prefixlen=st.integers(24, 32), limit=st.integers(1, 300))
def test_available_subnets_are_free_sized_ordered_and_bounded(
    free: list[ipaddress.IPv4Network], prefixlen: int, limit: int
) -> None:
    found = [ipaddress.ip_network(each) for each in ips.available_subnets(free, prefixlen, limit)]
    fitting = [each for each in free if each.prefixlen <= prefixlen]
    everything = sorted(
        (sub for each in fitting for sub in each.subnets(new_prefix=prefixlen)),
        key=lambda net: int(net.network_address),
    )
    assert found == everything[:limit]


def test_a_reservation_validates_as_an_ipreservation_only() -> None:
    metro = ips.Metro(code="am", id="m" * 36, name="Amsterdam", country="NL")
    document = ips.reservation_document(
        block("198.51.100.8/29", project_id="p" * 32, tags=("web",), description="front"),
        family=4,
        metro=metro,
        assignment_ids=["a" * 32],
        root=ROOT,
    )
    assert document is not None
    seen = as_client_sees(document)
    assert isinstance(seen, IPReservation)
    assert (seen.type, seen.network, seen.gateway, seen.address) == (
        "public_ipv4",
        "198.51.100.8",
        "198.51.100.9",
        "198.51.100.10",
    )
    assert (seen.netmask, seen.cidr, seen.tags, seen.details) == (
        "255.255.255.248",
        29,
        ["web"],
        "front",
    )
    assert seen.metro is not None and seen.metro.href == f"{ROOT}/locations/metros/{metro.id}"
    assert [each.href for each in seen.assignments or []] == [f"{ROOT}/ips/{'a' * 32}"]
    assert seen.available == f"{ROOT}/ips/{'b' * 32}/available"
    assert "assigned_to" not in document


def test_an_elastic_assignment_validates_as_an_ipassignment_only() -> None:
    parent = ips.Parent(id="r" * 32, cidr="198.51.100.8/29", elastic=True)
    document = ips.assignment_document(
        block("198.51.100.11/32"),
        parent=parent,
        assigned_to=f"{ROOT}/devices/d1",
        metro=ips.Metro(code="am"),
        root=ROOT,
    )
    seen = as_client_sees(document)
    assert isinstance(seen, IPAssignment)
    assert (seen.address, seen.cidr, seen.management, seen.global_ip) == (
        "198.51.100.11",
        32,
        False,
        False,
    )
    assert seen.gateway is None and "gateway" not in document
    assert seen.assigned_to.href == f"{ROOT}/devices/d1"
    assert seen.parent_block is not None and seen.parent_block.href == f"{ROOT}/ips/{'r' * 32}"
    assert seen.metro is not None and (seen.metro.code, seen.metro.href) == ("am", None)
    assert "type" not in document


def test_a_per_host_31_is_managed_takes_the_upper_address_and_names_no_pool_href() -> None:
    parent = ips.Parent(id="p" * 32, cidr="10.0.0.0/25", elastic=False)
    document = ips.assignment_document(
        block("10.0.0.4/31", "private"),
        parent=parent,
        assigned_to=f"{ROOT}/devices/d1",
        metro=None,
        root=ROOT,
    )
    seen = as_client_sees(document)
    assert isinstance(seen, IPAssignment)
    assert (seen.address, seen.gateway, seen.public, seen.management) == (
        "10.0.0.5",
        "10.0.0.4",
        False,
        True,
    )
    assert seen.parent_block is not None and seen.parent_block.href is None
    pool = {"network": "10.0.0.0", "netmask": "255.255.255.128", "cidr": 25}
    assert document["parent_block"] == pool


@st.composite
def networks(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    bits = draw(st.sampled_from([32, 128]))
    address, prefixlen = draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, bits))
    if bits == 32:
        return ipaddress.IPv4Network((address, prefixlen), strict=False)
    return ipaddress.IPv6Network((address, prefixlen), strict=False)


@given(
    network=networks(),
    kind=st.sampled_from(["public", "private", "global"]),
    elastic=st.booleans(),
    tags=st.lists(st.text(min_size=1, max_size=5), max_size=3),
)
def test_every_block_is_exactly_one_of_the_two_to_equinix_metal(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
    kind: str,
    elastic: bool,
    tags: list[str],
) -> None:
    facts = block(str(network), kind, tags=tuple(tags), project_id="p" * 32)
    parent = ips.Parent(id="r" * 32, cidr=str(network), elastic=elastic)
    assigned = ips.assignment_document(
        facts, parent=parent, assigned_to=f"{ROOT}/devices/d", metro=None, root=ROOT
    )
    assert isinstance(as_client_sees(assigned), IPAssignment)
    reserved = ips.reservation_document(
        facts, family=network.version, metro=None, assignment_ids=[], root=ROOT
    )
    if ips.ip_type(kind, network.version) is None:
        assert reserved is None
        return
    assert reserved is not None
    seen = as_client_sees(reserved)
    assert isinstance(seen, IPReservation) and seen.tags == tags
    assert seen.cidr == network.prefixlen and seen.network == str(network.network_address)
