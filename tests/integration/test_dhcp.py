"""DHCP as machines see it: real clients (ISC dhclient, busybox udhcpc, dnsmasq as the site's
DHCP, hand-crafted PXE and relay packets) against `metalflow up --interface` in namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bootlab import SERVER_IP, BootLab, Host, Metalflow, wait_for
from tests.manifests import simple_template
from tests.prerequisites import needs_tool

pytestmark = pytest.mark.usefixtures("lab")
PXE_CLIENT = str(Path(__file__).with_name("pxe_client.py"))
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
env | grep -E '^(ip|subnet|router|dns|hostname|domain|lease|boot_file|siaddr|serverid)=' \\
    | sort > "$MF_OUT"
"""


def machine(name: str, mac: str, ip: str | None = "192.0.2.31", *, pxe: bool = True) -> str:
    address = (
        f"ip: {ip}\n      netmask: 255.255.255.0\n      gateway: 192.0.2.1\n      " if ip else ""
    )
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  hostname: {name}.lab
  interfaces:
    - mac: "{mac}"
      {address}nameservers: [192.0.2.53]
      lease_time: 3600
      netboot: {{allowPXE: {str(pxe).lower()}, allowWorkflow: true}}
"""


def apply(metalflow: Metalflow, text: str) -> None:
    with metalflow.api() as api:
        response = api.post(
            "/api/v1/apply", content=text.encode(), headers={"Content-Type": "application/yaml"}
        )
        assert response.status_code == 200, response.text


def provision(metalflow: Metalflow, name: str) -> None:
    apply(metalflow, simple_template("demo"))
    with metalflow.api() as api:
        response = api.post(f"/api/v1/machines/{name}/provision", json={"template": "demo"})
        assert response.status_code == 201, response.text


def udhcpc(host: Host, tmp: Path, *extra: str) -> dict[str, str]:
    """One busybox udhcpc run (-q: quit once bound); the options it was given, by name."""
    needs_tool("udhcpc", "udhcpc")
    script = tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = tmp / f"udhcpc-{host.mac}.env"
    out.unlink(missing_ok=True)
    result = host.run(
        [
            "env",
            f"MF_OUT={out}",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-f",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            str(script),
            *extra,
        ],
        check=False,
    )
    assert result.returncode == 0 and out.exists(), f"udhcpc got no lease:\n{result.stderr}"
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


def pxe(host: Host, *args: str) -> list[dict[str, Any]]:
    result = host.run([sys.executable, PXE_CLIENT, *args])
    return [json.loads(line) for line in result.stdout.splitlines()]


def events(metalflow: Metalflow, name: str) -> list[dict[str, Any]]:
    with metalflow.api() as api:
        items: list[dict[str, Any]] = api.get(
            "/api/v1/events", params={"machine": name, "limit": 1000}
        ).json()["items"]
        return items


def test_reservation_gives_dhclient_and_udhcpc_the_machine_address_and_options(
    lab: BootLab, tmp_path: Path
) -> None:
    dhclient = needs_tool("dhclient", "isc-dhcp-client")
    metalflow = lab.metalflow()
    first, second = lab.host("52:54:00:aa:00:01"), lab.host("52:54:00:aa:00:02")
    apply(
        metalflow, machine("web1", first.mac) + "---\n" + machine("web2", second.mac, "192.0.2.32")
    )

    got = udhcpc(first, tmp_path)
    assert got["ip"] == "192.0.2.31"
    assert got["subnet"] == "255.255.255.0"
    assert got["router"] == "192.0.2.1"
    assert got["dns"].split() == ["192.0.2.53"]
    assert got["hostname"] == "web1.lab"
    assert got["lease"] == "3600"
    assert got["serverid"] == SERVER_IP
    assert "boot_file" not in got, "no workflow: an address but no boot file"

    script = tmp_path / "dhclient-script"
    out = tmp_path / "dhclient.env"
    script.write_text(
        f'#!/bin/sh\ncase "$reason" in BOUND|RENEW|REBOOT) env | grep ^new_ | sort > {out};; esac\n'
    )
    script.chmod(0o755)
    second.run(
        [
            dhclient,
            "-1",
            "-v",
            "-sf",
            str(script),
            "-lf",
            str(tmp_path / "leases"),
            "-pf",
            str(tmp_path / "dhclient.pid"),
            "eth0",
        ],
        timeout=60,
    )
    second.run([dhclient, "-x", "-pf", str(tmp_path / "dhclient.pid")], check=False)
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert values["new_ip_address"] == "192.0.2.32"
    assert values["new_subnet_mask"] == "255.255.255.0"
    assert values["new_routers"] == "192.0.2.1"
    assert values["new_domain_name_servers"] == "192.0.2.53"
    assert values["new_host_name"] == "web2.lab"

    wait_for(lambda: any(e["kind"] == "dhcp.ack" for e in events(metalflow, "web1")))
    ack = next(e for e in events(metalflow, "web1") if e["kind"] == "dhcp.ack")
    assert ack["data"]["address"] == "192.0.2.31"


def test_a_machine_without_a_typed_ip_is_answered_its_provisioning_address(
    lab: BootLab, tmp_path: Path
) -> None:
    metalflow = lab.metalflow()
    host = lab.host("52:54:00:aa:00:03")
    pool = (
        "apiVersion: metalflow/v1\nkind: Prefix\n"
        "spec: {cidr: 192.0.2.0/24, kind: private, provisioning: true}\n"
    )
    apply(metalflow, pool + "---\n" + machine("web3", host.mac, None))

    got = udhcpc(host, tmp_path)
    assert (got["ip"], got["subnet"], got["router"]) == ("192.0.2.2", "255.255.255.0", SERVER_IP)
    assert got["hostname"] == "web3.lab"


def test_unknown_machine_without_pool_is_ignored_and_logged(lab: BootLab) -> None:
    metalflow = lab.metalflow()
    stranger = lab.host("52:54:00:bb:00:01")
    assert pxe(stranger, "discover", "--arch", "0", "--wait", "2") == []
    wait_for(lambda: "52:54:00:bb:00:01" in metalflow.log())
    line = next(line for line in metalflow.log().splitlines() if "52:54:00:bb:00:01" in line)
    assert "event=dhcp.ignored" in line and "counter=no_address" in line


def test_pool_leases_renew_and_survive_a_restart(lab: BootLab, tmp_path: Path) -> None:
    metalflow = lab.metalflow("--dhcp-pool", "192.0.2.100-192.0.2.110")
    client, other = lab.host("52:54:00:cc:00:01"), lab.host("52:54:00:cc:00:02")
    first = udhcpc(client, tmp_path)
    assert first["ip"].startswith("192.0.2.1") and 100 <= int(first["ip"].split(".")[3]) <= 110
    renewed = udhcpc(client, tmp_path, "-r", first["ip"])
    assert renewed["ip"] == first["ip"]

    lab.stop(metalflow)
    metalflow = lab.metalflow("--dhcp-pool", "192.0.2.100-192.0.2.110", data_dir=metalflow.data_dir)
    assert udhcpc(client, tmp_path)["ip"] == first["ip"], "the lease came back after a restart"
    second = udhcpc(other, tmp_path)["ip"]
    assert second != first["ip"], "a held address is not given away"
    with metalflow.api() as api:
        leases = api.get("/api/v1/dhcp/leases").json()["items"]
        metrics = api.get("/metrics").text
    assert 'metalflow_dhcp_lease_writes_total{what="leases"} 2.0' in metrics
    assert {(lease["mac"], lease["address"]) for lease in leases} == {
        (client.mac, first["ip"]),
        (other.mac, second),
    }


@pytest.mark.parametrize(
    ("arch", "vendor", "user_class", "expected"),
    [
        (0, None, None, "undionly.kpxe"),
        (7, None, None, "ipxe.efi"),
        (9, None, None, "ipxe.efi"),
        (11, None, None, "snp-arm64.efi"),
        (
            16,
            "HTTPClient:Arch:00016:UNDI:003001",
            None,
            "http://192.0.2.1:7080/boot/assets/ipxe.efi",
        ),
        (0, None, "iPXE", "http://192.0.2.1:7080/boot/52:54:00:dd:00:01.ipxe"),
    ],
)
def test_each_architecture_gets_its_boot_file(
    lab: BootLab, arch: int, vendor: str | None, user_class: str | None, expected: str
) -> None:
    metalflow = lab.metalflow()
    host = lab.host("52:54:00:dd:00:01")
    apply(metalflow, machine("m1", host.mac))
    provision(metalflow, "m1")
    args = ["discover", "--arch", str(arch)]
    if vendor:
        args += ["--vendor", vendor]
    if user_class:
        args += ["--user-class", user_class]

    def offered() -> bool:
        replies = pxe(host, *args, "--wait", "1")
        return bool(replies) and replies[0]["file"] == expected

    wait_for(offered, timeout=15)
    reply = pxe(host, *args, "--wait", "1")[0]
    assert reply["yiaddr"] == "192.0.2.31"
    assert reply["siaddr"] == SERVER_IP
    if vendor:
        assert reply["options"]["vendor_class_id"] == "HTTPClient"


def test_interface_without_pxe_gets_an_address_and_no_boot_file(lab: BootLab) -> None:
    metalflow = lab.metalflow()
    host = lab.host("52:54:00:dd:00:02")
    apply(metalflow, machine("m2", host.mac, pxe=False))
    (reply,) = pxe(host, "discover", "--arch", "7")
    assert reply["yiaddr"] == "192.0.2.31"
    assert reply["file"] == ""


def test_proxy_mode_beside_dnsmasq(lab: BootLab, tmp_path: Path) -> None:
    dnsmasq = needs_tool("dnsmasq", "dnsmasq-base")
    site = lab.host("52:54:00:ee:00:01")
    site.set_address("192.0.2.2/24")
    site.popen(
        [
            dnsmasq,
            "--no-daemon",
            "--port=0",
            "--interface=eth0",
            "--bind-interfaces",
            "--dhcp-range=192.0.2.150,192.0.2.160,255.255.255.0,1h",
            "--no-ping",
            f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
            "--dhcp-option=3,192.0.2.1",
            "--log-dhcp",
        ],
        stdout=(tmp_path / "dnsmasq.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    metalflow = lab.metalflow("--dhcp-mode", "proxy")
    client = lab.host("52:54:00:ee:00:02")
    apply(metalflow, machine("pxe1", client.mac, ip=None))
    provision(metalflow, "pxe1")

    def both_answer() -> bool:
        replies = pxe(client, "discover", "--arch", "0", "--wait", "2")
        return {r["source"][0] for r in replies} == {"192.0.2.2", SERVER_IP}

    wait_for(both_answer, timeout=30)
    replies = pxe(client, "discover", "--arch", "0", "--wait", "2")
    site_offer = next(r for r in replies if r["source"][0] == "192.0.2.2")
    proxy_offer = next(r for r in replies if r["source"][0] == SERVER_IP)
    assert site_offer["yiaddr"].startswith("192.0.2.15") or site_offer["yiaddr"] == "192.0.2.160"
    assert proxy_offer["yiaddr"] == "0.0.0.0"
    assert proxy_offer["file"] == "undionly.kpxe"
    assert proxy_offer["siaddr"] == SERVER_IP
    assert proxy_offer["options"]["vendor_class_id"] == "PXEClient"
    assert proxy_offer["options"]["server_id"] == SERVER_IP
    assert proxy_offer["options"]["vendor_specific"] == "060108ff"  # PXE discovery control 8
    assert (
        proxy_offer["options"]["pxe_client_machine_identifier"] == "00" + bytes(range(16)).hex()
    )  # the UUID, echoed

    # The client takes its address from the site, then asks metalflow on 4011 for the boot file.
    site_lease = udhcpc(client, tmp_path)
    assert site_lease["ip"] == site_offer["yiaddr"] or site_lease["ip"].startswith("192.0.2.1")
    client.set_address(f"{site_lease['ip']}/24")
    (ack,) = pxe(
        client,
        "request",
        "--arch",
        "0",
        "--server",
        SERVER_IP,
        "--port",
        "4011",
        "--ciaddr",
        site_lease["ip"],
    )
    assert ack["file"] == "undionly.kpxe"
    assert ack["yiaddr"] == "0.0.0.0"


def test_relayed_requests_are_answered_at_the_relay(lab: BootLab, tmp_path: Path) -> None:
    config = tmp_path / "boot.yaml"
    config.write_text(
        """\
networks:
  - subnet: 192.0.2.0/24
  - subnet: 198.18.100.0/24
    gateway: 198.18.100.1
    nameservers: [198.18.100.53]
    pool: {start: 198.18.100.10, end: 198.18.100.20}
    lease_time: 600
"""
    )
    metalflow = lab.metalflow("--boot-config", str(config))
    relay = lab.host("52:54:00:ff:00:01")
    relay.set_address("192.0.2.9/24")
    relay.set_address("198.18.100.1/24")
    lab.server.run(["ip", "route", "add", "198.18.100.0/24", "via", "192.0.2.9"])
    (offer,) = pxe(
        relay,
        "relay",
        "--giaddr",
        "198.18.100.1",
        "--server",
        SERVER_IP,
        "--mac",
        "52:54:00:ff:00:99",
    )
    assert offer["source"] == [SERVER_IP, 67]
    assert offer["giaddr"] == "198.18.100.1"
    assert offer["yiaddr"] == "198.18.100.10"
    assert offer["options"]["router"] == "198.18.100.1"
    assert offer["options"]["lease_time"] == 600
    assert metalflow.process.poll() is None


def test_malformed_packets_are_dropped_and_the_server_keeps_answering(lab: BootLab) -> None:
    metalflow = lab.metalflow("--dhcp-pool", "192.0.2.100-192.0.2.110")
    noisy = lab.host("52:54:00:99:00:01")
    noisy.set_address("192.0.2.99/24")
    (report,) = pxe(noisy, "fuzz", "--server", SERVER_IP, "--count", "20000")
    assert report["sent"] > 19000
    # Mutated DISCOVERs carry ever new MACs and may well have taken every pool address for
    # OFFER_HOLD_SECONDS (pool starvation, as for any DHCP server); a machine in inventory keeps
    # its reserved address.
    client = lab.host("52:54:00:99:00:02")
    apply(metalflow, machine("steady", client.mac))
    wait_for(lambda: bool(pxe(client, "discover", "--arch", "0", "--wait", "1")), timeout=30)
    assert metalflow.process.poll() is None
    with metalflow.api() as api:
        metrics = api.get("/metrics").text
    dropped = [line for line in metrics.splitlines() if line.startswith("metalflow_dhcp_dropped")]
    assert any('reason="malformed"' in line and not line.endswith(" 0.0") for line in dropped)
