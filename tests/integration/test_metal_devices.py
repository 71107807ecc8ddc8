"""Devices through /metal/v1 as a tenant sees them: a create takes a ready machine of the plan in
the metro, gives it addresses and installs the OS; the state follows the install to `active`
(at the phone-home); delete wipes the machine and puts it back in the pool. Bad input and other
tenants' devices are refused with nothing taken."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import undefer

from metalflow.cloud.tables import Metro, OperatingSystem, Plan
from metalflow.db.base import utcnow
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import Kind
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.policy import ProjectRole
from tests.integration.bootlab import wait_for
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.integration.test_workflows import run_to_end
from tests.manifests import machine_yaml, simple_template

PLAN = "c3.small.x86"
OS = "debian_12"
METRO = "lab"


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
        plan = Plan(id=str(uuid.uuid4()), slug=PLAN, name="c3.small", plan_class=PLAN)
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
        session.execute(update(Machine).values(state="ready", metro=METRO, plan_id=plan.id))
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
    assert agent.hello().status_code == 200
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
