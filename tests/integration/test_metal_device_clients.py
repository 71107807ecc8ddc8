"""A tenant's device, driven over HTTPS by the official clients unmodified: packet-python creates
it, polls it to `active`, lists its addresses, powers it, reinstalls and deletes it; equinix-metal
parses every answer into its strict models; another tenant sees none of it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import packet
import pytest
from equinix_metal.api.devices_api import DevicesApi
from equinix_metal.exceptions import NotFoundException
from equinix_metal.models.create_device_request import CreateDeviceRequest
from equinix_metal.models.device_action_input import DeviceActionInput
from equinix_metal.models.device_create_in_metro_input import DeviceCreateInMetroInput
from equinix_metal.models.device_update_input import DeviceUpdateInput
from sqlalchemy import select, update

from metalflow.cloud.tables import OperatingSystem
from metalflow.inventory.tables import Machine
from tests.integration.conftest import AgentClient
from tests.integration.metal_clients import MetalCloud, cloud  # noqa: F401
from tests.integration.test_metal_devices import METRO, OS, PLAN, agent_for, cloud_lab
from tests.integration.test_workflows import run_to_end


@pytest.fixture(autouse=True)
def ca_bundle(cloud: MetalCloud, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.ca))


@pytest.fixture
def provider(cloud: MetalCloud) -> Iterator[httpx.Client]:  # noqa: F811
    with cloud.live.client() as client:
        yield client


@pytest.fixture
def lab(cloud: MetalCloud, provider: httpx.Client) -> None:  # noqa: F811
    """Two ready machines of the plan; the OS has no cloud-init, so a device is `active` when
    its install workflow ends (no OS here phones home)."""
    cloud_lab(cloud.live, provider, machines=2)
    with cloud.live.services.db.write() as session:
        session.execute(update(OperatingSystem).values(cloud_init=False))


def agent_of_project(
    cloud: MetalCloud,  # noqa: F811
    provider: httpx.Client,
    project_id: str,
) -> AgentClient:
    """The agent of the one machine the project's device took."""
    with cloud.live.services.db.read() as session:
        name = session.scalars(select(Machine.name).where(Machine.project_id == project_id)).one()
    return agent_for(cloud.live, provider, name, int(name[1:]))


def installed(agent: AgentClient) -> list[str]:
    return [action["name"] for action in run_to_end(agent)]


@pytest.mark.usefixtures("lab")
def test_packet_python_runs_a_device_from_create_to_delete(
    cloud: MetalCloud,  # noqa: F811
    provider: httpx.Client,
) -> None:
    manager = cloud.packet(cloud.a)
    device = manager.create_device(
        cloud.a.project_id,
        "web-1",
        PLAN,
        metro=METRO,
        operating_system=OS,
        userdata="#cloud-config\n",
        tags=["web"],
    )
    assert device.state == "provisioning" and device.hostname == "web-1"
    agent = agent_of_project(cloud, provider, cloud.a.project_id)
    try:
        assert installed(agent)
        polled = manager.get_device(device.id)
        assert polled.state == "active"
        families = sorted(
            (ip.address_family, ip.public) for ip in manager.list_device_ips(device.id)
        )
        assert families == [(4, False), (4, True), (6, True)]
        polled.power_off()
        polled.power_on()
        polled.reboot()
        polled.hostname = "web-one"
        polled.update()
        assert manager.get_device(device.id).hostname == "web-one"
        polled.reinstall()
        assert manager.get_device(device.id).state == "reinstalling"
        assert installed(agent)
        assert manager.get_device(device.id).state == "active"
        polled.delete()
        assert manager.get_device(device.id).state == "deprovisioning"
        assert installed(agent) == ["wipe-disks"]
    finally:
        agent.close()
    with pytest.raises(packet.baseapi.Error, match="404"):
        manager.get_device(device.id)
    assert manager.list_devices(cloud.a.project_id) == []


@pytest.mark.usefixtures("lab")
def test_equinix_metal_parses_every_answer_and_the_other_tenant_sees_nothing(
    cloud: MetalCloud,  # noqa: F811
    provider: httpx.Client,
) -> None:
    with cloud.equinix(cloud.a) as client:
        devices = DevicesApi(client)
        body = DeviceCreateInMetroInput(
            metro=METRO, plan=PLAN, operating_system=OS, hostname="db-1", tags=["db"]
        )
        created = devices.create_device(cloud.a.project_id, CreateDeviceRequest(body))
        assert created.hostname == "db-1" and created.state == "provisioning"
        assert created.id is not None
        found = devices.find_device_by_id(created.id)
        assert found.plan is not None and found.plan.slug == PLAN
        listed = devices.find_project_devices(cloud.a.project_id)
        assert [one.id for one in listed.devices or []] == [created.id]
        assert len(devices.find_ip_assignments(created.id).ip_addresses or []) == 3
        changed = devices.update_device(created.id, DeviceUpdateInput(description="primary"))
        assert changed.description == "primary"
        with cloud.equinix(cloud.b) as other:
            with pytest.raises(NotFoundException):
                DevicesApi(other).find_device_by_id(created.id)
            assert DevicesApi(other).find_project_devices(cloud.b.project_id).devices == []
        agent = agent_of_project(cloud, provider, cloud.a.project_id)
        try:
            assert installed(agent)
            devices.perform_action(created.id, DeviceActionInput(type="power_off"))
            devices.delete_device(created.id)
            assert installed(agent) == ["wipe-disks"]
        finally:
            agent.close()
        with pytest.raises(NotFoundException):
            devices.find_device_by_id(created.id)
