"""The Equinix-style /metadata document and the network config v2 made from one instance."""

from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st

from metalflow.index.instance import Instance, InterfaceFields, instance_from
from metalflow.metadata.equinix import Urls, document
from metalflow.metadata.netconfig import network_config

URLS = Urls(
    "http://192.0.2.1:7080", "http://192.0.2.1:50061/phone-home", "http://192.0.2.1:50061/events"
)
ETH0 = InterfaceFields(
    "52:54:00:00:00:01", "192.0.2.11", "255.255.255.0", "192.0.2.1", ["192.0.2.53"]
)
ETH1 = InterfaceFields("52:54:00:00:00:02", "198.51.100.5", "255.255.255.0", None, [], vlan=100)


def make(interfaces: list[InterfaceFields], **metadata: object) -> Instance:
    return instance_from(
        machine_id="0f3c",
        name="web1",
        hostname=None,
        interfaces=interfaces,
        metadata=metadata,
        user_data=None,
    )


def test_equinix_document_carries_addresses_interfaces_and_urls() -> None:
    found = document(
        make([ETH0], instance={"ssh_keys": ["ssh-ed25519 AAAA"], "tags": ["web"]}, custom={"a": 1}),
        URLS,
    )
    assert found["id"] == "0f3c" and found["hostname"] == "web1"
    assert found["iqn"].endswith(":device.0f3c")
    assert found["ssh_keys"] == ["ssh-ed25519 AAAA"] and found["tags"] == ["web"]
    assert found["customdata"] == {"a": 1}
    [address] = found["network"]["addresses"]
    assert address == {
        "id": None,
        "address": "192.0.2.11",
        "netmask": "255.255.255.0",
        "gateway": "192.0.2.1",
        "network": "192.0.2.0",
        "cidr": 24,
        "address_family": 4,
        "family": 4,
        "public": False,
        "management": True,
        "manageable": False,
        "enabled": True,
        "parent_block": None,
    }
    assert found["network"]["interfaces"] == [{"name": "eth0", "mac": "52:54:00:00:00:01"}]
    assert found["phone_home_url"] == URLS.phone_home
    json.dumps(found)


def test_interface_addresses_go_on_their_own_nic_and_vlan() -> None:
    config = network_config(make([ETH0, ETH1]))
    eth0 = config["ethernets"]["eth0"]
    assert eth0["match"] == {"macaddress": "52:54:00:00:00:01"} and eth0["set-name"] == "eth0"
    assert eth0["addresses"] == ["192.0.2.11/24"]
    assert eth0["gateway4"] == "192.0.2.1" and "routes" not in eth0
    assert eth0["nameservers"] == {"addresses": ["192.0.2.53"]}
    assert "addresses" not in config["ethernets"]["eth1"]
    assert config["vlans"] == {
        "eth1.100": {
            "id": 100,
            "link": "eth1",
            "addresses": ["198.51.100.5/24"],
            "nameservers": {"addresses": ["192.0.2.53"]},
        }
    }


def test_the_served_yaml_repeats_nameservers_instead_of_aliasing_them() -> None:
    served = yaml.safe_dump(network_config(make([ETH0, ETH1])), sort_keys=False)
    assert "&" not in served and "*" not in served
    assert served.count("- 192.0.2.53") == 2


def test_metadata_addresses_go_on_the_bond_of_all_nics() -> None:
    ips = [
        {
            "address": "198.51.100.7",
            "netmask": "255.255.255.254",
            "gateway": "198.51.100.6",
            "public": True,
        },
        {"address": "2001:db8::7", "netmask": "127", "gateway": "2001:db8::6", "public": True},
        {"address": "10.0.0.3", "netmask": "255.255.255.128", "gateway": "10.9.9.9"},
    ]
    config = network_config(
        make(
            [ETH0, InterfaceFields("52:54:00:00:00:02")],
            instance={"ips": ips, "network": {"bonding": {"mode": 4}}},
        )
    )
    bond = config["bonds"]["bond0"]
    assert bond["interfaces"] == ["eth0", "eth1"] and bond["parameters"] == {"mode": "802.3ad"}
    assert bond["addresses"] == ["198.51.100.7/31", "2001:db8::7/127", "10.0.0.3/25"]
    assert (bond["gateway4"], bond["gateway6"]) == ("198.51.100.6", "2001:db8::6")
    assert "routes" not in bond


def test_a_gateway_outside_the_subnet_is_on_link() -> None:
    config = network_config(
        make([InterfaceFields("52:54:00:00:00:01", "192.0.2.11", "255.255.255.255", "192.0.2.1")])
    )
    assert config["ethernets"]["eth0"]["routes"] == [
        {"to": "0.0.0.0/0", "via": "192.0.2.1", "on-link": True}
    ]


def test_no_nics_is_an_empty_config() -> None:
    assert network_config(make([])) == {"version": 2, "ethernets": {}}


addresses = st.lists(
    st.tuples(st.ip_addresses(), st.booleans()).map(
        lambda pair: {"address": str(pair[0]), "public": pair[1], "family": pair[0].version}
    ),
    max_size=6,
)


@given(addresses, st.integers(0, 6), st.integers(1, 3))
def test_every_address_is_configured_exactly_once(
    ips: list[dict[str, object]], mode: int, nics: int
) -> None:
    interfaces = [InterfaceFields(f"52:54:00:00:00:0{i}") for i in range(nics)]
    instance = make(interfaces, instance={"ips": ips, "network": {"bonding": {"mode": mode}}})
    config = network_config(instance)
    devices = [*config["ethernets"].values(), *config.get("bonds", {}).values()]
    configured = [a for device in devices for a in device.get("addresses", [])]
    assert sorted(configured) == sorted(f"{a.address}/{a.cidr}" for a in instance.addresses)
    json.dumps(config)
