"""Devices through /metal/v1 as a tenant sees them: a create takes a ready machine of the plan in
the metro, gives it addresses and installs the OS; the state follows the install to `active`
(at the phone-home); delete wipes the machine and puts it back in the pool. Bad input and other
tenants' devices are refused with nothing taken."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import undefer

from metalflow.cloud.tables import Metro, OperatingSystem, Plan
from metalflow.db.base import utcnow
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import IpBlock, Kind
from metalflow.power.tables import PowerJob
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.policy import ProjectRole
from tests.integration.bootlab import wait_for
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.integration.test_workflows import run_to_end
from tests.manifests import machine_yaml, simple_template

PLAN = "c3.small.x86"
OS = "debian_12"
METRO = "lab"
HARDWARE = {"arch": "x86_64", "memory_bytes": 32 << 30}
"""What the agent reports on hello; the plan's rule keeps the machines in it."""
RULE = {"arch": "x86_64", "memory_min_gib": 30}


@dataclass(frozen=True)
class Tenant:
    project: str
    key: str

    def client(self, live: LiveServer) -> httpx.Client:
        return httpx.Client(
            base_url=f"{live.url}/metal/v1", headers={"X-Auth-Token": self.key}, timeout=60
        )


def tenant(live: LiveServer, email: str) -> Tenant:
    with live.services.db.write() as session:
        user = tenancy.create_user(session, email, email.split("@")[0])
        org = tenancy.create_organization(session, f"org-{uuid.uuid4().hex[:8]}", user.id)
        project = tenancy.create_project(session, org.id, "web")
        tenancy.add_project_member(session, project.id, user.id, ProjectRole.OWNER)
        key = tenancy.create_key(session, "k", now=utcnow(), user_id=user.id)
    return Tenant(project.id, key.secret)


def mac(index: int) -> str:
    return f"52:54:00:00:d{index // 256:01x}:{index % 256:02x}"


def cloud_lab(live: LiveServer, api: httpx.Client, machines: int = 1) -> None:
    """A metro with pools, a plan, an OS and `machines` ready machines of the plan there."""
    docs = [machine_yaml(f"m{i}", mac(i)) for i in range(machines)]
    assert apply(api, "---\n".join([*docs, simple_template("install-debian")])).status_code == 200
    with live.services.db.write() as session:
        plan = Plan(id=str(uuid.uuid4()), slug=PLAN, name="c3.small", plan_class=PLAN, rule=RULE)
        session.add(Metro(id=str(uuid.uuid4()), code=METRO, name="Lab", country="NL"))
        session.add(plan)
        session.add(
            OperatingSystem(
                id=str(uuid.uuid4()),
                slug=OS,
                name="Debian 12",
                distro="debian",
                version="12",
                provisionable_on=[PLAN],
                template="install-debian",
            )
        )
        session.flush()
        session.execute(
            update(Machine).values(state="ready", metro=METRO, plan_id=plan.id, attributes=HARDWARE)
        )
        for cidr, kind in (
            ("198.51.100.0/24", Kind.PUBLIC),
            ("10.70.0.0/16", Kind.PRIVATE),
            ("2001:db8::/48", Kind.PUBLIC),
        ):
            ipam.create_prefix(session, ipam.PrefixSpec(cidr, kind, METRO))


def create(client: httpx.Client, project: str, **fields: Any) -> httpx.Response:
    body = {"plan": PLAN, "metro": METRO, "operating_system": OS, **fields}
    return client.post(f"/projects/{project}/devices", json=body)


def agent_for(live: LiveServer, api: httpx.Client, machine: str, index: int) -> AgentClient:
    token = api.post(f"/api/v1/machines/{machine}/agent-token").json()["token"]
    agent = AgentClient(live.url, token, mac(index))
    assert agent.hello(**HARDWARE).status_code == 200
    return agent


def machine_row(live: LiveServer, name: str) -> Machine:
    with live.services.db.read() as session:
        found = session.scalar(
            select(Machine).where(Machine.name == name).options(undefer(Machine.instance_metadata))
        )
        assert found is not None
        return found


def test_a_tenant_creates_a_device_that_installs_and_becomes_active(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    with alice.client(live) as metal:
        created = create(metal, alice.project, hostname="web-1", userdata="#cloud-config\n")
        assert created.status_code == 201, created.text
        device = created.json()
        assert device["hostname"] == "web-1"
        assert device["state"] == "provisioning", "its BMC is asked to boot it into PXE"
        assert device["plan"]["slug"] == PLAN and device["metro"]["code"] == METRO
        assert device["operating_system"]["slug"] == OS
        assert device["project"] == {"href": f"/metal/v1/projects/{alice.project}"}
        families = sorted((a["address_family"], a["public"]) for a in device["ip_addresses"])
        assert families == [(4, False), (4, True), (6, True)]
        assert {a["cidr"] for a in device["ip_addresses"]} == {31, 127}

        machine = machine_row(live, "m0")
        assert machine.project_id == alice.project and machine.state == "provisioning"
        instance = machine.instance_metadata["instance"]
        assert instance["id"] == device["id"] and instance["hostname"] == "web-1"

        agent = agent_for(live, api, "m0", 0)
        try:
            run_to_end(agent)
        finally:
            agent.close()
        shown = metal.get(f"/devices/{device['id']}").json()
        assert shown["state"] == "provisioning", "the OS has not phoned home yet"
        assert shown["provisioning_percentage"] == 99

        with live.services.db.write() as session:
            inventory.mark_booted(session, machine.id, "phoned home")
        wait_for(lambda: metal.get(f"/devices/{device['id']}").json()["state"] == "active")
        active = metal.get(f"/devices/{device['id']}").json()
        assert active["provisioning_percentage"] == 100

        listed = metal.get(f"/projects/{alice.project}/devices").json()
        assert [d["id"] for d in listed["devices"]] == [device["id"]]
        assert listed["meta"]["total"] == 1 and listed["meta"]["next"] is None


def block_count(live: LiveServer) -> int:
    with live.services.db.read() as session:
        return session.scalar(select(func.count()).select_from(IpBlock)) or 0


def test_creates_beyond_capacity_are_refused_and_take_nothing(
    live: LiveServer, api: httpx.Client
) -> None:
    machines = 50 if live.services.db.is_sqlite is False else 10
    cloud_lab(live, api, machines)
    alice = tenant(live, "alice@example.test")
    blocks_before = block_count(live)

    def one(index: int) -> httpx.Response:
        with alice.client(live) as metal:
            return create(metal, alice.project, hostname=f"web-{index}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, range(2 * machines)))

    created = [answer.json() for answer in answers if answer.status_code == 201]
    refused = [answer for answer in answers if answer.status_code != 201]
    assert len(created) == machines, [answer.text for answer in refused[:3]]
    assert {answer.status_code for answer in refused} == {409}
    assert all(
        answer.json()["errors"][0].startswith("plan: no ready machine of plan c3.small.x86")
        for answer in refused
    )
    with live.services.db.read() as session:
        taken = session.scalars(select(Machine.id).where(Machine.project_id == alice.project))
        assert len(set(taken)) == machines
    hosts_given = block_count(live) - blocks_before
    assert hosts_given == 3 * machines + 2, "three per machine and the project's /25 and /56"
    capacity_left = create(alice.client(live), alice.project)
    assert capacity_left.status_code == 409


def test_bad_requests_name_the_field_and_take_nothing(live: LiveServer, api: httpx.Client) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    blocks_before = block_count(live)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"plan": "m9.huge"}, 422, "plan: no plan 'm9.huge'"),
        ({"metro": "xx"}, 422, "metro: no metro 'xx'"),
        ({"operating_system": "windows"}, 422, "operating_system: no operating system"),
        ({"hostname": "-bad-"}, 422, "body.hostname"),
        ({"spot_instance": True}, 422, "body.spot_instance"),
        ({"userdata": "x" * (64 * 1024 + 1)}, 422, "body.userdata"),
        ({"project_ssh_keys": ["nope"]}, 422, "project_ssh_keys: no SSH key 'nope'"),
        ({"facility": "am6"}, 422, "facility: facilities are metros here"),
        ({"public_ipv4_subnet_size": 29}, 422, "public_ipv4_subnet_size"),
        ({"colour": "red"}, 422, "body.colour"),
    ]
    with alice.client(live) as metal:
        for fields, status, start in cases:
            answer = create(metal, alice.project, **fields)
            assert answer.status_code == status, (fields, answer.text)
            assert answer.json()["errors"][0].startswith(start), (fields, answer.json())
        assert metal.get(f"/projects/{alice.project}/devices").json()["devices"] == []
    assert block_count(live) == blocks_before
    assert machine_row(live, "m0").project_id is None


def test_packet_python_s_create_body_is_accepted_as_it_sends_it(
    live: LiveServer, api: httpx.Client
) -> None:
    """packet-python's `create_device` defaults: tags and features as empty objects, hourly
    billing, no spot instance, a /31, and the project repeated in the body."""
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    body = {
        "billing_cycle": "hourly",
        "features": {},
        "hostname": "pp-1",
        "locked": False,
        "operating_system": OS,
        "plan": PLAN,
        "project_id": alice.project,
        "public_ipv4_subnet_size": 31,
        "project_ssh_keys": [],
        "tags": {},
        "user_ssh_keys": [],
        "userdata": "",
        "metro": METRO,
    }
    with alice.client(live) as metal:
        answer = metal.post(f"/projects/{alice.project}/devices", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.json()["tags"] == []


def test_another_tenant_sees_nothing_and_changes_nothing(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api, 2)
    alice, bob = tenant(live, "alice@example.test"), tenant(live, "bob@example.test")
    with alice.client(live) as metal:
        device = create(metal, alice.project).json()
    with bob.client(live) as metal:
        missing = f"device {device['id']!r} not found"
        assert metal.get(f"/devices/{device['id']}").json() == {"errors": [f"id: {missing}"]}
        assert metal.patch(f"/devices/{device['id']}", json={"hostname": "x"}).status_code == 404
        assert metal.delete(f"/devices/{device['id']}").status_code == 404
        assert (
            metal.post(f"/devices/{device['id']}/actions", json={"type": "reboot"}).status_code
            == 404
        )
        assert create(metal, alice.project).status_code == 404
        assert metal.get(f"/projects/{alice.project}/devices").status_code == 404
    with live.client() as provider:
        seen = provider.get(f"/metal/v1/devices/{device['id']}")
        assert seen.status_code == 200 and seen.json()["id"] == device["id"]


def test_updates_change_what_the_machine_is_told_and_locking_guards_the_device(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    with alice.client(live) as metal:
        device = create(metal, alice.project, hostname="web-1").json()
        changed = metal.put(
            f"/devices/{device['id']}", json={"hostname": "web-2", "tags": ["db"], "locked": True}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["hostname"] == "web-2" and changed.json()["tags"] == ["db"]
        instance = machine_row(live, "m0").instance_metadata["instance"]
        assert instance["hostname"] == "web-2" and instance["tags"] == ["db"]

        refused = metal.patch(f"/devices/{device['id']}", json={"hostname": "web-3"})
        assert refused.status_code == 409
        assert refused.json()["errors"] == [
            "locked: the device is locked: unlock it (locked: false) first"
        ]
        assert metal.delete(f"/devices/{device['id']}").status_code == 409
        unlocked = metal.patch(
            f"/devices/{device['id']}", json={"locked": False, "hostname": "web-3"}
        )
        assert unlocked.status_code == 200 and unlocked.json()["hostname"] == "web-3"
        excluded = metal.get(f"/devices/{device['id']}", params={"exclude": "ip_addresses,plan"})
        assert "ip_addresses" not in excluded.json() and "plan" not in excluded.json()
        assert excluded.json()["hostname"] == "web-3"


def test_delete_wipes_the_machine_and_puts_it_back_in_the_pool(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    with alice.client(live) as metal:
        device = create(metal, alice.project).json()
        agent = agent_for(live, api, "m0", 0)
        try:
            run_to_end(agent)
            assert metal.delete(f"/devices/{device['id']}").status_code == 204
            assert metal.get(f"/devices/{device['id']}").json()["state"] == "deprovisioning"
            served = run_to_end(agent)
        finally:
            agent.close()
        assert [action["name"] for action in served] == ["wipe-disks"]
        assert served[0]["environment"]["MODE"] == "signatures"
        assert metal.get(f"/devices/{device['id']}").status_code == 404
        assert metal.get(f"/projects/{alice.project}/devices").json()["devices"] == []
    machine = machine_row(live, "m0")
    assert machine.project_id is None and machine.state == "ready"
    assert machine.instance_metadata == {}
    with live.services.db.read() as session:
        held = session.scalars(select(IpBlock.status).where(IpBlock.machine_id == machine.id)).all()
    assert held == [], "its per-host blocks went into quarantine"
    with alice.client(live) as metal:
        again = create(metal, alice.project)
    assert again.status_code == 201, again.text


def test_a_project_and_its_plan_can_go_once_its_devices_are_deleted(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    with alice.client(live) as metal:
        device = create(metal, alice.project).json()
        refused = metal.delete(f"/projects/{alice.project}")
        assert refused.status_code == 409 and "still has devices" in refused.text
        agent = agent_for(live, api, "m0", 0)
        try:
            run_to_end(agent)
            assert metal.delete(f"/devices/{device['id']}").status_code == 204
            run_to_end(agent)
        finally:
            agent.close()
        gone = metal.delete(f"/projects/{alice.project}")
        assert gone.status_code == 204, gone.text
    with live.services.db.write() as session:
        carved = session.scalars(
            select(IpBlock).where(IpBlock.cidr.in_(["10.70.0.0/25", "2001:db8::/56"]))
        ).all()
        assert {block.status for block in carved} == {"quarantine"}, "its pools are quarantined"
        later = utcnow() + dt.timedelta(days=1)
        ipam.sweep_quarantine(session, now=later)
    with live.services.db.read() as session:
        assert session.scalars(select(IpBlock).where(IpBlock.project_id.is_not(None))).all() == []
    assert api.delete(f"/api/v1/operating-systems/{OS}").status_code == 204
    assert api.delete(f"/api/v1/plans/{PLAN}").status_code == 204


def test_power_and_reinstall_actions(live: LiveServer, api: httpx.Client) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    with alice.client(live) as metal:
        device = create(metal, alice.project).json()
        busy = metal.post(f"/devices/{device['id']}/actions", json={"type": "reinstall"})
        assert busy.status_code == 409, "its install still runs"
        agent = agent_for(live, api, "m0", 0)
        try:
            run_to_end(agent)
            for action in ("power_off", "power_on", "reboot"):
                answer = metal.post(f"/devices/{device['id']}/actions", json={"type": action})
                assert answer.status_code == 202, answer.text
            with live.services.db.read() as session:
                operations = session.scalars(
                    select(PowerJob.operation).order_by(PowerJob.created_at)
                ).all()
            assert list(operations)[-3:] == ["off", "on", "cycle"]
            reinstall = metal.post(f"/devices/{device['id']}/actions", json={"type": "reinstall"})
            assert reinstall.status_code == 202, reinstall.text
            assert metal.get(f"/devices/{device['id']}").json()["state"] == "reinstalling"
            assert len(run_to_end(agent)) == 3
        finally:
            agent.close()
        unknown = metal.post(f"/devices/{device['id']}/actions", json={"type": "explode"})
        assert unknown.status_code == 422 and unknown.json()["errors"][0].startswith("body.type")


def power_jobs_running(live: LiveServer) -> bool:
    with live.services.db.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(PowerJob)
                .where(PowerJob.state.in_(("queued", "running")))
            )
            != 0
        )


def test_a_device_s_events_are_its_machine_s_since_it_was_created(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api)
    alice = tenant(live, "alice@example.test")
    with alice.client(live) as metal:
        device = create(metal, alice.project).json()
        agent = agent_for(live, api, "m0", 0)
        try:
            run_to_end(agent)
        finally:
            agent.close()
        wait_for(lambda: not power_jobs_running(live))
        listed = metal.get(f"/devices/{device['id']}/events", params={"per_page": 100}).json()
        kinds = [event["type"] for event in listed["events"]]
        assert kinds[-1] == "machine.assigned", "newest first, from the assignment on"
        assert "device.created" in kinds and "workflow.succeeded" in kinds
        assert "machine.created" not in kinds, "the machine's earlier life is not the device's"
        assert listed["meta"]["total"] == len(kinds)
        first = listed["events"][0]
        assert first["relationships"] == [{"href": f"/metal/v1/devices/{device['id']}"}]
        project = metal.get(f"/projects/{alice.project}/events", params={"per_page": 2}).json()
        assert [e["id"] for e in project["events"]] == [e["id"] for e in listed["events"][:2]]
        assert project["meta"]["next"] is not None


def test_a_reserved_machine_goes_only_to_its_project_s_devices_that_name_it(
    live: LiveServer, api: httpx.Client
) -> None:
    cloud_lab(live, api)
    alice, bob = tenant(live, "alice@example.test"), tenant(live, "bob@example.test")
    reserved = api.post(
        "/api/v1/hardware-reservations", json={"machine": "m0", "project": alice.project}
    )
    assert reserved.status_code == 201, reserved.text
    reservation = reserved.json()["id"]
    again = api.post(
        "/api/v1/hardware-reservations", json={"machine": "m0", "project": bob.project}
    )
    assert again.status_code == 409 and "reserved already" in again.json()["detail"]["message"]

    with bob.client(live) as metal:
        assert create(metal, bob.project).status_code == 409, "not in everyone's pool"
        named = create(metal, bob.project, hardware_reservation_id=reservation)
        assert named.status_code == 422
        assert metal.get(f"/hardware-reservations/{reservation}").status_code == 404
    with alice.client(live) as metal:
        assert create(metal, alice.project).status_code == 409, "a reservation is asked for"
        shown = metal.get(f"/projects/{alice.project}/hardware-reservations").json()
        assert [r["id"] for r in shown["hardware_reservations"]] == [reservation]
        assert shown["hardware_reservations"][0]["provisionable"] is True
        device = create(metal, alice.project, hardware_reservation_id=reservation)
        assert device.status_code == 201, device.text
        assert device.json()["hardware_reservation"] == {
            "href": f"/metal/v1/hardware-reservations/{reservation}"
        }
        after = metal.get(f"/hardware-reservations/{reservation}").json()
        assert after["device"] == {"href": f"/metal/v1/devices/{device.json()['id']}"}
        assert after["provisionable"] is False
    assert api.delete(f"/api/v1/hardware-reservations/{reservation}").status_code == 204
    assert api.get("/api/v1/hardware-reservations").json() == {"items": []}
