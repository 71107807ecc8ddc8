"""Debian's cloud-init against metalflow's metadata service, from each machine's own namespace:
its whole EC2 datasource (what an installed OS with `datasource: {Ec2: {metadata_urls:
[http://METALFLOW:50061]}}` gets), and the served network-config through its parser and the
ENI renderer Debian uses."""

from __future__ import annotations

import pytest

from tests.integration.bootlab import BootLab, Host, Metalflow
from tests.integration.cloudinit_client import ec2_datasource, render_network
from tests.manifests import interface, machine, stream

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetalflowTestKey ops@example"
BASE = "http://192.0.2.1:50061"
WEB1, WEB2, WEB2_VLAN = "52:54:00:00:5e:01", "52:54:00:00:5e:02", "52:54:00:00:5e:12"
MACHINES = stream(
    machine(
        "web1",
        interface(WEB1, "192.0.2.11", nameservers=["192.0.2.53"]),
        hostname="web1.lab",
        userData="#cloud-config\nhostname: web1\n",
        metadata={
            "instance": {
                "id": "id-web1",
                "ssh_keys": [KEY],
                "ips": [
                    {
                        "address": "192.0.2.11",
                        "netmask": "255.255.255.0",
                        "gateway": "192.0.2.1",
                        "management": True,
                    },
                    {"address": "192.0.2.21", "netmask": "255.255.255.0"},
                    {
                        "address": "2001:db8::11",
                        "netmask": "64",
                        "gateway": "2001:db8::1",
                        "public": True,
                    },
                ],
            },
            "facility": {"facility_code": "lab1"},
        },
    ),
    machine(
        "web2",
        interface(WEB2, "192.0.2.12", nameservers=["192.0.2.53"]),
        {"mac": WEB2_VLAN, "ip": "198.51.100.12", "netmask": "255.255.255.0", "vlan": 100},
        hostname="web2.lab",
        metadata={"instance": {"id": "id-web2"}, "facility": {"facility_code": "lab2"}},
    ),
)


@pytest.fixture
def served(lab: BootLab) -> tuple[Metalflow, Host, Host]:
    metalflow = lab.metalflow()
    with metalflow.api() as api:
        applied = api.post(
            "/api/v1/apply",
            content=MACHINES.encode(),
            headers={"Content-Type": "application/yaml"},
        )
        assert applied.status_code == 200, applied.text
    web1, web2 = lab.host(WEB1), lab.host(WEB2)
    web1.set_address("192.0.2.11/24")
    web2.set_address("192.0.2.12/24")
    return metalflow, web1, web2


def netns(host: Host) -> list[str]:
    return ["ip", "netns", "exec", host.namespace]


def test_cloud_init_ec2_datasource_gets_each_machine_its_own_instance(
    served: tuple[Metalflow, Host, Host],
) -> None:
    _, web1, web2 = served
    first = ec2_datasource(BASE, wrap=netns(web1))
    assert first.found, first.stderr
    assert first.cloud_name == "unknown"  # not AWS: no IMDSv2 token demanded, no identity doc
    assert first.instance_id == "id-web1"
    assert (first.hostname, first.fqdn) == ("web1", "web1.lab")
    assert first.public_keys == [KEY]
    assert first.availability_zone == "lab1"
    assert first.userdata == b"#cloud-config\nhostname: web1\n"
    nic = first.metadata["network"]["interfaces"]["macs"][WEB1]
    assert nic["local-ipv4s"] == ["192.0.2.11", "192.0.2.21"]
    assert nic["ipv6s"] == "2001:db8::11"
    # DHCP for the primary address of each family, the secondary one static with its prefix.
    assert first.network_config == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "dhcp4": True,
                "dhcp6": True,
                "match": {"macaddress": WEB1},
                "set-name": "eth0",
                "addresses": ["192.0.2.21/24"],
            }
        },
    }
    assert "boot" in first.network_events, "no vpc-id: the network config follows every boot"

    second = ec2_datasource(BASE, wrap=netns(web2))
    assert second.found, second.stderr
    assert (second.instance_id, second.fqdn) == ("id-web2", "web2.lab")
    assert second.public_keys == []
    assert second.availability_zone == "lab2"
    assert second.userdata is None
    # The second NIC carries only a VLAN's address, which EC2 cannot say: not listed, no DHCP.
    assert list(second.metadata["network"]["interfaces"]["macs"]) == [WEB2]
    assert second.network_config == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "dhcp4": True,
                "dhcp6": False,
                "match": {"macaddress": WEB2},
                "set-name": "eth0",
            }
        },
    }


def test_cloud_init_renders_the_served_network_config(
    served: tuple[Metalflow, Host, Host],
) -> None:
    """cloud-init fetches and parses /nocloud/network-config in each machine's namespace, where
    the NIC already has its `set-name` (as after cloud-init's renames), and renders ENI."""
    _, web1, web2 = served
    first = render_network(f"{BASE}/nocloud/network-config", "eni", wrap=netns(web1))
    assert first.complaints == []
    subnets = first.interfaces["eth0"]["subnets"]
    assert [(s["address"], s["prefix"], s.get("gateway")) for s in subnets] == [
        ("192.0.2.11", 24, "192.0.2.1"),
        ("192.0.2.21", 24, None),
        ("2001:db8::11", 64, "2001:db8::1"),
    ]
    assert first.nameservers == ["192.0.2.53"]
    eni = first.files["etc/network/interfaces"]
    assert "iface eth0 inet static\n    address 192.0.2.11/24\n" in eni
    assert "    gateway 192.0.2.1\n" in eni and "    gateway 2001:db8::1\n" in eni
    assert "route add" not in eni, "ifupdown's own gateway, not net-tools' route"

    second = render_network(f"{BASE}/nocloud/network-config", "eni", wrap=netns(web2))
    assert second.complaints == []
    [address] = second.interfaces["eth0"]["subnets"]
    assert (address["address"], address["gateway"]) == ("192.0.2.12", "192.0.2.1")
    vlan = second.interfaces["eth1.100"]
    assert (vlan["vlan-raw-device"], vlan["vlan_id"]) == ("eth1", 100)
    assert vlan["subnets"][0]["address"] == "198.51.100.12"
    assert "iface eth1.100 inet static" in second.files["etc/network/interfaces"]
