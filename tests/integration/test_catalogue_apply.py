"""The catalogue as an operator writes it and reads it: kinds Metro, Plan and OperatingSystem
through `metalflow apply -f` (created, unchanged, updated; bad documents refused naming the
document and field, nothing applied), and `metalflow metro|plan|os|capacity` against a live
server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner, Result

from metalflow.cli import app
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.manifests import interface, machine, stream

GIB = 1 << 30
CATALOGUE = """\
apiVersion: metalflow/v1
kind: OperatingSystem
metadata: {name: ubuntu_24_04}
spec:
  name: Ubuntu 24.04 LTS
  distro: ubuntu
  version: "24.04"
  provisionable_on: [c3.small.x86]
  image_url: http://192.0.2.1:8080/noble.raw.gz
---
apiVersion: metalflow/v1
kind: Plan
metadata: {name: c3.small.x86}
spec:
  name: c3.small.x86
  class: c3.small.x86
  specs:
    cpus: [{count: 1, type: Intel Xeon E-2278G}]
    memory: {total: 32GB}
  rule: {arch: x86_64, cpu_cores_min: 8, memory_min_gib: 30}
  wipe: zero
---
apiVersion: metalflow/v1
kind: Metro
metadata: {name: am}
spec:
  name: Amsterdam
  country: NL
  bgp_peers: [{address_family: 4, peer_as: 65530, peer_ips: [169.254.255.1, 169.254.255.2]}]
"""
SMALL = {
    "arch": "x86_64",
    "cpu": {"model": "Intel Xeon E-2278G", "cores": 8},
    "memory_bytes": 32 * GIB,
    "disks": [{"name": "sda", "size_bytes": 480 * 10**9, "rotational": False}],
    "nics": [{"mac": "52:54:00:00:c3:01", "speed_mbps": 10000}],
}


def results(response: httpx.Response) -> list[tuple[str, str, str]]:
    assert response.status_code == 200, response.text
    return [(item["kind"], item["name"], item["action"]) for item in response.json()["results"]]


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args))


def test_applied_in_order_then_unchanged_then_updated(api: httpx.Client) -> None:
    """The OS comes first in the file but after the plan it names."""
    assert results(apply(api, CATALOGUE)) == [
        ("Metro", "am", "created"),
        ("Plan", "c3.small.x86", "created"),
        ("OperatingSystem", "ubuntu_24_04", "created"),
    ]
    assert all(action == "unchanged" for *_, action in results(apply(api, CATALOGUE)))
    changed = CATALOGUE.replace("noble.raw.gz", "noble2.raw.gz").replace(
        "wipe: zero", "wipe: discard"
    )
    assert results(apply(api, changed)) == [
        ("Metro", "am", "unchanged"),
        ("Plan", "c3.small.x86", "updated"),
        ("OperatingSystem", "ubuntu_24_04", "updated"),
    ]
    assert api.get("/api/v1/plans/c3.small.x86").json()["wipe"] == "discard"
    template = api.get("/api/v1/templates/os-ubuntu_24_04").json()["data"]
    assert "noble2.raw.gz" in template
    peers = api.get("/api/v1/metros/am").json()["bgp_peers"]
    assert peers[0]["peer_ips"] == ["169.254.255.1", "169.254.255.2"]


def refused(response: httpx.Response, field: str, *words: str) -> None:
    assert response.status_code in (404, 409, 422), response.text
    detail = response.json()["detail"]
    assert detail["field"] == field, detail
    for word in words:
        assert word in detail["message"], detail["message"]


def test_bad_documents_name_the_document_and_field(api: httpx.Client) -> None:
    os_only = CATALOGUE.split("---\n")[0]
    refused(
        apply(api, os_only),
        "documents[0].spec.provisionable_on",
        "documents[0] (OperatingSystem ubuntu_24_04)",
        "c3.small.x86",
    )
    plan, metro = CATALOGUE.split("---\n")[1:]
    refused(apply(api, plan.replace("wipe: zero", "wipe: shred")), "documents[0].spec.wipe")
    refused(
        apply(api, plan.replace("cpu_cores_min", "cores")),
        "documents[0].spec.rule.cores",
        "unknown",
    )
    refused(apply(api, metro.replace("{name: am}", "{name: AM}")), "documents[0].metadata.name")
    refused(
        apply(api, metro.replace("country: NL", "code: am")),
        "documents[0].spec.code",
        "named by metadata.name",
    )
    # One bad document: nothing of the stream is applied.
    refused(apply(api, metro + "---\n" + os_only), "documents[1].spec.provisionable_on")
    assert api.get("/api/v1/metros").json()["count"] == 0


def test_the_operator_reads_the_catalogue(cli: CliRunner, live: LiveServer, tmp_path: Path) -> None:
    manifest = tmp_path / "catalogue.yaml"
    documents = [
        machine(name, interface(f"52:54:00:00:c3:{index:02x}", f"192.0.2.{80 + index}"), metro="am")
        for index, name in enumerate(["web1", "web2"], start=1)
    ]
    manifest.write_text(CATALOGUE + "---\n" + stream(*documents))
    applied = run(cli, "apply", "-f", str(manifest))
    assert applied.exit_code == 0, applied.output
    assert "plan/c3.small.x86 created" in applied.output.lower()
    with live.client() as api:
        report(live, api, "web1", SMALL)
        report(live, api, "web2", {**SMALL, "memory_bytes": 16 * GIB})

    listed = run(cli, "plan", "list")
    assert listed.exit_code == 0, listed.output
    assert "c3.small.x86" in listed.output and "zero" in listed.output
    check = run(cli, "plan", "check", "c3.small.x86")
    assert check.exit_code == 0, check.output
    assert "1 machine(s) match plan c3.small.x86" in check.output
    assert "web2" in check.output and "memory 16.0 GiB is below the minimum 30" in check.output
    as_json: dict[str, Any] = json.loads(
        run(cli, "-o", "json", "plan", "check", "c3.small.x86").output
    )
    assert [m["name"] for m in as_json["matching"]] == ["web1"]

    capacity = run(cli, "capacity")
    assert capacity.exit_code == 0, capacity.output
    row = next(line for line in capacity.output.splitlines() if line.startswith("am"))
    assert row.split() == ["am", "c3.small.x86", "1"]

    metro = run(cli, "metro", "show", "am")
    assert "AS65530 169.254.255.1, 169.254.255.2" in metro.output and "Machines:" in metro.output
    shown = run(cli, "os", "show", "ubuntu_24_04")
    assert "os-ubuntu_24_04 (generated)" in shown.output
    assert "ubuntu_24_04" in run(cli, "os", "list").output

    in_use = run(cli, "metro", "delete", "am")
    assert in_use.exit_code != 0 and "machines web1, web2" in in_use.output
    assert "Traceback" not in in_use.output
    missing = run(cli, "plan", "show", "nope")
    assert missing.exit_code != 0 and "plan 'nope' not found" in missing.output
    assert run(cli, "os", "delete", "ubuntu_24_04").output == "os/ubuntu_24_04 deleted\n"
    assert run(cli, "plan", "delete", "c3.small.x86").exit_code == 0
    assert "c3.small.x86" not in run(cli, "plan", "list").output


def report(live: LiveServer, api: httpx.Client, name: str, attributes: dict[str, Any]) -> None:
    token = api.post(f"/api/v1/machines/{name}/agent-token").json()["token"]
    mac = api.get(f"/api/v1/machines/{name}").json()["interfaces"][0]["mac"]
    agent = AgentClient(live.url, token, mac)
    try:
        assert agent.hello(**attributes).status_code == 200
    finally:
        agent.close()
