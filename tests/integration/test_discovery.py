"""Discovery: an unknown machine's agent registers it and gets its token, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from metalflow.config import Settings
from tests.integration.conftest import AgentClient, LiveServer, apply, start_server
from tests.integration.manifests import machine_yaml, simple_template

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


def discover(url: str, mac: str = MAC) -> httpx.Response:
    body = {"mac": mac, "attributes": REPORT, "agent_version": "test"}
    return httpx.post(f"{url}/api/v1/agent/discover", json=body, timeout=30)


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
        assert [iface["mac"] for iface in machine["interfaces"]] == [MAC, "52:54:00:00:0d:02"]
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
        assert apply(api, machine_yaml("m1", "52:54:00:00:0d:02")).status_code == 200
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


def test_a_malformed_mac_is_a_422_naming_the_field(discovering: LiveServer) -> None:
    response = discover(discovering.url, mac="not-a-mac")
    assert response.status_code == 422
    assert "mac" in response.text
