"""A machine's IPAM blocks as its OS is told them: the Equinix document, the EC2 tree and the
network config, each from the one list of assignments the index loads."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from metalflow.index.instance import Address, Instance, InterfaceFields, instance_from
from metalflow.index.store import address_of
from metalflow.ipam.tables import IpBlock
from metalflow.metadata.ec2 import lookup, tree
from metalflow.metadata.equinix import Urls, document
from metalflow.metadata.netconfig import network_config

URLS = Urls("http://192.0.2.1:7080", "http://192.0.2.1:50061/ph", "http://192.0.2.1:50061/ev")
ETH0 = InterfaceFields("52:54:00:00:00:01", "192.0.2.11", "255.255.255.0", "192.0.2.1")
ETH1 = InterfaceFields("52:54:00:00:00:02")


def assignment(block_id: str, cidr: str, kind: str, parent: str, parent_status: str) -> Address:
    """What the index makes of an assignment row and its parent's."""
    return address_of(
        IpBlock(id=block_id, cidr=cidr, kind=kind, status="assignment"),
        IpBlock(id=f"{block_id}-parent", cidr=parent, kind=kind, status=parent_status),
    )


PER_HOST = (
    assignment("pub4", "198.51.100.4/31", "public", "198.51.100.0/24", "pool"),
    assignment("pub6", "2001:db8:0:100::2/127", "public", "2001:db8:0:100::/56", "pool"),
    assignment("priv4", "10.70.0.2/31", "private", "10.70.0.0/25", "pool"),
)


def make(
    assigned: tuple[Address, ...] = PER_HOST,
    interfaces: tuple[InterfaceFields, ...] = (ETH0,),
    **metadata: object,
) -> Instance:
    return instance_from(
        machine_id="0f3c",
        name="web1",
        hostname=None,
        interfaces=interfaces,
        metadata=metadata,
        user_data=None,
        assigned=assigned,
    )


def test_the_equinix_document_lists_each_block_with_its_id_network_and_parent() -> None:
    addresses = document(make(), URLS)["network"]["addresses"]

    assert addresses[0] == {
        "id": "pub4",
        "address": "198.51.100.5",
        "netmask": "255.255.255.254",
        "gateway": "198.51.100.4",
        "network": "198.51.100.4",
        "cidr": 31,
        "address_family": 4,
        "family": 4,
        "public": True,
        "management": True,
        "manageable": True,
        "enabled": True,
        "parent_block": {"network": "198.51.100.0", "netmask": "255.255.255.0", "cidr": 24},
    }
    assert [(a["id"], a["address"], a["gateway"], a["public"]) for a in addresses[1:]] == [
        ("pub6", "2001:db8:0:100::3", "2001:db8:0:100::2", True),
        ("priv4", "10.70.0.3", "10.70.0.2", False),
    ]
    assert addresses[1]["netmask"] == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
    assert addresses[1]["parent_block"] == {
        "network": "2001:db8:0:100::",
        "netmask": "ffff:ffff:ffff:ff00::",
        "cidr": 56,
    }


def test_a_typed_address_has_no_block_and_is_not_manageable() -> None:
    [address] = document(make(assigned=()), URLS)["network"]["addresses"]

    assert (address["id"], address["parent_block"], address["manageable"]) == (None, None, False)
    assert (address["address"], address["network"]) == ("192.0.2.11", "192.0.2.0")


def test_an_elastic_address_from_a_reservation_is_no_management_address() -> None:
    elastic = assignment("eip", "203.0.113.8/32", "public", "203.0.113.8/29", "reservation")

    [address] = document(make(assigned=(elastic,)), URLS)["network"]["addresses"]

    assert (address["address"], address["gateway"], address["cidr"]) == ("203.0.113.8", None, 32)
    assert (address["management"], address["manageable"]) == (False, True)


def test_ipam_addresses_replace_typed_ones_and_metadata_ips() -> None:
    ips = [{"address": "192.0.2.99", "netmask": "255.255.255.0"}]

    found = make(instance={"ips": ips})

    assert [a.address for a in found.addresses] == [
        "198.51.100.5",
        "2001:db8:0:100::3",
        "10.70.0.3",
    ]
    assert [a.address for a in make(assigned=(), instance={"ips": ips}).addresses] == ["192.0.2.99"]


def get(instance: Instance, path: str) -> str | None:
    found = lookup(tree(instance), path)
    return None if found is None else found.decode()


def test_ec2_names_the_public_and_private_ipv4_and_the_ipv6() -> None:
    found = make()

    assert get(found, "meta-data/public-ipv4") == "198.51.100.5"
    assert get(found, "meta-data/local-ipv4") == "10.70.0.3"
    nic = "meta-data/network/interfaces/macs/52:54:00:00:00:01"
    assert get(found, f"{nic}/ipv6s") == "2001:db8:0:100::3"
    assert get(found, f"{nic}/subnet-ipv6-cidr-block") == "2001:db8:0:100::2/127"
    assert get(found, f"{nic}/local-ipv4s") == "10.70.0.3"
    assert get(found, f"{nic}/subnet-ipv4-cidr-block") == "10.70.0.2/31"
    assert get(found, f"{nic}/public-ipv4s") == "198.51.100.5"


def test_the_network_config_puts_them_on_the_first_nic_with_packets_routes() -> None:
    eth0 = network_config(make())["ethernets"]["eth0"]

    assert eth0["addresses"] == ["198.51.100.5/31", "2001:db8:0:100::3/127", "10.70.0.3/31"]
    assert (eth0["gateway4"], eth0["gateway6"]) == ("198.51.100.4", "2001:db8:0:100::2")
    assert eth0["routes"] == [{"to": "10.0.0.0/8", "via": "10.70.0.2"}]


def test_a_bonded_machine_has_them_on_the_bond() -> None:
    bonded = make(interfaces=(ETH0, ETH1), instance={"network": {"bonding": {"mode": 4}}})

    config = network_config(bonded)

    bond = config["bonds"]["bond0"]
    assert bond["interfaces"] == ["eth0", "eth1"]
    assert bond["addresses"] == ["198.51.100.5/31", "2001:db8:0:100::3/127", "10.70.0.3/31"]
    assert bond["gateway4"] == "198.51.100.4"
    assert bond["routes"] == [{"to": "10.0.0.0/8", "via": "10.70.0.2"}]
    assert "addresses" not in config["ethernets"]["eth0"]


def test_a_machine_with_only_a_private_block_has_no_default_ipv4_route() -> None:
    eth0 = network_config(make(assigned=PER_HOST[2:]))["ethernets"]["eth0"]

    assert eth0["addresses"] == ["10.70.0.3/31"]
    assert "gateway4" not in eth0
    assert eth0["routes"] == [{"to": "10.0.0.0/8", "via": "10.70.0.2"}]


@given(
    st.integers(0, 2**31 - 1).map(lambda n: ipaddress.IPv4Address(n * 2)),
    st.integers(0, 2**127 - 1).map(lambda n: ipaddress.IPv6Address(n * 2)),
)
def test_the_machine_takes_the_upper_address_and_the_lower_is_its_gateway(
    v4: ipaddress.IPv4Address, v6: ipaddress.IPv6Address
) -> None:
    for lower, prefixlen in ((v4, 31), (v6, 127)):
        found = assignment(
            "b",
            f"{lower}/{prefixlen}",
            "public",
            str(ipaddress.ip_network(f"{lower}/{prefixlen - 1}", strict=False)),
            "pool",
        )
        assert (found.address, found.gateway) == (str(lower + 1), str(lower))
        assert (found.cidr, found.network) == (prefixlen, str(lower))
