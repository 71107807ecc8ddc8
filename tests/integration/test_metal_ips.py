"""IP reservations and assignments on `/metal/v1`, driven by equinix-metal 0.11.0 unmodified and
by plain httpx, on SQLite and PostgreSQL: a tenant's day, isolation between tenants, roles,
and bad input refused with the field named and nothing allocated."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from equinix_metal.api.devices_api import DevicesApi
from equinix_metal.api.ip_addresses_api import IPAddressesApi
from equinix_metal.api_client import ApiClient
from equinix_metal.configuration import Configuration
from equinix_metal.exceptions import ApiException
from equinix_metal.models.ip_assignment import IPAssignment
from equinix_metal.models.ip_assignment_input import IPAssignmentInput
from equinix_metal.models.ip_assignment_update_input import IPAssignmentUpdateInput
from equinix_metal.models.ip_reservation import IPReservation
from equinix_metal.models.ip_reservation_request_input import IPReservationRequestInput
from equinix_metal.models.request_ip_reservation_request import RequestIPReservationRequest
from sqlalchemy import func, select

from metalflow.cloud.tables import Device, Metro, OperatingSystem, Plan
from metalflow.db.base import utcnow
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import FreeBlock, IpBlock, Kind
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.policy import ProjectRole
from tests.integration.conftest import LiveServer, apply
from tests.manifests import machine_yaml

METAL = "/metal/v1"
POOL_V4 = "198.51.100.0/24"
POOL_V6 = "2001:db8::/48"


@dataclass(frozen=True)
class Cloud:
    """Two tenants, each with a project, a device in metro am, and a key; a viewer of A's."""

    project_a: str
    project_b: str
    device_a: str
    device_b: str
    key_a: str
    key_b: str
    key_viewer: str


def add_device(live: LiveServer, machine: str, project_id: str, metro: str = "am") -> str:
    """A device row on `machine`, given to the project in `metro` (devices are created by the
    device routes elsewhere; here only what the IP routes read)."""
    with live.services.db.write() as session:
        plan = session.scalar(select(Plan).where(Plan.slug == "c3.small.x86"))
        if plan is None:
            plan = Plan(id=str(uuid.uuid4()), slug="c3.small.x86", name="c3", plan_class="c3")
            session.add(plan)
        system = session.scalar(select(OperatingSystem).where(OperatingSystem.slug == "ubuntu"))
        if system is None:
            system = OperatingSystem(
                id=str(uuid.uuid4()), slug="ubuntu", name="Ubuntu", distro="ubuntu", version="24"
            )
            session.add(system)
        found = session.scalar(select(Machine).where(Machine.name == machine))
        assert found is not None
        found.project_id = project_id
        found.metro = metro
        session.flush()
        device = Device(
            id=str(uuid.uuid4()),
            short_id=uuid.uuid4().hex[:8],
            project_id=project_id,
            machine_id=found.id,
            hostname=machine,
            plan_id=plan.id,
            metro=metro,
            operating_system_id=system.id,
            state="active",
        )
        session.add(device)
        return device.id


def tenant(live: LiveServer, email: str, org: str) -> tuple[str, str]:
    """A user owning a project of their own organization, and the user's API key."""
    with live.services.db.write() as session:
        user = tenancy.create_user(session, email, email.split("@")[0])
        organization = tenancy.create_organization(session, org, user.id)
        project = tenancy.create_project(session, organization.id, "web")
        tenancy.add_project_member(session, project.id, user.id, ProjectRole.OWNER)
        key = tenancy.create_key(session, "dev", now=utcnow(), user_id=user.id)
        return project.id, key.secret


@pytest.fixture
def cloud(live: LiveServer, api: httpx.Client) -> Cloud:
    machines = [machine_yaml("m1", "52:54:00:00:1a:01"), machine_yaml("m2", "52:54:00:00:1a:02")]
    assert apply(api, "---\n".join(machines)).status_code == 200
    for cidr in (POOL_V4, POOL_V6):
        pool = {"cidr": cidr, "kind": "public", "metro": "am"}
        assert api.post("/api/v1/ipam/prefixes", json=pool).status_code == 201
    with live.services.db.write() as session:
        session.add(Metro(id=str(uuid.uuid4()), code="am", name="Amsterdam", country="NL"))
    project_a, key_a = tenant(live, "ada@example.test", "ada")
    project_b, key_b = tenant(live, "bob@example.test", "bob")
    with live.services.db.write() as session:
        viewer = tenancy.create_user(session, "vic@example.test", "Vic")
        tenancy.add_project_member(session, project_a, viewer.id, ProjectRole.VIEWER)
        key_viewer = tenancy.create_key(session, "view", now=utcnow(), user_id=viewer.id).secret
    return Cloud(
        project_a=project_a,
        project_b=project_b,
        device_a=add_device(live, "m1", project_a),
        device_b=add_device(live, "m2", project_b),
        key_a=key_a,
        key_b=key_b,
        key_viewer=key_viewer,
    )


@pytest.fixture
def metal(live: LiveServer, cloud: Cloud) -> Iterator[ApiClient]:
    config = Configuration(host=f"{live.url}{METAL}", api_key={"x_auth_token": cloud.key_a})
    with ApiClient(config) as client:
        yield client


def metal_http(live: LiveServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=f"{live.url}{METAL}", headers={"X-Auth-Token": key}, timeout=30)


def reserve(http: httpx.Client, project: str, **body: Any) -> httpx.Response:
    return http.post(f"/projects/{project}/ips", json={"metro": "am", **body})


def test_a_tenants_day_with_equinix_metal(
    metal: ApiClient, cloud: Cloud, api: httpx.Client
) -> None:
    addresses = IPAddressesApi(metal)
    devices = DevicesApi(metal)
    wanted = IPReservationRequestInput(
        type="public_ipv4", quantity=8, metro="am", tags=["web"], details="front door"
    )
    created = addresses.request_ip_reservation(
        cloud.project_a, RequestIPReservationRequest(wanted)
    ).actual_instance
    assert isinstance(created, IPReservation)
    assert (created.type, created.cidr, created.address_family) == ("public_ipv4", 29, 4)
    assert created.network is not None and created.network.startswith("198.51.100.")
    assert (created.tags, created.details, created.state) == (["web"], "front door", "created")
    assert created.metro is not None and (created.metro.code, created.metro.country) == ("am", "NL")
    assert created.public is True and created.management is False
    assert created.project is not None
    assert created.project.href == f"{METAL}/projects/{cloud.project_a}"
    assert created.id is not None

    listed = addresses.find_ip_reservations(cloud.project_a, types=["public_ipv4"])
    reservations = [each.actual_instance for each in listed.ip_addresses or []]
    assert [type(each) for each in reservations] == [IPReservation]
    assert [getattr(each, "id", None) for each in reservations] == [created.id]
    assert listed.meta is not None and listed.meta.total == 1
    assert addresses.find_ip_reservations(cloud.project_a, types=["public_ipv6"]).ip_addresses == []

    found = addresses.find_ip_address_by_id(created.id).actual_instance
    assert isinstance(found, IPReservation) and found.assignments == []

    available = addresses.find_ip_availabilities(created.id, "32").available
    assert available is not None and len(available) == 8
    assert available[0] == f"{created.network}/32"

    given = devices.create_ip_assignment(cloud.device_a, IPAssignmentInput(address=available[3]))
    assert given.address == available[3].removesuffix("/32") and given.cidr == 32
    assert given.assigned_to.href == f"{METAL}/devices/{cloud.device_a}"
    assert given.parent_block is not None
    assert (given.parent_block.network, given.parent_block.cidr) == (created.network, 29)
    assert given.parent_block.href == f"{METAL}/ips/{created.id}"
    assert given.id is not None

    shown = addresses.find_ip_address_by_id(given.id).actual_instance
    assert isinstance(shown, IPAssignment)
    assert (shown.address, shown.management, shown.public) == (given.address, False, True)
    on_device = devices.find_ip_assignments(cloud.device_a).ip_addresses or []
    assert given.id in [each.id for each in on_device]
    included = addresses.find_ip_address_by_id(created.id, include=["assignments"])
    reservation = included.actual_instance
    assert isinstance(reservation, IPReservation)
    assert [each.href for each in reservation.assignments or []] == [f"{METAL}/ips/{given.id}"]
    after = addresses.find_ip_availabilities(created.id, "32").available
    assert after is not None and available[3] not in after and len(after) == 7

    update = IPAssignmentUpdateInput(tags=["web", "edge"], details="renamed")
    updated = addresses.update_ip_address(created.id, ip_assignment_update_input=update)
    assert isinstance(updated.actual_instance, IPReservation)
    assert updated.actual_instance.tags == ["web", "edge"]
    assert updated.actual_instance.details == "renamed"

    addresses.delete_ip_address(given.id)
    with pytest.raises(ApiException) as unassigned:
        addresses.find_ip_address_by_id(given.id)
    assert unassigned.value.status == 404
    assert devices.find_ip_assignments(cloud.device_a).ip_addresses == []

    addresses.delete_ip_address(created.id)
    with pytest.raises(ApiException) as released:
        addresses.find_ip_address_by_id(created.id)
    assert released.value.status == 404
    assert addresses.find_ip_reservations(cloud.project_a).ip_addresses == []
    quarantined = api.get("/api/v1/ipam/prefixes", params={"status": "quarantine"}).json()
    assert created.network in [item["cidr"].split("/")[0] for item in quarantined["items"]]

    audit = api.get("/api/v1/audit", params={"limit": 100}).json()["items"]
    written = {(entry["resource_type"], entry["resource_id"]) for entry in audit}
    assert {("ip_reservation", created.id), ("ip_assignment", given.id)} <= written


def test_ipv6_is_reserved_as_a_64_or_a_56_and_paged(live: LiveServer, cloud: Cloud) -> None:
    with metal_http(live, cloud.key_a) as http:
        for quantity in (1 << 64, 1 << 72):
            response = reserve(http, cloud.project_a, type="public_ipv6", quantity=quantity)
            assert response.status_code == 201, response.text
        assert reserve(http, cloud.project_a, type="public_ipv4", quantity=1).status_code == 201
        first = http.get(f"/projects/{cloud.project_a}/ips", params={"per_page": 2}).json()
        assert [item["cidr"] for item in first["ip_addresses"]] == [32, 64]
        assert first["meta"]["total"] == 3 and first["meta"]["next"] is not None
        second = http.get(first["meta"]["next"]["href"].removeprefix(METAL)).json()
        assert [item["type"] for item in second["ip_addresses"]] == ["public_ipv6"]
        assert second["meta"]["next"] is None
        both = http.get(
            f"/projects/{cloud.project_a}/ips", params={"types": "public_ipv6,private_ipv4"}
        ).json()
        assert [item["cidr"] for item in both["ip_addresses"]] == [64, 56]
        excluded = http.get(f"/projects/{cloud.project_a}/ips", params={"exclude": "metro"})
        assert all("metro" not in item for item in excluded.json()["ip_addresses"])


def test_a_tenant_sees_and_changes_only_its_own_ips(
    live: LiveServer, cloud: Cloud, api: httpx.Client
) -> None:
    with metal_http(live, cloud.key_a) as ada:
        reservation = reserve(ada, cloud.project_a, type="public_ipv4", quantity=4).json()
        address = reservation["network"]
        given = ada.post(f"/devices/{cloud.device_a}/ips", json={"address": address}).json()
        path = f"/ips/{reservation['id']}"
        assert ada.get(path).json()["assignments"] == [{"href": given["href"]}]
        included = ada.get(path, params={"include": "assignments"}).json()["assignments"]
        assert [(each["id"], each["address"]) for each in included] == [(given["id"], address)]
    with metal_http(live, cloud.key_b) as bob:
        for ref in (reservation["id"], given["id"]):
            for method in ("GET", "PATCH", "PUT", "DELETE"):
                body = {"tags": ["mine"]} if method in ("PATCH", "PUT") else None
                refused = bob.request(method, f"/ips/{ref}", json=body)
                assert refused.status_code == 404, (method, refused.text)
                assert refused.json()["errors"][0].startswith("id: no IP reservation")
        free = bob.get(f"/ips/{reservation['id']}/available", params={"cidr": 32})
        assert free.status_code == 404
        assert bob.get(f"/projects/{cloud.project_a}/ips").status_code == 404
        assert reserve(bob, cloud.project_a, type="public_ipv4", quantity=1).status_code == 404
        assert bob.get(f"/devices/{cloud.device_a}/ips").status_code == 404
        taken = bob.post(f"/devices/{cloud.device_a}/ips", json={"address": address})
        assert taken.status_code == 404
        foreign = bob.post(f"/devices/{cloud.device_b}/ips", json={"address": address})
        assert foreign.status_code == 422
        assert foreign.json()["errors"][0].startswith("body.address: ")
        assert bob.get(f"/projects/{cloud.project_b}/ips").json()["ip_addresses"] == []
    with metal_http(live, cloud.key_viewer) as viewer:
        assert viewer.get(f"/ips/{reservation['id']}").json()["type"] == "public_ipv4"
        assert viewer.get(f"/ips/{given['id']}").json()["assigned_to"] is not None
        assert viewer.patch(f"/ips/{reservation['id']}", json={"tags": []}).status_code == 403
        assert viewer.delete(f"/ips/{given['id']}").status_code == 403
        assert viewer.delete(f"/ips/{reservation['id']}").status_code == 403
        assert reserve(viewer, cloud.project_a, type="public_ipv4", quantity=1).status_code == 403
        refused = viewer.post(f"/devices/{cloud.device_a}/ips", json={"address": address})
        assert refused.status_code == 403
    provider = api.get(f"{METAL}/ips/{given['id']}")
    assert provider.status_code == 200 and provider.json()["address"] == address
    listed = api.get(f"{METAL}/projects/{cloud.project_a}/ips").json()["ip_addresses"]
    assert [item["id"] for item in listed] == [reservation["id"]]
    with metal_http(live, cloud.key_a) as ada:
        still = ada.delete(f"/ips/{reservation['id']}")
        assert still.status_code == 409 and "unassign them first" in still.text
        assert ada.get(f"/ips/{reservation['id']}").status_code == 200


def allocated(live: LiveServer) -> tuple[int, int]:
    with live.services.db.read() as session:
        blocks = session.scalar(select(func.count()).select_from(IpBlock)) or 0
        free = session.scalar(select(func.count()).select_from(FreeBlock)) or 0
        return blocks, free


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "public_ipv4", "quantity": 8, "metro": "zz"}, "body.metro"),
        ({"type": "public_ipv4", "quantity": 8, "metro": None}, "body.metro"),
        ({"type": "public_ipv4", "quantity": 6}, "body.quantity"),
        ({"type": "public_ipv4", "quantity": 256}, "body.quantity"),
        ({"type": "public_ipv6", "quantity": 1 << 60}, "body.quantity"),
        ({"type": "public_ipv5", "quantity": 8}, "body.type"),
        ({"type": "global_ipv4", "quantity": 1}, "body.type"),
        ({"type": "private_ipv4", "quantity": 8}, "body.metro"),
        ({"type": "public_ipv4", "quantity": 8, "customdata": {"a": 1}}, "body.customdata"),
        ({"type": "public_ipv4", "quantity": 8, "facility": "am6"}, "body.facility"),
        ({"type": "public_ipv4", "quantity": 8, "colour": "red"}, "body.colour"),
    ],
)
def test_a_bad_reservation_names_the_field_and_allocates_nothing(
    live: LiveServer, cloud: Cloud, body: dict[str, Any], field: str
) -> None:
    before = allocated(live)
    with metal_http(live, cloud.key_a) as http:
        response = reserve(http, cloud.project_a, **body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0].startswith(f"{field}: "), response.text
    assert allocated(live) == before


def test_a_bad_assignment_names_the_address_and_allocates_nothing(
    live: LiveServer, cloud: Cloud
) -> None:
    with metal_http(live, cloud.key_a) as http:
        reservation = reserve(http, cloud.project_a, type="public_ipv4", quantity=8).json()
        before = allocated(live)
        device = f"/devices/{cloud.device_a}/ips"
        for address in ("203.0.113.9", "not an address", f"{reservation['network']}/28"):
            response = http.post(device, json={"address": address})
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0].startswith("body.address: "), response.text
        manageable = http.post(device, json={"address": reservation["address"], "manageable": 0})
        assert manageable.json()["errors"][0].startswith("body.manageable: ")
        too_large = http.get(f"/ips/{reservation['id']}/available", params={"cidr": 28})
        assert too_large.json()["errors"][0].startswith("query.cidr: ")
        assert allocated(live) == before
        first = http.post(device, json={"address": reservation["address"]})
        assert first.status_code == 201, first.text
        again = http.post(device, json={"address": reservation["address"]})
        assert again.status_code == 409
        assert again.json()["errors"][0].startswith("body.address: ")


def test_free_space_lists_what_is_left_by_address(live: LiveServer, cloud: Cloud) -> None:
    with live.services.db.write() as session:
        block = ipam.reserve(session, cloud.project_a, Kind.PUBLIC, 4, 29, "am")
        assert [str(each) for each in ipam.free_space(session, block)] == [block.cidr]
        network = ipam.network_of(block)
        ipam.assign(session, block.id, "m1", address=str(network.network_address + 1))
        left = [str(each) for each in ipam.free_space(session, block)]
    base = network.network_address
    assert left == [f"{base}/32", f"{base + 2}/31", f"{base + 4}/30"]


def test_a_full_pool_is_a_409_naming_the_quantity_and_allocates_nothing(
    live: LiveServer, cloud: Cloud, api: httpx.Client
) -> None:
    pool = {"cidr": "10.9.0.0/29", "kind": "private", "metro": "am"}
    assert api.post("/api/v1/ipam/prefixes", json=pool).status_code == 201
    with metal_http(live, cloud.key_a) as http:
        first = reserve(http, cloud.project_a, type="private_ipv4", quantity=8)
        assert first.status_code == 201 and first.json()["public"] is False
        before = allocated(live)
        full = reserve(http, cloud.project_a, type="private_ipv4", quantity=8)
        assert full.status_code == 409
        assert full.json()["errors"][0].startswith("body.quantity: no free /29"), full.text
        assert allocated(live) == before
        listed = http.get(f"/projects/{cloud.project_a}/ips", params={"types": "private_ipv6"})
        assert listed.status_code == 422
        assert listed.json()["errors"][0].startswith("query.types[0]: "), listed.text


def test_a_devices_per_host_address_is_listed_as_managed_and_not_unassigned_by_hand(
    live: LiveServer, cloud: Cloud
) -> None:
    with live.services.db.write() as session:
        machine = session.scalar(select(Machine).where(Machine.name == "m1"))
        pool = ipam.find_by_cidr(session, POOL_V4)
        assert machine is not None and pool is not None
        host = ipam.allocate(
            session, pool, prefixlen=31, project_id=cloud.project_a, machine_id=machine.id
        )
        host_id, host_cidr = host.id, host.cidr
    with metal_http(live, cloud.key_a) as http:
        listed = http.get(f"/devices/{cloud.device_a}/ips").json()["ip_addresses"]
        assert [item["id"] for item in listed] == [host_id]
        (item,) = listed
        network = ipaddress.ip_network(host_cidr)
        assert (item["management"], item["cidr"], item["address"]) == (
            True,
            31,
            str(network.network_address + 1),
        )
        assert item["gateway"] == str(network.network_address)
        pool_block = {"network": "198.51.100.0", "netmask": "255.255.255.0", "cidr": 24}
        assert item["parent_block"] == pool_block
        refused = http.delete(f"/ips/{host_id}")
        assert refused.status_code == 422
        assert refused.json()["errors"][0].startswith("id: "), refused.text
        assert "per-host" in refused.text
        assert http.get(f"/ips/{host_id}").json()["assigned_to"] == {
            "href": f"{METAL}/devices/{cloud.device_a}"
        }
