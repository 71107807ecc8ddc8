"""The provider catalogue through /api/v1 on SQLite and PostgreSQL: metros, plans and which plan
each machine is in (on plan changes, the agent's hello and discovery), plan checks, operating
systems with their generated install template, capacity, and the refusals a provider sees."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from metalflow.cloud.tables import Device, HardwareReservation, Plan
from metalflow.inventory import service as inventory
from metalflow.inventory.tables import Machine
from metalflow.tenancy import service as tenancy
from tests.integration.conftest import AgentClient, LiveServer, apply
from tests.manifests import interface, machine, simple_template, stream

GIB = 1 << 30
SMALL = {
    "arch": "x86_64",
    "cpu": {"model": "Intel Xeon E-2278G", "sockets": 1, "cores": 8, "threads": 16},
    "memory_bytes": 32 * GIB,
    "disks": [{"name": "sda", "size_bytes": 480 * 10**9, "rotational": False}],
    "nics": [{"mac": "52:54:00:00:c0:01", "speed_mbps": 10000}],
}
ARM = {**SMALL, "arch": "aarch64", "cpu": {"model": "Ampere Altra", "cores": 80}}
SMALL_RULE = {"arch": "x86_64", "cpu_cores_min": 8, "memory_min_gib": 30}
PLAN = {
    "slug": "c3.small.x86",
    "name": "c3.small.x86",
    "specs": {
        "cpus": [{"count": 1, "type": "Intel Xeon E-2278G"}],
        "memory": {"total": "32GB"},
        "drives": [{"count": 1, "size": "480GB", "type": "SSD", "category": "boot"}],
        "nics": [{"count": 1, "type": "10Gbps"}],
        "features": {"raid": False, "txt": True, "uefi": True},
    },
    "rule": SMALL_RULE,
}
CHECKSUM = "sha256:" + "ab" * 32


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def refused(response: httpx.Response, status: int, field: str | None, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["field"] == field, detail
    for word in words:
        assert word in detail["message"], detail["message"]


def machines(api: httpx.Client, *names: str, metro: str = "am") -> None:
    documents = [
        machine(
            name, interface(f"52:54:00:00:c1:{index:02x}", f"192.0.2.{60 + index}"), metro=metro
        )
        for index, name in enumerate(names)
    ]
    ok(apply(api, stream(*documents)))


def hello(live: LiveServer, api: httpx.Client, name: str, attributes: dict[str, Any]) -> None:
    """The machine's agent reports its hardware, as it does when it boots."""
    token = ok(api.post(f"/api/v1/machines/{name}/agent-token"))["token"]
    mac = ok(api.get(f"/api/v1/machines/{name}"))["interfaces"][0]["mac"]
    agent = AgentClient(live.url, token, mac)
    try:
        ok(agent.hello(**attributes))
    finally:
        agent.close()


def plan_of(live: LiveServer, name: str) -> str | None:
    """The slug of the plan the machine is stored in."""
    with live.services.db.read() as session:
        return session.scalar(
            select(Plan.slug).join(Machine, Machine.plan_id == Plan.id).where(Machine.name == name)
        )


def test_metros_are_created_shown_changed_and_deleted(api: httpx.Client) -> None:
    peers = [{"address_family": 4, "peer_as": 65530, "peer_ips": ["169.254.255.1"]}]
    body = {"code": "am", "name": "Amsterdam", "country": "nl", "bgp_peers": peers}
    created = ok(api.post("/api/v1/metros", json=body), 201)
    assert (created["code"], created["country"], created["bgp_peers"]) == ("am", "NL", peers)
    uuid.UUID(created["id"], version=4)
    refused(api.post("/api/v1/metros", json=body), 409, "code", "metro am exists", "PATCH")
    refused(
        api.post("/api/v1/metros", json={**body, "code": "fr", "country": "FRA"}),
        422,
        "body.country",
    )
    changed = ok(api.patch("/api/v1/metros/am", json={"name": "Amsterdam 2"}))
    assert (changed["name"], changed["country"]) == ("Amsterdam 2", "NL")
    assert [item["code"] for item in ok(api.get("/api/v1/metros"))["items"]] == ["am"]

    machines(api, "m1")
    assert ok(api.get("/api/v1/metros/am"))["machines"] == 1
    refused(api.delete("/api/v1/metros/am"), 409, "code", "machines m1")
    ok(api.delete("/api/v1/machines/m1"), 204)
    ok(api.delete("/api/v1/metros/am"), 204)
    refused(api.get("/api/v1/metros/am"), 404, "code", "metro 'am' not found")


def test_machines_follow_plan_changes_in_slug_order(live: LiveServer, api: httpx.Client) -> None:
    machines(api, "small1", "arm1", "blank1")
    hello(live, api, "small1", SMALL)
    hello(live, api, "arm1", ARM)
    assert plan_of(live, "small1") is None, "no plan yet"

    plan = ok(api.post("/api/v1/plans", json=PLAN), 201)
    assert (plan["class"], plan["machines"], plan["wipe"]) == ("c3.small.x86", 1, "signatures")
    assert plan_of(live, "small1") == "c3.small.x86"
    assert plan_of(live, "arm1") is None

    arm = {"slug": "c3.large.arm64", "name": "c3.large.arm64", "rule": {"arch": "arm64"}}
    ok(api.post("/api/v1/plans", json=arm), 201)
    assert plan_of(live, "arm1") == "c3.large.arm64"

    # A plan earlier by slug that both machines match takes them.
    catch_all = {"slug": "a.any", "name": "any", "rule": {"memory_min_gib": 1}}
    ok(api.post("/api/v1/plans", json=catch_all), 201)
    assert (plan_of(live, "small1"), plan_of(live, "arm1")) == ("a.any", "a.any")
    ok(api.delete("/api/v1/plans/a.any"), 204)
    assert (plan_of(live, "small1"), plan_of(live, "arm1")) == ("c3.small.x86", "c3.large.arm64")

    # A stricter rule lets the machine go; the check says why.
    stricter = {"rule": {**SMALL_RULE, "memory_min_gib": 64}}
    assert ok(api.patch("/api/v1/plans/c3.small.x86", json=stricter))["machines"] == 0
    assert plan_of(live, "small1") is None
    check = ok(api.get("/api/v1/plans/c3.small.x86/check"))
    assert check["matching"] == []
    misses = {miss["name"]: miss["reasons"] for miss in check["near_misses"]}
    assert misses["small1"] == ["memory 32.0 GiB is below the minimum 64"]
    assert misses["arm1"][0] == "arch aarch64 is not x86_64"
    assert misses["blank1"] == ["no hardware reported yet (the agent reports it when it boots)"]
    order = [miss["name"] for miss in check["near_misses"]]
    assert order == ["blank1", "small1", "arm1"], "fewest reasons first"

    # The machine reports more memory at its next boot: its hello classifies it.
    hello(live, api, "small1", {**SMALL, "memory_bytes": 64 * GIB})
    assert plan_of(live, "small1") == "c3.small.x86"
    check = ok(api.get("/api/v1/plans/c3.small.x86/check"))
    assert [(m["name"], m["plan"]) for m in check["matching"]] == [("small1", "c3.small.x86")]


def test_a_discovered_machine_is_classified_as_it_enters(
    live: LiveServer, api: httpx.Client
) -> None:
    ok(api.post("/api/v1/plans", json=PLAN), 201)
    attributes = {**SMALL, "nics": [{"mac": "52:54:00:00:c2:01", "speed_mbps": 10000}]}
    with live.services.db.write() as session:
        found = inventory.discover_machine(session, "52:54:00:00:c2:01", attributes)
        name = found.name
    assert plan_of(live, name) == "c3.small.x86"


def test_bad_plans_are_refused_naming_the_field(api: httpx.Client) -> None:
    bad_rule = {**PLAN, "rule": {"cpu_cores_min": 8, "cpu_cores_max": 2}}
    refused(api.post("/api/v1/plans", json=bad_rule), 422, "body.rule", "above its maximum")
    refused(api.post("/api/v1/plans", json={**PLAN, "rule": {"ram": 4}}), 422, "body.rule.ram")
    drive = {"count": 1, "size": "1TB", "type": "TAPE"}
    refused(
        api.post("/api/v1/plans", json={**PLAN, "specs": {"drives": [drive]}}),
        422,
        "body.specs.drives[0].type",
    )
    refused(api.post("/api/v1/plans", json={**PLAN, "wipe": "shred"}), 422, "body.wipe")
    refused(api.post("/api/v1/plans", json={**PLAN, "slug": "C3 Small"}), 422, "body.slug")
    ok(api.post("/api/v1/plans", json=PLAN), 201)
    refused(
        api.patch(
            "/api/v1/plans/c3.small.x86", json={"rule": {"memory_min_gib": 9, "memory_max_gib": 1}}
        ),
        422,
        "body.rule",
    )
    stored = ok(api.get("/api/v1/plans/c3.small.x86"))["rule"]
    assert {key: value for key, value in stored.items() if value not in (None, [])} == SMALL_RULE
    refused(api.get("/api/v1/plans/nope/check"), 404, "slug", "plan 'nope' not found")


def test_operating_systems_and_their_generated_template(api: httpx.Client) -> None:
    ok(api.post("/api/v1/plans", json=PLAN), 201)
    body = {
        "slug": "ubuntu_24_04",
        "name": "Ubuntu 24.04 LTS",
        "distro": "ubuntu",
        "version": "24.04",
        "provisionable_on": ["c3.small.x86", "m3.large.x86"],
        "image_url": "http://192.0.2.1:8080/noble.raw.gz",
        "image_checksum": CHECKSUM,
    }
    refused(
        api.post("/api/v1/operating-systems", json=body),
        422,
        "provisionable_on",
        "m3.large.x86",
    )
    assert ok(api.get("/api/v1/templates"))["count"] == 0, "nothing half-written"
    body["provisionable_on"] = ["c3.small.x86"]
    no_image = {key: value for key, value in body.items() if key != "image_url"}
    refused(api.post("/api/v1/operating-systems", json=no_image), 422, "image_url", "required")
    refused(
        api.post("/api/v1/operating-systems", json={**body, "image_checksum": "md5:00"}),
        422,
        "body.image_checksum",
    )
    refused(
        api.post("/api/v1/operating-systems", json={**body, "image_url": "ftp://x/{y}"}),
        422,
        "body.image_url",
        "http://",
    )

    created = ok(api.post("/api/v1/operating-systems", json=body), 201)
    assert (created["template"], created["install_template"]) == (None, "os-ubuntu_24_04")
    data = ok(api.get("/api/v1/templates/os-ubuntu_24_04"))["data"]
    assert "http://192.0.2.1:8080/noble.raw.gz" in data and CHECKSUM in data
    assert "metadata_urls" in data and ":50061" in data

    moved = ok(
        api.patch(
            "/api/v1/operating-systems/ubuntu_24_04",
            json={"image_url": "http://192.0.2.1:8080/noble2.raw.gz"},
        )
    )
    assert moved["image_url"].endswith("noble2.raw.gz")
    data = ok(api.get("/api/v1/templates/os-ubuntu_24_04"))["data"]
    assert "noble2.raw.gz" in data, "the generated template follows the OS"

    refused(
        api.patch("/api/v1/operating-systems/ubuntu_24_04", json={"template": "mine"}),
        422,
        "template",
        "does not exist",
    )
    refused(
        api.patch("/api/v1/operating-systems/ubuntu_24_04", json={"template": "os-ubuntu_24_04"}),
        422,
        "template",
        "generated install template",
    )
    ok(apply(api, simple_template("mine")))
    own = ok(api.patch("/api/v1/operating-systems/ubuntu_24_04", json={"template": "mine"}))
    assert own["install_template"] == "mine"
    refused(api.get("/api/v1/templates/os-ubuntu_24_04"), 404, "template")
    back = ok(api.patch("/api/v1/operating-systems/ubuntu_24_04", json={"template": None}))
    assert back["install_template"] == "os-ubuntu_24_04"
    ok(api.get("/api/v1/templates/os-ubuntu_24_04"))

    refused(api.delete("/api/v1/plans/c3.small.x86"), 409, "slug", "ubuntu_24_04")
    ok(api.delete("/api/v1/operating-systems/ubuntu_24_04"), 204)
    refused(api.get("/api/v1/templates/os-ubuntu_24_04"), 404, "template")
    ok(api.delete("/api/v1/plans/c3.small.x86"), 204)


def test_capacity_counts_free_ready_machines(live: LiveServer, api: httpx.Client) -> None:
    ok(api.post("/api/v1/metros", json={"code": "am", "name": "Amsterdam", "country": "NL"}), 201)
    ok(api.post("/api/v1/metros", json={"code": "sv", "name": "Sunnyvale", "country": "US"}), 201)
    ok(api.post("/api/v1/plans", json=PLAN), 201)
    machines(api, "free1", "free2", "taken1", "kept1", "fixing1")
    for name in ("free1", "free2", "taken1", "kept1", "fixing1"):
        hello(live, api, name, SMALL)
    with live.services.db.write() as session:
        owner = tenancy.create_user(session, "cap@example.com", "Cap")
        org = tenancy.create_organization(session, "cap", owner.id)
        project = tenancy.create_project(session, org.id, "web").id
        rows = {m.name: m for m in session.scalars(select(Machine))}
        rows["taken1"].project_id = project
        session.add(
            HardwareReservation(
                id=str(uuid.uuid4()), machine_id=rows["kept1"].id, project_id=project
            )
        )
    ok(api.post("/api/v1/machines/fixing1/transition", json={"event": "maintenance"}))
    found = ok(api.get("/api/v1/capacity"))
    assert [(i["metro"], i["plan"], i["available"]) for i in found["items"]] == [
        ("am", "c3.small.x86", 2),
        ("sv", "c3.small.x86", 0),
    ]


def test_what_devices_use_is_not_deleted(live: LiveServer, api: httpx.Client) -> None:
    ok(api.post("/api/v1/plans", json=PLAN), 201)
    os_body = {
        "slug": "debian_12",
        "name": "Debian 12",
        "distro": "debian",
        "version": "12",
        "provisionable_on": ["c3.small.x86"],
        "image_url": "http://192.0.2.1:8080/bookworm.raw",
    }
    os_row = ok(api.post("/api/v1/operating-systems", json=os_body), 201)
    with live.services.db.write() as session:
        owner = tenancy.create_user(session, "dev@example.com", "Dev")
        org = tenancy.create_organization(session, "dev", owner.id)
        project = tenancy.create_project(session, org.id, "web").id
        plan_id = ok(api.get("/api/v1/plans/c3.small.x86"))["id"]
        session.add(
            Device(
                id=str(uuid.uuid4()),
                short_id="d0000001",
                project_id=project,
                hostname="web-1",
                plan_id=plan_id,
                metro="am",
                operating_system_id=os_row["id"],
                state="active",
            )
        )
    refused(api.delete("/api/v1/operating-systems/debian_12"), 409, "slug", "devices web-1")
    ok(api.patch("/api/v1/operating-systems/debian_12", json={"provisionable_on": []}))
    refused(api.delete("/api/v1/plans/c3.small.x86"), 409, "slug", "devices web-1")
    assert ok(api.get("/api/v1/plans/c3.small.x86"))["slug"] == "c3.small.x86"
