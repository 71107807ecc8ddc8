"""Discovery: an unknown machine's agent registers it and gets its token, on both databases;
what needs no token is bounded (networks, rates, the booting MAC) and yields to the operator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.config import Settings
from tests.integration.conftest import AgentClient, LiveServer, apply, start_server
from tests.manifests import machine_yaml, simple_template

MAC = "52:54:00:00:0d:01"
REPORT = {
    "arch": "x86_64",
    "uefi": False,
    "nics": [{"name": "eth0", "mac": MAC}, {"name": "eth1", "mac": "52:54:00:00:0d:02"}],
    "disks": [{"name": "vda", "size_bytes": 8 * 2**30, "model": "QEMU HARDDISK"}],
}


@pytest.fixture
def discovering(settings: Settings) -> Iterator[LiveServer]:
    server = start_server(settings.model_copy(update={"discovery": True}))
    try:
        yield server
    finally:
        server.stop()


def discover(
    url: str, mac: str = MAC, *, attributes: dict[str, Any] = REPORT, source: str = "127.0.0.1"
) -> httpx.Response:
    """From `source`: any 127/8 address is this host's, so one test can be several callers."""
    body = {"mac": mac, "attributes": attributes, "agent_version": "test"}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(f"{url}/api/v1/agent/discover", json=body)


def refused(server: LiveServer) -> dict[str, float]:
    """metalflow_discovery_refused_total by reason, as /metrics shows it."""
    with server.client() as api:
        text_ = api.get("/metrics").text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text_)
        if family.name == "metalflow_discovery_refused"
        for sample in family.samples
        if sample.name == "metalflow_discovery_refused_total"
    }


def machine_names(api: httpx.Client) -> list[str]:
    return [machine["name"] for machine in api.get("/api/v1/machines").json()["items"]]


def server_with(settings: Settings, **changes: Any) -> LiveServer:
    return start_server(settings.model_copy(update={"discovery": True, **changes}))


def test_an_unknown_machine_registers_as_new_and_can_be_provisioned(
    discovering: LiveServer,
) -> None:
    response = discover(discovering.url)
    assert response.status_code == 201, response.text
    registered = response.json()
    assert (registered["machine"], registered["state"]) == ("discovered-525400000d01", "new")

    with discovering.client() as api:
        machine = api.get("/api/v1/machines/discovered-525400000d01").json()
        assert machine["state"] == "new"
        assert [iface["mac"] for iface in machine["interfaces"]] == [MAC]
        assert machine["attributes"]["nics"] == REPORT["nics"]
        assert machine["disks"] == [{"device": "/dev/vda", "size_bytes": 8 * 2**30}]
        assert machine["uefi"] is False
        events = api.get("/api/v1/events", params={"machine": machine["name"]}).json()["items"]
        assert "machine.discovered" in [event["kind"] for event in events]

        agent = AgentClient(discovering.url, registered["token"], MAC)
        try:
            assert agent.hello(**REPORT).status_code == 200
            assert agent.next() is None
            assert apply(api, simple_template(count=1)).status_code == 200
            provisioned = api.post(
                "/api/v1/machines/discovered-525400000d01/provision", json={"template": "ubuntu"}
            )
            assert provisioned.status_code == 201, provisioned.text
            action = agent.next()
            assert action is not None and action["name"] == "step-0"
        finally:
            agent.close()


def test_a_known_mac_is_refused_and_nothing_is_written(discovering: LiveServer) -> None:
    with discovering.client() as api:
        assert apply(api, machine_yaml("m1", MAC)).status_code == 200
        before = api.get("/api/v1/machines").json()
        response = discover(discovering.url)
        assert response.status_code == 409, response.text
        assert response.json()["detail"]["field"] == "mac"
        assert "machine m1" in response.json()["detail"]["message"]
        assert api.get("/api/v1/machines").json() == before


def test_discovering_twice_is_refused(discovering: LiveServer) -> None:
    assert discover(discovering.url).status_code == 201
    again = discover(discovering.url)
    assert again.status_code == 409
    assert "discovered-525400000d01" in again.json()["detail"]["message"]


def test_discovery_off_refuses_with_how_to_turn_it_on(live: LiveServer) -> None:
    response = discover(live.url)
    assert response.status_code == 403
    assert "--discovery" in response.json()["detail"]["message"]
    unread = discover(live.url, mac="not-a-mac")
    assert unread.status_code == 403, "a refused caller's body is not even validated"
    assert refused(live) == {"off": 2.0}


def test_a_malformed_mac_is_a_422_naming_the_field(discovering: LiveServer) -> None:
    response = discover(discovering.url, mac="not-a-mac")
    assert response.status_code == 422
    assert "mac" in response.text


SQUAT = {"nics": [{"mac": f"52:54:00:00:0e:{n:02x}"} for n in range(64)]}
SQUATTER = "52:54:00:00:0e:00"


def test_one_call_listing_64_macs_claims_only_its_own_and_apply_takes_that_over(
    discovering: LiveServer,
) -> None:
    assert discover(discovering.url, SQUATTER, attributes=SQUAT).status_code == 201
    with discovering.client() as api:
        real = apply(api, machine_yaml("web1", "52:54:00:00:0e:2a"))
        assert real.status_code == 200, real.text
        web1 = api.get("/api/v1/machines/web1").json()
        assert [iface["mac"] for iface in web1["interfaces"]] == ["52:54:00:00:0e:2a"]
        assert "discovered-525400000e00" in machine_names(api)

        taken = apply(api, machine_yaml("web2", SQUATTER))
        assert taken.status_code == 200, taken.text
        web2 = api.get("/api/v1/machines/web2").json()
        assert [iface["mac"] for iface in web2["interfaces"]] == [SQUATTER]
        assert "discovered-525400000e00" not in machine_names(api)
        events = api.get("/api/v1/events", params={"machine": "web2"}).json()["items"]
        takeover = [event for event in events if event["kind"] == "machine.mac_taken_over"]
        assert [(e["data"]["mac"], e["data"]["discovered"]) for e in takeover] == [
            (SQUATTER, "discovered-525400000e00")
        ]


def test_a_discovered_machine_the_operator_declared_keeps_its_mac(
    discovering: LiveServer,
) -> None:
    assert discover(discovering.url).status_code == 201
    with discovering.client() as api:
        declared = apply(api, machine_yaml("discovered-525400000d01", MAC))
        assert declared.status_code == 200, declared.text
        refused_apply = apply(api, machine_yaml("web1", MAC))
        assert refused_apply.status_code == 409
        assert "discovered-525400000d01" in refused_apply.json()["detail"]["message"]
        assert "web1" not in machine_names(api)


def test_a_caller_outside_the_discovery_networks_is_refused_and_counted(
    settings: Settings,
) -> None:
    server = server_with(settings, discovery_networks=["127.0.0.2/32"])
    try:
        outside = discover(server.url, source="127.0.0.1")
        assert outside.status_code == 403, outside.text
        assert "127.0.0.1" in outside.json()["detail"]["message"]
        assert "--discovery-networks" in outside.json()["detail"]["message"]
        assert refused(server) == {"network": 1.0}
        with server.client() as api:
            assert machine_names(api) == []
        assert discover(server.url, source="127.0.0.2").status_code == 201
    finally:
        server.stop()


def test_the_rate_limits_refuse_with_retry_after_and_are_counted(settings: Settings) -> None:
    server = server_with(settings, discovery_rate_per_address=2, discovery_rate=4)
    try:
        from_one = [
            discover(server.url, f"52:54:00:00:0f:{n:02x}", source="127.0.0.1") for n in range(12)
        ]
        assert [answer.status_code for answer in from_one] == [201] * 2 + [429] * 10
        assert int(from_one[-1].headers["retry-after"]) >= 1
        assert "this address" in from_one[-1].json()["detail"]["message"]
        assert refused(server) == {"rate_address": 10.0}

        others = [
            discover(server.url, f"52:54:00:00:10:{n:02x}", source=f"127.0.0.{n + 2}")
            for n in range(5)
        ]
        assert [answer.status_code for answer in others] == [201] * 2 + [429] * 3
        assert "all addresses" in others[-1].json()["detail"]["message"]
        assert refused(server) == {"rate_address": 10.0, "rate_overall": 3.0}
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    finally:
        server.stop()


def test_a_mac_that_is_not_the_one_the_caller_booted_with_is_refused(
    discovering: LiveServer,
) -> None:
    until = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with discovering.services.db.write() as session:
        session.add(DhcpLease(mac=MAC, address="127.0.0.1", subnet="127.0.0.0/8", expires_at=until))
        session.add(
            DhcpLease(
                mac="52:54:00:00:0d:09",
                address="192.0.2.9",
                subnet="192.0.2.0/24",
                expires_at=until,
            )
        )

    other = discover(discovering.url, "52:54:00:00:0d:03")
    assert other.status_code == 403, other.text
    assert other.json()["detail"]["field"] == "mac"
    assert MAC in other.json()["detail"]["message"]
    elsewhere = discover(discovering.url, "52:54:00:00:0d:09", source="127.0.0.3")
    assert elsewhere.status_code == 403, elsewhere.text
    assert "192.0.2.9" in elsewhere.json()["detail"]["message"]
    assert refused(discovering) == {"mac": 2.0}
    with discovering.client() as api:
        assert machine_names(api) == []

    assert discover(discovering.url, MAC).status_code == 201
