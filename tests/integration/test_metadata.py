"""The metadata service in a network namespace: machines ask from their own addresses (curl),
each reads only its own metadata, unknown callers get 404, the ports keep to their paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.bootlab import BootLab, Host, Metalflow, wait_for
from tests.integration.cloudinit_client import crawl, crawl_imdsv2
from tests.manifests import interface, machine, stream

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetalflowTestKey ops@example"
BASE = "http://192.0.2.1:50061"


def manifest(name: str, mac: str, ip: str, *, user_data: str | None) -> dict[str, object]:
    data = {"userData": user_data} if user_data is not None else {}
    return machine(
        name,
        interface(mac, ip, nameservers=["192.0.2.53"]),
        hostname=f"{name}.lab",
        metadata={
            "instance": {"id": f"id-{name}", "ssh_keys": [KEY], "tags": [f"role={name}"]},
            "facility": {"facility_code": "lab1", "plan_slug": "vm.small"},
        },
        **data,
    )


def curl(host: Host, url: str, *args: str) -> tuple[int, str]:
    done = host.run(["curl", "-s", "-o", "-", "-w", "\\n%{http_code}", *args, url], check=False)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture
def served(lab: BootLab) -> tuple[Metalflow, Host, Host]:
    metalflow = lab.metalflow("--metadata-trusted-proxy", "192.0.2.30")
    text = stream(
        manifest(
            "web1", "52:54:00:00:5d:01", "192.0.2.11", user_data="#cloud-config\nhostname: web1\n"
        ),
        manifest("web2", "52:54:00:00:5d:02", "192.0.2.12", user_data=None),
    )
    with metalflow.api() as api:
        applied = api.post(
            "/api/v1/apply", content=text.encode(), headers={"Content-Type": "application/yaml"}
        )
        assert applied.status_code == 200, applied.text
    web1, web2 = lab.host("52:54:00:00:5d:01"), lab.host("52:54:00:00:5d:02")
    web1.set_address("192.0.2.11/24")
    web2.set_address("192.0.2.12/24")
    return metalflow, web1, web2


def test_each_machine_reads_its_own_ec2_metadata(served: tuple[Metalflow, Host, Host]) -> None:
    _, web1, web2 = served
    assert curl(web1, f"{BASE}/2009-04-04/meta-data/instance-id") == (200, "id-web1")
    assert curl(web2, f"{BASE}/2009-04-04/meta-data/instance-id") == (200, "id-web2")
    assert curl(web1, f"{BASE}/latest/meta-data/hostname") == (200, "web1.lab")
    assert curl(web1, f"{BASE}/latest/meta-data/local-ipv4") == (200, "192.0.2.11")
    assert curl(web1, f"{BASE}/2009-04-04/meta-data/public-keys/") == (200, "0=ops@example")
    assert curl(web1, f"{BASE}/2009-04-04/meta-data/public-keys/0/openssh-key") == (200, KEY)
    assert curl(web1, f"{BASE}/2009-04-04/meta-data/placement/availability-zone") == (200, "lab1")
    assert curl(web1, f"{BASE}/2009-04-04/user-data") == (200, "#cloud-config\nhostname: web1\n")
    code, _ = curl(web2, f"{BASE}/2009-04-04/user-data")
    assert code == 404  # as EC2 answers when there is none
    assert curl(web2, f"{BASE}/latest/vendor-data") == (200, "")
    assert curl(web2, f"{BASE}/latest/")[1].splitlines() == ["meta-data/", "vendor-data"]
    code, token = curl(
        web1,
        f"{BASE}/latest/api/token",
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
    )
    assert code == 200 and len(token) > 20
    assert curl(
        web1, f"{BASE}/latest/meta-data/instance-id", "-H", f"X-aws-ec2-metadata-token: {token}"
    ) == (200, "id-web1")
    code, _ = curl(web1, f"{BASE}/latest/api/token", "-X", "PUT")
    assert code == 400


def test_cloud_init_reads_each_machine_from_its_own_address(
    served: tuple[Metalflow, Host, Host],
) -> None:
    """cloud-init's own EC2 crawler (Debian's cloud-init), run in each machine's namespace."""
    _, web1, web2 = served
    first = crawl(BASE, wrap=["ip", "netns", "exec", web1.namespace])
    assert first.returncode == 0, first.stderr
    assert first.metadata["instance-id"] == "id-web1"
    assert first.metadata["local-hostname"] == "web1.lab"
    assert first.metadata["local-ipv4"] == "192.0.2.11"
    assert first.metadata["public-keys"] == {"ops@example": KEY}
    assert first.metadata["placement"] == {"availability-zone": "lab1"}
    assert first.userdata == b"#cloud-config\nhostname: web1\n"
    second = crawl_imdsv2(BASE, wrap=["ip", "netns", "exec", web2.namespace])
    assert second.returncode == 0, second.stderr
    assert second.token is not None
    assert second.metadata["instance-id"] == "id-web2"
    assert second.userdata is None


def test_equinix_document_network_config_and_phone_home(
    served: tuple[Metalflow, Host, Host],
) -> None:
    metalflow, web1, _ = served
    code, body = curl(web1, f"{BASE}/metadata")
    assert code == 200
    document: dict[str, Any] = json.loads(body)
    assert document["id"] == "id-web1" and document["facility"] == "lab1"
    assert document["network"]["interfaces"] == [{"name": "eth0", "mac": "52:54:00:00:5d:01"}]
    assert document["network"]["addresses"][0]["cidr"] == 24
    assert document["phone_home_url"] == f"{BASE}/phone-home"
    assert document["api_url"] == "http://192.0.2.1:7080"  # the API port, not the metadata one
    code, config = curl(web1, f"{BASE}/nocloud/network-config")
    assert code == 200 and "macaddress: 52:54:00:00:5d:01" in config and "192.0.2.11/24" in config
    assert curl(web1, f"{BASE}/phone-home", "-X", "POST", "-d", "instance_id=id-web1")[0] == 204

    def phoned_home() -> bool:
        with metalflow.api() as api:
            items = api.get("/api/v1/events", params={"machine": "web1"}).json()["items"]
        return any(item["kind"] == "metadata.phone_home" for item in items)

    wait_for(phoned_home)
    with metalflow.api() as api:
        state = api.get("/api/v1/machines/web1").json()["state"]
    assert state == "ready", "only a provisioned machine becomes active when it phones home"


def test_unknown_callers_and_forwarded_addresses(
    lab: BootLab, served: tuple[Metalflow, Host, Host]
) -> None:
    metalflow, web1, _ = served
    stranger = lab.host("52:54:00:00:5d:09")
    stranger.set_address("192.0.2.99/24")
    code, body = curl(stranger, f"{BASE}/2009-04-04/meta-data/instance-id")
    assert code == 404 and "no machine in inventory has the address" in body
    # An untrusted caller cannot claim another machine's address.
    forged = curl(
        stranger, f"{BASE}/2009-04-04/meta-data/instance-id", "-H", "X-Forwarded-For: 192.0.2.11"
    )
    assert forged[0] == 404
    assert curl(
        web1, f"{BASE}/2009-04-04/meta-data/instance-id", "-H", "X-Forwarded-For: 192.0.2.12"
    ) == (200, "id-web1")
    proxy = lab.host("52:54:00:00:5d:0a")
    proxy.set_address("192.0.2.30/24")
    assert curl(
        proxy, f"{BASE}/2009-04-04/meta-data/instance-id", "-H", "X-Forwarded-For: 192.0.2.12"
    ) == (200, "id-web2")
    # The ports keep to their own paths.
    assert curl(web1, f"{BASE}/api/v1/machines")[0] == 404
    assert curl(web1, "http://192.0.2.1:7080/2009-04-04/meta-data/instance-id")[0] == 404

    def unknown_caller_recorded() -> bool:
        with metalflow.api() as api:
            found = api.get("/api/v1/events", params={"kind": "metadata.unknown_caller"})
        return any(item["data"]["address"] == "192.0.2.99" for item in found.json()["items"])

    wait_for(unknown_caller_recorded)


def test_metadata_port_in_use_is_a_clear_error(lab: BootLab) -> None:
    blocker = lab.server.popen(
        [
            "python3",
            "-c",
            "import socket,time; s=socket.create_server(('0.0.0.0', 50061)); time.sleep(60)",
        ]
    )
    try:
        wait_for(
            lambda: lab.server.run(["ss", "-ltn", "sport = :50061"]).stdout.count("LISTEN") > 0
        )
        with pytest.raises(AssertionError, match="--metadata-port 50061: cannot listen"):
            lab.metalflow()
    finally:
        blocker.kill()
        blocker.wait()


def test_the_secret_instance_url_works_from_any_address_until_rotated(
    lab: BootLab, served: tuple[Metalflow, Host, Host]
) -> None:
    metalflow, _, _ = served
    with metalflow.api() as api:
        found = api.get("/api/v1/machines/web1/metadata-url")
    assert found.status_code == 200, found.text
    url = found.json()["url"]
    assert url.startswith("http://") and ":50061/instances/mfm." in url
    path = url.split(":50061", 1)[1]
    behind_nat = lab.host("52:54:00:00:5d:0b")
    behind_nat.set_address("192.0.2.77/24")
    assert curl(behind_nat, f"{BASE}{path}latest/meta-data/instance-id") == (200, "id-web1")
    ttl = "X-aws-ec2-metadata-token-ttl-seconds: 60"
    assert curl(behind_nat, f"{BASE}{path}latest/api/token", "-X", "PUT", "-H", ttl)[0] == 200
    code, body = curl(behind_nat, f"{BASE}{path}metadata")
    assert code == 200 and json.loads(body)["phone_home_url"] == f"{BASE}{path}phone-home"
    assert curl(behind_nat, f"{BASE}{path.replace('mfm.', 'mfm.x')}metadata")[0] == 404
    with metalflow.api() as api:
        assert api.post("/api/v1/machines/web1/agent-token/rotate").status_code == 200

    def revoked() -> bool:
        return curl(behind_nat, f"{BASE}{path}metadata")[0] == 404

    wait_for(revoked)
    log = metalflow.log()
    assert path.split("/")[2] not in log, "the instance token must never be logged"
