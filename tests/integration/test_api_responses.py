"""Every route of the OpenAPI document answers what the document says: one call each, with
valid input, against a live server, and each body validated against the schema the document
declares for that route and status. A JSON answer must be a named model of the document's
components (not a bare object), and a route with no sample here fails the test."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from sqlalchemy import select

from metalflow.boot.dhcp.tables import DhcpLease
from metalflow.cloud.tables import Metro, OperatingSystem, Plan
from metalflow.config import Settings
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import Kind
from metalflow.tenancy import service as tenancy
from tests.integration.conftest import AgentClient, LiveServer, free_port, start_server
from tests.integration.test_metal_ips import add_device
from tests.manifests import machine_yaml, simple_template

OPENAPI = "/api/v1/openapi.json"
FAKE_MAC = "52:54:00:00:e1:01"
MANUAL_MAC = "52:54:00:00:e1:02"
SPARE_MAC = "52:54:00:00:e1:03"
DISCOVERED_MAC = "52:54:00:00:e1:0d"


@dataclass
class Sample:
    method: str
    template: str
    response: httpx.Response


@dataclass
class Caller:
    """Calls routes by their template in the document and keeps each answer."""

    http: httpx.Client
    samples: list[Sample] = field(default_factory=list)

    def __call__(self, method: str, template: str, status: int, /, **kwargs: Any) -> httpx.Response:
        path_values = kwargs.pop("path", {})
        response = self.http.request(method, template.format(**path_values), **kwargs)
        assert response.status_code == status, f"{method} {template}: {response.text}"
        self.samples.append(Sample(method.lower(), template, response))
        return response


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    boot_dir = tmp_path / "boot"
    boot_dir.mkdir()
    (boot_dir / "hello.txt").write_text("hello\n")
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd.img").write_bytes(b"initrd")
    settings = Settings(
        data_dir=tmp_path / "data",
        http=f"127.0.0.1:{free_port()}",
        controller_interval=0.1,
        boot_dir=boot_dir,
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        discovery=True,
    )
    live = start_server(settings)
    try:
        yield live
    finally:
        live.stop()


def fake_machine(name: str, mac: str) -> str:
    host = f"fake-{uuid.uuid4().hex[:8]}"
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  interfaces: [{{mac: "{mac}"}}]
  bmc: {{driver: fake, address: {host}, username: admin, password: secret}}
"""


def exercise(call: Caller, live: LiveServer) -> None:
    """Each route once, in an order that gives each the resources it needs."""
    call("GET", "/healthz", 200)
    call("GET", "/metrics", 200)
    stream = "---\n".join(
        [
            fake_machine("bmc1", FAKE_MAC),
            machine_yaml("m2", MANUAL_MAC),
            machine_yaml("m3", SPARE_MAC),
            simple_template(count=2),
        ]
    )
    call(
        "POST",
        "/api/v1/apply",
        200,
        content=stream.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    with live.services.db.write() as session:
        session.query(Machine).filter_by(name="bmc1").one().bmc_options = {"delay": "1"}
        session.add(
            DhcpLease(
                mac="52:54:00:00:e1:09",
                address="192.0.2.109",
                subnet="192.0.2.0/24",
                hostname="leased",
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            )
        )
    call("GET", "/api/v1/machines", 200)
    call("GET", "/api/v1/machines/{name}", 200, path={"name": "m2"})
    call("GET", "/api/v1/machines/{name}/metadata-url", 200, path={"name": "m2"})
    call("GET", "/api/v1/templates", 200)
    call("GET", "/api/v1/templates/{name}", 200, path={"name": "ubuntu"})
    call("GET", "/api/v1/dhcp/leases", 200)

    bmc = {"name": "bmc1"}
    call("POST", "/api/v1/machines/{name}/bmc/probe", 200, path=bmc)
    media = {"url": "http://192.0.2.1/install.iso"}
    call("POST", "/api/v1/machines/{name}/bmc/media", 200, path=bmc, json=media)
    call("DELETE", "/api/v1/machines/{name}/bmc/media", 200, path=bmc)
    on = {"action": "on"}
    job = call("POST", "/api/v1/machines/{name}/power", 202, path=bmc, json=on, params={"wait": 30})
    call("GET", "/api/v1/power-jobs/{job_id}", 200, path={"job_id": job.json()["id"]})
    call(
        "POST",
        "/api/v1/machines/{name}/boot-device",
        202,
        path=bmc,
        json={"device": "pxe"},
        params={"wait": 30},
    )
    off = call("POST", "/api/v1/machines/{name}/power", 202, path=bmc, json={"action": "off"})
    call("POST", "/api/v1/power-jobs/{job_id}/cancel", 200, path={"job_id": off.json()["id"]})
    call("GET", "/api/v1/machines/{name}/power", 200, path=bmc)

    # A workflow run by its agent: one action fails, the workflow resumes and ends.
    m2 = {"name": "m2"}
    call("POST", "/api/v1/machines/{name}/agent-token/rotate", 200, path=m2)
    token = call("POST", "/api/v1/machines/{name}/agent-token", 200, path=m2).json()["token"]
    workflow = call(
        "POST", "/api/v1/machines/{name}/provision", 201, path=m2, json={"template": "ubuntu"}
    ).json()
    ref = {"ref": workflow["id"]}
    agent = AgentClient(live.url, token, MANUAL_MAC)
    try:
        call.http.headers["Authorization"] = f"Bearer {token}"
        body = {"mac": MANUAL_MAC, "attributes": {}}
        call("POST", "/api/v1/agent/hello", 200, json=body)
        call("GET", "/api/v1/agent/ping", 200)
        first = call("GET", "/api/v1/agent/next", 200).json()
        attempt = {"attempt_id": first["id"]}
        logs = {"seq": 0, "lines": ["pulling"]}
        call("POST", "/api/v1/agent/actions/{attempt_id}/logs", 200, path=attempt, json=logs)
        done = {"status": "success", "exit_code": 0}
        call("POST", "/api/v1/agent/actions/{attempt_id}/status", 200, path=attempt, json=done)
        second = agent.next()
        assert second is not None
        agent.report(second["id"], "failed", exit_code=2, message="bad image")
        call.http.headers["Authorization"] = f"Bearer {live.admin_token}"
        call("POST", "/api/v1/workflows/{ref}/resume", 200, path=ref)
        again = agent.next()
        assert again is not None
        agent.report(again["id"], "success", exit_code=0)
    finally:
        agent.close()
        call.http.headers["Authorization"] = f"Bearer {live.admin_token}"
    call("GET", "/api/v1/workflows", 200)
    call("GET", "/api/v1/workflows/{ref}", 200, path=ref)
    call("POST", "/api/v1/machines/{name}/deprovision", 200, path=m2, json={})

    # A workflow created, cancelled, rerun, cancelled and deleted.
    created = call("POST", "/api/v1/workflows", 201, json={"machine": "m3", "template": "ubuntu"})
    other = {"ref": created.json()["id"]}
    call("POST", "/api/v1/workflows/{ref}/cancel", 200, path=other)
    call("POST", "/api/v1/workflows/{ref}/rerun", 200, path=other)
    call.http.post(f"/api/v1/workflows/{other['ref']}/cancel").raise_for_status()
    call("DELETE", "/api/v1/workflows/{ref}", 204, path=other)
    maintenance = {"event": "maintenance", "reason": "fan"}
    call("POST", "/api/v1/machines/{name}/transition", 200, path={"name": "m3"}, json=maintenance)

    report = {"mac": DISCOVERED_MAC, "attributes": {"arch": "x86_64"}, "agent_version": "test"}
    with httpx.Client(base_url=live.url, timeout=30) as anonymous:
        Caller(anonymous, call.samples)("POST", "/api/v1/agent/discover", 201, json=report)
        boot = Caller(anonymous, call.samples)
        boot("GET", "/boot/auto.ipxe", 200, params={"mac": MANUAL_MAC})
        boot("GET", "/boot/{mac}.ipxe", 200, path={"mac": MANUAL_MAC})
        for method in ("GET", "HEAD"):
            boot(method, "/boot/assets/{name}", 200, path={"name": "hello.txt"})
            boot(method, "/boot/install/vmlinuz", 200)
            boot(method, "/boot/install/initrd.img", 200)
    call("GET", "/api/v1/events", 200, params={"limit": 50})
    exercise_ipam(call)
    exercise_ipam_reservations(call, live)
    exercise_catalogue(call)
    exercise_metal_ips(call, live)
    exercise_tenancy(call, live)
    exercise_devices(call, live)
    exercise_metal_identity(call, live)
    call("GET", "/api/v1/whoami", 200)
    call("DELETE", "/api/v1/machines/{name}", 204, path={"name": "bmc1"})
    call("DELETE", "/api/v1/templates/{name}", 204, path={"name": "ubuntu"})


def exercise_ipam(call: Caller) -> None:
    pool = {"cidr": "198.18.0.0/24", "kind": "public", "metro": "am", "tags": ["edge"]}
    created = call("POST", "/api/v1/ipam/prefixes", 201, json=pool).json()
    ref = {"ref": created["id"]}
    call("GET", "/api/v1/ipam/prefixes", 200, params={"family": 4})
    call("GET", "/api/v1/ipam/prefixes/{ref}", 200, path={"ref": "198.18.0.0/24"})
    wanted = {"prefixlen": 31, "status": "assignment"}
    given = call("POST", "/api/v1/ipam/prefixes/{ref}/allocations", 201, path=ref, json=wanted)
    call("GET", "/api/v1/ipam/prefixes/{ref}/usage", 200, path=ref)
    call("DELETE", "/api/v1/ipam/prefixes/{ref}", 204, path={"ref": given.json()["id"]})


# --- ipam reservations, elastic assignments and brought prefixes --------------------------------


def exercise_ipam_reservations(call: Caller, live: LiveServer) -> None:
    """Machines m2 and m3 in a project of their own, in metro am of exercise_ipam's pool."""
    with live.services.db.write() as session:
        owner = tenancy.create_user(session, "resv@example.com", "Resv")
        org = tenancy.create_organization(session, "resv", owner.id)
        project = tenancy.create_project(session, org.id, "edge").id
        for machine in session.scalars(select(Machine).where(Machine.name.in_(["m2", "m3"]))):
            machine.project_id = project
            machine.metro = "am"
    wanted = {"project": project, "kind": "public", "family": 4, "size": 29, "metro": "am"}
    reservation = call("POST", "/api/v1/ipam/reservations", 201, json=wanted).json()
    ref = {"ref": reservation["id"]}
    call("GET", "/api/v1/ipam/reservations", 200, params={"project": project})
    assignments = "/api/v1/ipam/reservations/{ref}/assignments"
    given = call("POST", assignments, 201, path=ref, json={"machine": "m2", "size": 32}).json()
    call("GET", "/api/v1/ipam/reservations/{ref}", 200, path=ref)
    call("GET", "/api/v1/ipam/assignments", 200, params={"machine": "m2"})
    assignment = {"ref": given["id"]}
    call("GET", "/api/v1/ipam/assignments/{ref}", 200, path=assignment)
    move = {"machine": "m3"}
    call("PATCH", "/api/v1/ipam/assignments/{ref}", 200, path=assignment, json=move)
    call("DELETE", "/api/v1/ipam/assignments/{ref}", 204, path=assignment)
    call("DELETE", "/api/v1/ipam/reservations/{ref}", 204, path=ref)
    byo = {"cidr": "192.0.2.128/26", "project": project, "metro": "am"}
    call("POST", "/api/v1/ipam/byo", 201, json=byo)


# --- end of ipam reservations ---------------------------------------------------------------------


# --- metal ips ------------------------------------------------------------------------------------


def exercise_metal_ips(call: Caller, live: LiveServer) -> None:
    """A reservation from exercise_ipam's pool in metro am, an address of it given to a device
    on m3, both changed and released."""
    with live.services.db.write() as session:
        owner = tenancy.create_user(session, "ips@example.com", "Ips")
        org = tenancy.create_organization(session, "ips", owner.id)
        project = tenancy.create_project(session, org.id, "edge").id
        session.add(Metro(id=str(uuid.uuid4()), code="am", name="Amsterdam", country="NL"))
    device = {"id": add_device(live, "m3", project)}
    ips = "/metal/v1/projects/{id}/ips"
    wanted = {"type": "public_ipv4", "quantity": 4, "metro": "am", "tags": ["web"]}
    reservation = call("POST", ips, 201, path={"id": project}, json=wanted).json()
    call("GET", ips, 200, path={"id": project}, params={"types": "public_ipv4"})
    ref = {"id": reservation["id"]}
    call("GET", "/metal/v1/ips/{id}", 200, path=ref)
    call("GET", "/metal/v1/ips/{id}/available", 200, path=ref, params={"cidr": 32})
    call("PATCH", "/metal/v1/ips/{id}", 200, path=ref, json={"details": "front"})
    call("PUT", "/metal/v1/ips/{id}", 200, path=ref, json={"tags": ["web", "edge"]})
    given = {"address": reservation["address"]}
    assigned = call("POST", "/metal/v1/devices/{id}/ips", 201, path=device, json=given).json()
    call("GET", "/metal/v1/devices/{id}/ips", 200, path=device)
    call("DELETE", "/metal/v1/ips/{id}", 204, path={"id": assigned["id"]})
    call("DELETE", "/metal/v1/ips/{id}", 204, path=ref)


# --- end of metal ips -----------------------------------------------------------------------------


# --- devices and hardware reservations -----------------------------------------------------------


def exercise_devices(call: Caller, live: LiveServer) -> None:
    """A device on a reserved machine of plan m3.small.x86 in metro lab, by the provider."""
    apply_text = "---\n".join(
        [machine_yaml("c1", "52:54:00:00:e1:21"), simple_template("install-debian")]
    )
    call.http.post(
        "/api/v1/apply", content=apply_text, headers={"Content-Type": "application/yaml"}
    ).raise_for_status()
    with live.services.db.write() as session:
        owner = tenancy.create_user(session, "cloud@example.com", "Cloud")
        org = tenancy.create_organization(session, "cloud", owner.id)
        project = tenancy.create_project(session, org.id, "devices").id
        plan = Plan(id=str(uuid.uuid4()), slug="m3.small.x86", name="m3", plan_class="m3")
        session.add_all(
            [
                plan,
                Metro(id=str(uuid.uuid4()), code="lab", name="Lab", country="NL"),
                OperatingSystem(
                    id=str(uuid.uuid4()),
                    slug="debian_12",
                    name="Debian 12",
                    distro="debian",
                    version="12",
                    template="install-debian",
                ),
            ]
        )
        session.flush()
        c1 = session.scalars(select(Machine).where(Machine.name == "c1")).one()
        c1.state, c1.metro, c1.plan_id = "ready", "lab", plan.id
        for cidr, kind in (
            ("198.18.1.0/24", Kind.PUBLIC),
            ("10.71.0.0/16", Kind.PRIVATE),
            ("2001:db8:71::/48", Kind.PUBLIC),
        ):
            ipam.create_prefix(session, ipam.PrefixSpec(cidr, kind, "lab"))
    reservation = call(
        "POST", "/api/v1/hardware-reservations", 201, json={"machine": "c1", "project": project}
    ).json()
    call("GET", "/api/v1/hardware-reservations", 200)
    in_project = {"project_id": project}
    body = {
        "plan": "m3.small.x86",
        "metro": "lab",
        "operating_system": "debian_12",
        "hardware_reservation_id": reservation["id"],
    }
    devices = "/metal/v1/projects/{project_id}/devices"
    device = call("POST", devices, 201, path=in_project, json=body).json()
    one = {"device_id": device["id"]}
    call("GET", devices, 200, path=in_project)
    call("GET", "/metal/v1/devices/{device_id}", 200, path=one)
    call("PUT", "/metal/v1/devices/{device_id}", 200, path=one, json={"hostname": "c-1"})
    call("PATCH", "/metal/v1/devices/{device_id}", 200, path=one, json={"tags": ["a"]})
    call("GET", "/metal/v1/devices/{device_id}/events", 200, path=one)
    call("GET", "/metal/v1/projects/{project_id}/events", 200, path=in_project)
    power_on = {"type": "power_on"}
    call("POST", "/metal/v1/devices/{device_id}/actions", 202, path=one, json=power_on)
    reservations = "/metal/v1/projects/{project_id}/hardware-reservations"
    call("GET", reservations, 200, path=in_project)
    held = {"reservation_id": reservation["id"]}
    call("GET", "/metal/v1/hardware-reservations/{reservation_id}", 200, path=held)
    call("DELETE", "/metal/v1/devices/{device_id}", 204, path=one)
    call("DELETE", "/api/v1/hardware-reservations/{reservation_id}", 204, path=held)


# --- end of devices ----------------------------------------------------------------------------
# --- catalogue: metros, plans, operating systems, capacity ---------------------------------------


def exercise_catalogue(call: Caller) -> None:
    peers = [{"address_family": 4, "peer_as": 65530, "peer_ips": ["169.254.255.1"]}]
    metro = {"code": "lab", "name": "Lab", "country": "NL", "bgp_peers": peers}
    call("POST", "/api/v1/metros", 201, json=metro)
    call("GET", "/api/v1/metros", 200)
    lab = {"code": "lab"}
    call("GET", "/api/v1/metros/{code}", 200, path=lab)
    call("PATCH", "/api/v1/metros/{code}", 200, path=lab, json={"name": "Lab 2"})
    plan = {
        "slug": "c3.small.x86",
        "name": "c3.small.x86",
        "specs": {"cpus": [{"count": 1, "type": "Xeon"}], "memory": {"total": "32GB"}},
        "rule": {"arch": "x86_64", "memory_min_gib": 30},
    }
    call("POST", "/api/v1/plans", 201, json=plan)
    call("GET", "/api/v1/plans", 200)
    slug = {"slug": "c3.small.x86"}
    call("GET", "/api/v1/plans/{slug}", 200, path=slug)
    call("PATCH", "/api/v1/plans/{slug}", 200, path=slug, json={"wipe": "zero"})
    call("GET", "/api/v1/plans/{slug}/check", 200, path=slug)
    system = {
        "slug": "ubuntu_24_04",
        "name": "Ubuntu 24.04",
        "distro": "ubuntu",
        "version": "24.04",
        "provisionable_on": ["c3.small.x86"],
        "image_url": "http://192.0.2.1:8080/noble.raw.gz",
        "image_checksum": "sha256:" + "0" * 64,
    }
    call("POST", "/api/v1/operating-systems", 201, json=system)
    call("GET", "/api/v1/operating-systems", 200)
    os_slug = {"slug": "ubuntu_24_04"}
    call("GET", "/api/v1/operating-systems/{slug}", 200, path=os_slug)
    call(
        "PATCH", "/api/v1/operating-systems/{slug}", 200, path=os_slug, json={"version": "24.04.1"}
    )
    call("GET", "/api/v1/capacity", 200)
    call("DELETE", "/api/v1/operating-systems/{slug}", 204, path=os_slug)
    call("DELETE", "/api/v1/plans/{slug}", 204, path=slug)
    call("DELETE", "/api/v1/metros/{code}", 204, path=lab)


# --- end of catalogue -----------------------------------------------------------------------------


def exercise_tenancy(call: Caller, live: LiveServer) -> None:
    password = "correct horse battery"
    ada = {"email": "ada@example.com", "name": "Ada", "password": password}
    user = call("POST", "/api/v1/users", 201, json=ada).json()
    bob = call("POST", "/api/v1/users", 201, json={"email": "bob@example.com", "name": "Bob"})
    call("GET", "/api/v1/users", 200)
    call("GET", "/api/v1/users/{user_id}", 200, path={"user_id": user["id"]})
    org = call("POST", "/api/v1/organizations", 201, json={"name": "acme", "owner_id": user["id"]})
    org_path = {"organization_id": org.json()["id"]}
    call("GET", "/api/v1/organizations", 200)
    call("GET", "/api/v1/organizations/{organization_id}", 200, path=org_path)
    org_member = {**org_path, "user_id": bob.json()["id"]}
    members = "/api/v1/organizations/{organization_id}/members"
    body = {"user_id": bob.json()["id"], "role": "member"}
    call("POST", members, 201, path=org_path, json=body)
    call("GET", members, 200, path=org_path)
    call("PATCH", members + "/{user_id}", 200, path=org_member, json={"role": "admin"})
    call("DELETE", members + "/{user_id}", 204, path=org_member)
    projects = "/api/v1/organizations/{organization_id}/projects"
    project = call("POST", projects, 201, path=org_path, json={"name": "web"}).json()
    project_path = {"project_id": project["id"]}
    call("GET", "/api/v1/projects", 200)
    call("GET", "/api/v1/projects/{project_id}", 200, path=project_path)
    assignment = "/api/v1/machines/{name}/project"
    call("PUT", assignment, 200, path={"name": "bmc1"}, json={"project": project["id"]})
    call.http.put("/api/v1/machines/bmc1/project", json={"project": None}).raise_for_status()
    project_member = {**project_path, "user_id": bob.json()["id"]}
    members = "/api/v1/projects/{project_id}/members"
    body = {"user_id": bob.json()["id"], "role": "viewer"}
    call("POST", members, 201, path=project_path, json=body)
    call("GET", members, 200, path=project_path)
    call("PATCH", members + "/{user_id}", 200, path=project_member, json={"role": "editor"})
    call("DELETE", members + "/{user_id}", 204, path=project_member)
    key = call("POST", "/api/v1/keys", 201, json={"name": "ci", "project_id": project["id"]})
    key_path = {"key_id": key.json()["id"]}
    call("GET", "/api/v1/keys", 200)
    call("GET", "/api/v1/keys/{key_id}", 200, path=key_path)
    call("DELETE", "/api/v1/keys/{key_id}", 200, path=key_path)
    with httpx.Client(base_url=live.url, timeout=30) as anonymous:
        login = {"email": "ada@example.com", "password": password}
        Caller(anonymous, call.samples)("POST", "/api/v1/login", 200, json=login)
    call("GET", "/api/v1/audit", 200, params={"limit": 10})
    call("DELETE", "/api/v1/projects/{project_id}", 204, path=project_path)
    call("DELETE", "/api/v1/organizations/{organization_id}", 204, path=org_path)
    call("DELETE", "/api/v1/users/{user_id}", 204, path={"user_id": bob.json()["id"]})


# --- the Metal API: who am I, projects, SSH keys --------------------------------------------------

METAL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILv6PTaKFgZMRh/e8PXab7wT445CwXm00syKx6y0puU9 ada"
METAL_KEY_2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAcXsrt3t3S+xNVKBDfk+/4wDlBarjHifBS8BQJ6pDgY"


def exercise_metal_identity(call: Caller, live: LiveServer) -> None:
    with live.services.db.write() as session:
        owner = tenancy.create_user(session, "metal@example.com", "Metal Owner")
        org = tenancy.create_organization(session, "metal-org", owner.id).id
        user_key = tenancy.create_key(
            session, "metal", now=dt.datetime.now(dt.UTC), user_id=owner.id
        )
    metal = "/metal/v1"
    call("GET", f"{metal}/user", 200)
    call("GET", f"{metal}/users/{{user_id}}", 200, path={"user_id": owner.id})
    call("GET", f"{metal}/organizations", 200)
    org_path = {"organization_id": org}
    call("GET", f"{metal}/organizations/{{organization_id}}", 200, path=org_path)
    in_org = f"{metal}/organizations/{{organization_id}}/projects"
    first = call("POST", in_org, 201, path=org_path, json={"name": "metal-a"}).json()
    call("GET", in_org, 200, path=org_path, params={"per_page": 1})
    body = {"name": "metal-b", "organization_id": org}
    project = {"project_id": call("POST", f"{metal}/projects", 201, json=body).json()["id"]}
    call("GET", f"{metal}/projects", 200)
    one = f"{metal}/projects/{{project_id}}"
    call("GET", one, 200, path=project, params={"exclude": "members"})
    call("PUT", one, 200, path=project, json={"name": "metal-c"})
    call("PATCH", one, 200, path=project, json={"name": "metal-d"})
    keys = f"{metal}/projects/{{project_id}}/ssh-keys"
    call("POST", keys, 201, path=project, json={"label": "deploy", "key": METAL_KEY})
    call("GET", keys, 200, path=project)
    call.http.headers["Authorization"] = f"Bearer {user_key.secret}"
    try:
        own = call("POST", f"{metal}/ssh-keys", 201, json={"key": METAL_KEY_2}).json()
        call("GET", f"{metal}/ssh-keys", 200)
        key = {"key_id": own["id"]}
        one_key = f"{metal}/ssh-keys/{{key_id}}"
        call("GET", one_key, 200, path=key)
        call("PUT", one_key, 200, path=key, json={"label": "laptop"})
        call("PATCH", one_key, 200, path=key, json={"label": "desk"})
        call("DELETE", one_key, 204, path=key)
    finally:
        call.http.headers["Authorization"] = f"Bearer {live.admin_token}"
    call("DELETE", one, 204, path=project)
    call.http.delete(f"{metal}/projects/{first['id']}").raise_for_status()


# --- end of the Metal API's who am I --------------------------------------------------------------


def problems_of(sample: Sample, operation: dict[str, Any], components: dict[str, Any]) -> list[str]:
    label = f"{sample.method.upper()} {sample.template} {sample.response.status_code}"
    declared = operation["responses"].get(str(sample.response.status_code))
    if declared is None:
        return [f"{label}: status not in the document"]
    content = declared.get("content", {})
    if not content:
        return [] if not sample.response.content else [f"{label}: a body where none is declared"]
    media_type = sample.response.headers.get("content-type", "").split(";")[0]
    if media_type not in content and "*/*" not in content:
        return [f"{label}: {media_type} is not among {sorted(content)}"]
    if media_type != "application/json":
        return []
    schema = content[media_type].get("schema", {})
    if "$ref" not in schema:
        return [f"{label}: untyped (its schema is {schema})"]
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": components})
    return [
        f"{label}: {error.message} at {list(error.instance_path)}"
        for error in validator.iter_errors(sample.response.json())
    ]


def test_every_route_answers_what_the_document_declares(server: LiveServer) -> None:
    with server.client() as http:
        document = http.get(OPENAPI).json()
        call = Caller(http)
        exercise(call, server)
    operations = {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    sampled = {(sample.method, sample.template) for sample in call.samples}
    problems = [
        f"{method.upper()} {path}: no sample" for method, path in operations.keys() - sampled
    ]
    for sample in call.samples:
        operation = operations.get((sample.method, sample.template))
        if operation is None:
            problems.append(f"{sample.method.upper()} {sample.template}: not in the document")
            continue
        problems += problems_of(sample, operation, document["components"])
    assert not problems, "\n".join(sorted(problems))
