"""metalflow's network-config as Debian's cloud-init (22.4) applies it: the YAML the service
serves, loaded and parsed by cloud-init (`parse_net_config_data`), then written by its ENI
renderer (Debian's), networkd renderer, or handed to netplan. The OS is taken to have the NICs
under their `set-name` names, as cloud-init renames them before it renders."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalflow.index.instance import Instance, InterfaceFields, instance_from
from metalflow.metadata.netconfig import network_config
from tests.integration.cloudinit_client import Rendered, render_network
from tests.unit.metadata.test_ipam_addresses import make as make_ipam

ETH0 = InterfaceFields(
    "52:54:00:00:00:01", "192.0.2.11", "255.255.255.0", "192.0.2.1", ["192.0.2.53"]
)
ETH1 = InterfaceFields("52:54:00:00:00:02", "198.51.100.5", "255.255.255.0", None, [], vlan=100)
EQUINIX_IPS = [
    {"address": "198.51.100.7", "netmask": "255.255.255.254", "gateway": "198.51.100.6"},
    {"address": "2001:db8::7", "netmask": "127", "gateway": "2001:db8::6", "public": True},
    {"address": "10.0.0.3", "netmask": "255.255.255.128", "gateway": "10.0.0.1"},
]


def make(interfaces: list[InterfaceFields], **metadata: object) -> Instance:
    return instance_from(
        machine_id="0f3c",
        name="web1",
        hostname=None,
        interfaces=interfaces,
        metadata=metadata,
        user_data=None,
    )


def render(instance: Instance, renderer: str, folder: Path) -> Rendered:
    """The served file (the router's dump) through cloud-init, which must not complain."""
    served = folder / "network-config"
    served.write_text(yaml.safe_dump(network_config(instance), sort_keys=False))
    names = {nic.mac: nic.name for nic in instance.nics}
    rendered = render_network(str(served), renderer, nics=names)
    assert rendered.complaints == [], rendered.stderr
    return rendered


def subnets(rendered: Rendered, device: str) -> list[tuple[str, int, str | None]]:
    return [
        (subnet["address"], subnet["prefix"], subnet.get("gateway"))
        for subnet in rendered.interfaces[device]["subnets"]
    ]


def test_eni_gets_addresses_gateways_nameservers_and_the_vlan(tmp_path: Path) -> None:
    rendered = render(make([ETH0, ETH1]), "eni", tmp_path)
    assert subnets(rendered, "eth0") == [("192.0.2.11", 24, "192.0.2.1")]
    assert rendered.interfaces["eth0"]["mac_address"] == "52:54:00:00:00:01"
    assert subnets(rendered, "eth1") == []
    vlan = rendered.interfaces["eth1.100"]
    assert (vlan["vlan-raw-device"], vlan["vlan_id"]) == ("eth1", 100)
    assert subnets(rendered, "eth1.100") == [("198.51.100.5", 24, None)]
    assert rendered.nameservers == ["192.0.2.53", "192.0.2.53"]  # once per device that has it
    eni = rendered.files["etc/network/interfaces"]
    assert "auto eth0\niface eth0 inet static\n    address 192.0.2.11/24\n" in eni
    assert "    gateway 192.0.2.1\n" in eni
    assert "auto eth1.100\niface eth1.100 inet static\n    address 198.51.100.5/24\n" in eni
    assert "    vlan-raw-device eth1\n" in eni
    rules = rendered.files["etc/udev/rules.d/70-persistent-net.rules"]
    assert 'ATTR{address}=="52:54:00:00:00:02", NAME="eth1"' in rules


def test_eni_gets_the_bond_and_both_default_routes(tmp_path: Path) -> None:
    """The IPv6 default route survives: cloud-init 22.4 would turn a `to: ::/0` into ::/64."""
    instance = make(
        [ETH0, InterfaceFields("52:54:00:00:00:02")],
        instance={"ips": EQUINIX_IPS, "network": {"bonding": {"mode": 4}}},
    )
    rendered = render(instance, "eni", tmp_path)
    bond = rendered.interfaces["bond0"]
    assert bond["bond-mode"] == "802.3ad"
    assert subnets(rendered, "bond0") == [
        ("198.51.100.7", 31, "198.51.100.6"),
        ("2001:db8::7", 127, "2001:db8::6"),
        ("10.0.0.3", 25, None),
    ]
    for slave in ("eth0", "eth1"):
        assert rendered.interfaces[slave]["bond-master"] == "bond0"
        assert subnets(rendered, slave) == []
    eni = rendered.files["etc/network/interfaces"]
    assert "iface bond0 inet6 static\n    address 2001:db8::7/127\n    gateway 2001:db8::6\n" in eni
    assert "iface eth1 inet manual\n    bond-master bond0\n    bond-mode 802.3ad\n" in eni
    assert "route add" not in eni, "no net-tools `route` (optional in Debian 12)"
    assert "::/64" not in eni


def test_networkd_gets_both_default_routes(tmp_path: Path) -> None:
    ips = [EQUINIX_IPS[0], EQUINIX_IPS[1]]
    rendered = render(make([ETH0], instance={"ips": ips}), "networkd", tmp_path)
    network = rendered.files["etc/systemd/network/10-cloud-init-eth0.network"]
    assert "Address=198.51.100.7/31" in network and "Address=2001:db8::7/127" in network
    assert "Gateway=198.51.100.6" in network and "Gateway=2001:db8::6" in network
    assert "Destination" not in network  # a default route: no ::/64 in its place
    assert "DNS=192.0.2.53" in network


def test_netplan_gets_the_config_as_served(tmp_path: Path) -> None:
    instance = make([ETH0, ETH1])
    rendered = render(instance, "netplan", tmp_path)
    written = yaml.safe_load(rendered.files["etc/netplan/50-cloud-init.yaml"])
    assert written == {"network": network_config(instance)}


def test_an_off_subnet_gateway_is_on_link_which_only_netplan_keeps(tmp_path: Path) -> None:
    """A /32 address routes through a gateway it cannot reach without `on-link`; cloud-init
    22.4's own parser drops the flag, so ENI and networkd get a route the kernel refuses."""
    instance = make(
        [InterfaceFields("52:54:00:00:00:01", "192.0.2.11", "255.255.255.255", "192.0.2.1")]
    )
    netplan = render(instance, "netplan", tmp_path)
    written = yaml.safe_load(netplan.files["etc/netplan/50-cloud-init.yaml"])
    assert written["network"]["ethernets"]["eth0"]["routes"] == [
        {"to": "0.0.0.0/0", "via": "192.0.2.1", "on-link": True}
    ]
    eni = render(instance, "eni", tmp_path)
    [route] = eni.interfaces["eth0"]["subnets"][0]["routes"]
    assert (route["network"], route["prefix"], route["gateway"]) == ("0.0.0.0", 0, "192.0.2.1")
    assert set(route) <= {"network", "prefix", "netmask", "gateway"}


def test_ipam_per_host_blocks_get_their_gateways_and_the_private_route(tmp_path: Path) -> None:
    """networkd and netplan route 10.0.0.0/8 through the private /31's gateway; ENI has it as
    net-tools' `route add` (cloud-init 22.4 renders every ENI route so), which needs the
    net-tools package in the image."""
    instance = make_ipam()
    networkd = render(instance, "networkd", tmp_path)
    network = networkd.files["etc/systemd/network/10-cloud-init-eth0.network"]
    for address in ("198.51.100.5/31", "2001:db8:0:100::3/127", "10.70.0.3/31"):
        assert f"Address={address}" in network
    assert "Gateway=198.51.100.4" in network and "Gateway=2001:db8:0:100::2" in network
    assert "[Route]\nDestination=10.0.0.0/8\n\nGateway=10.70.0.2" in network
    netplan = render(instance, "netplan", tmp_path)
    written = yaml.safe_load(netplan.files["etc/netplan/50-cloud-init.yaml"])
    assert written == {"network": network_config(instance)}
    eni = render(instance, "eni", tmp_path)
    assert subnets(eni, "eth0") == [
        ("198.51.100.5", 31, "198.51.100.4"),
        ("2001:db8:0:100::3", 127, "2001:db8:0:100::2"),
        ("10.70.0.3", 31, None),
    ]
    assert "post-up route add -net 10.0.0.0/8 gw 10.70.0.2" in eni.files["etc/network/interfaces"]


addresses = st.lists(
    st.tuples(st.ip_addresses(), st.integers(0, 128), st.booleans()).map(
        lambda found: {
            "address": str(found[0]),
            "netmask": str(found[1] % (33 if found[0].version == 4 else 129)),
            "public": found[2],
        }
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda found: found["address"],
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(addresses, st.sampled_from([0, 1, 4]), st.integers(1, 2), st.booleans())
def test_cloudinit_keeps_every_address_on_the_device_metalflow_chose(
    tmp_path: Path, ips: list[dict[str, Any]], mode: int, nics: int, gateways: bool
) -> None:
    """Whatever the addresses, cloud-init's network state holds each of them, with its prefix,
    on the device network-config puts it on, and each family's default route at most once."""
    if gateways:
        for entry in ips:
            network = ipaddress.ip_network(f"{entry['address']}/{entry['netmask']}", strict=False)
            entry["gateway"] = str(next(iter(network)))
    interfaces = [InterfaceFields(f"52:54:00:00:00:0{i}") for i in range(nics)]
    instance = make(interfaces, instance={"ips": ips, "network": {"bonding": {"mode": mode}}})
    config = network_config(instance)
    rendered = render(instance, "eni", tmp_path)
    expected = {
        (name, address)
        for group in ("ethernets", "bonds", "vlans")
        for name, device in config.get(group, {}).items()
        for address in device.get("addresses", [])
    }
    found = {
        (name, f"{ipaddress.ip_address(subnet['address'])}/{subnet['prefix']}")
        for name, iface in rendered.interfaces.items()
        for subnet in iface["subnets"]
        if "address" in subnet
    }
    assert found == expected
    defaults = [
        ipaddress.ip_network(f"{route['network']}/{route['prefix']}").version
        for iface in rendered.interfaces.values()
        for subnet in iface["subnets"]
        for route in subnet.get("routes", [])
        if route["prefix"] == 0
    ] + [
        ipaddress.ip_address(subnet["gateway"]).version
        for iface in rendered.interfaces.values()
        for subnet in iface["subnets"]
        if subnet.get("gateway")
    ]
    assert sorted(defaults) == sorted(set(defaults))
