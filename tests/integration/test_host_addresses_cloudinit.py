"""Debian's stock cloud-init reads the per-host addresses IPAM gave a machine, from the
machine's own namespace: its EC2 datasource, and the served network-config through its parser
and renderers. Nothing about the addresses is typed in the manifest: the machine's only typed
address is its provisioning one, which is how the metadata service knows it. ENI (Debian 12's
renderer) writes the private route as net-tools' `route add`: an image needs net-tools for it."""

from __future__ import annotations

import yaml

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.events import persist
from metalflow.ipam import hosts, service
from metalflow.ipam.hostplan import HostSizes
from metalflow.ipam.tables import Kind
from tests.integration.bootlab import BootLab, Host
from tests.integration.cloudinit_client import ec2_datasource, render_network
from tests.manifests import interface, machine, stream

BASE = "http://192.0.2.1:50061"
WEB1 = "52:54:00:00:5e:31"
PACKET = HostSizes(public4=31, private4=31, public6=127, project_private4=25, project_public6=56)
POOLS = (
    service.PrefixSpec("198.51.100.0/24", Kind.PUBLIC, "am6"),
    service.PrefixSpec("10.70.0.0/16", Kind.PRIVATE, "am6"),
    service.PrefixSpec("2001:db8::/48", Kind.PUBLIC, "am6"),
)


def addressed_machine(lab: BootLab) -> Host:
    """web1 applied through the API, its addresses given while metalflow is stopped (on SQLite
    only the writing process hears its events), then metalflow serving again."""
    metalflow = lab.metalflow()
    with metalflow.api() as api:
        manifest = stream(
            machine("web1", interface(WEB1, "192.0.2.31", nameservers=["192.0.2.53"]), metro="am6")
        )
        applied = api.post(
            "/api/v1/apply", content=manifest, headers={"Content-Type": "application/yaml"}
        )
        assert applied.status_code == 200, applied.text
        found = api.get("/api/v1/machines/web1").json()
    lab.stop(metalflow)
    db = Database(Settings(data_dir=metalflow.data_dir).database_url, before_commit=[persist])
    try:
        with db.write() as session:
            for spec in POOLS:
                service.create_prefix(session, spec)
            given = hosts.give_host_addresses(
                session, found["id"], "a" * 32, found["metro"], PACKET
            )
            assert [block.cidr for block in given] == [
                "198.51.100.0/31",
                "10.70.0.0/31",
                "2001:db8::/127",
            ]
    finally:
        db.dispose()
    lab.metalflow(data_dir=metalflow.data_dir)
    web1 = lab.host(WEB1)
    web1.set_address("192.0.2.31/24")
    return web1


def netns(host: Host) -> list[str]:
    return ["ip", "netns", "exec", host.namespace]


def test_stock_cloud_init_sees_the_per_host_addresses(lab: BootLab) -> None:
    web1 = addressed_machine(lab)

    source = ec2_datasource(BASE, wrap=netns(web1))
    assert source.found, source.stderr
    assert source.metadata["public-ipv4"] == "198.51.100.1"
    assert source.metadata["local-ipv4"] == "10.70.0.1"
    nic = source.metadata["network"]["interfaces"]["macs"][WEB1]
    assert nic["ipv6s"] == "2001:db8::1"
    assert nic["subnet-ipv6-cidr-block"] == "2001:db8::/127"

    served = f"{BASE}/nocloud/network-config"
    netplan = render_network(served, "netplan", wrap=netns(web1))
    assert netplan.complaints == []
    written = yaml.safe_load(netplan.files["etc/netplan/50-cloud-init.yaml"])
    eth0 = written["network"]["ethernets"]["eth0"]
    assert eth0["match"] == {"macaddress": WEB1}
    assert eth0["addresses"] == ["198.51.100.1/31", "2001:db8::1/127", "10.70.0.1/31"]
    assert (eth0["gateway4"], eth0["gateway6"]) == ("198.51.100.0", "2001:db8::")
    assert eth0["routes"] == [{"to": "10.0.0.0/8", "via": "10.70.0.0"}]
    assert eth0["nameservers"] == {"addresses": ["192.0.2.53"]}

    eni = render_network(served, "eni", wrap=netns(web1))
    assert eni.complaints == []
    assert [
        (s["address"], s["prefix"], s.get("gateway")) for s in eni.interfaces["eth0"]["subnets"]
    ] == [
        ("198.51.100.1", 31, "198.51.100.0"),
        ("2001:db8::1", 127, "2001:db8::"),
        ("10.70.0.1", 31, None),
    ]
    stanzas = eni.files["etc/network/interfaces"].split("\n\n")
    public4, public6 = (
        next(stanza for stanza in stanzas if f"address {cidr}" in stanza)
        for cidr in ("198.51.100.1/31", "2001:db8::1/127")
    )
    assert "iface eth0 inet static" in public4 and "gateway 198.51.100.0" in public4
    assert "iface eth0 inet6 static" in public6 and "gateway 2001:db8::" in public6
    assert "post-up route add -net 10.0.0.0/8 gw 10.70.0.0" in public4
