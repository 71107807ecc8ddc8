"""Reservations, elastic IPs and brought prefixes through the API, on SQLite and PostgreSQL, as
the provider and as tenants of two organizations see them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from metalflow.config import Settings
from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.errors import MetalflowError
from metalflow.events import Event
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import FreeBlock, IpBlock, Kind
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.policy import ProjectRole
from tests.integration.conftest import LiveServer, apply
from tests.manifests import machine_yaml

Json = dict[str, Any]
MACHINES = {
    "web1": ("web", "am"),
    "web2": ("web", "am"),
    "webda": ("web", "da"),
    "ops1": ("ops", "am"),
    "shop1": ("shop", "am"),
}
"""Machine name -> (project, metro)."""


@dataclass
class World:
    live: LiveServer
    provider: httpx.Client
    projects: dict[str, str]
    """Project name -> id: web and ops of organization acme, shop of globex."""
    machines: dict[str, str]
    """Machine name -> id."""
    keys: dict[str, str]
    """Project name -> a read-write project key."""

    def tenant(self, project: str) -> httpx.Client:
        return self.live.client(self.keys[project])

    def rows(self) -> tuple[int, int, int]:
        """Blocks, free blocks and events: what a refused request must leave as it was."""
        with self.live.services.db.read() as session:
            return (
                session.scalar(select(func.count()).select_from(IpBlock)) or 0,
                session.scalar(select(func.count()).select_from(FreeBlock)) or 0,
                session.scalar(select(func.count()).select_from(Event)) or 0,
            )

    def events(self, machine: str) -> list[tuple[str, str]]:
        with self.live.services.db.read() as session:
            found = session.scalars(
                select(Event)
                .where(Event.machine_id == self.machines[machine], Event.kind.like("ipam.%"))
                .order_by(Event.id)
            )
            return [(event.kind, str(event.data["cidr"])) for event in found]

    def sweep(self, after: dt.timedelta) -> int:
        with self.live.services.db.write() as session:
            return ipam.sweep_quarantine(session, now=utcnow() + after)


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def refused(response: httpx.Response, status: int, field: str | None) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["field"] == field, detail
    message: str = detail["message"]
    return message


@pytest.fixture
def world(live: LiveServer, api: httpx.Client) -> World:
    pools = [
        {"cidr": "198.51.100.0/24", "kind": "public", "metro": "am"},
        {"cidr": "10.20.0.0/16", "kind": "private", "metro": "am"},
        {"cidr": "2001:db8:100::/48", "kind": "public", "metro": "am"},
        {"cidr": "203.0.113.0/28", "kind": "public", "metro": "da"},
    ]
    for pool in pools:
        ok(api.post("/api/v1/ipam/prefixes", json=pool), 201)
    documents = [
        machine_yaml(name, f"52:54:00:00:d0:{index:02x}") for index, name in enumerate(MACHINES)
    ]
    assert apply(api, "---\n".join(documents)).status_code == 200
    with live.services.db.write() as session:
        ada = tenancy.create_user(session, "ada@example.test", "Ada")
        acme = tenancy.create_organization(session, "acme", ada.id)
        globex = tenancy.create_organization(session, "globex", ada.id)
        projects = {
            "web": tenancy.create_project(session, acme.id, "web").id,
            "ops": tenancy.create_project(session, acme.id, "ops").id,
            "shop": tenancy.create_project(session, globex.id, "shop").id,
        }
        machines = {}
        for machine in session.scalars(select(Machine)):
            project, metro = MACHINES[machine.name]
            machine.project_id = projects[project]
            machine.metro = metro
            machines[machine.name] = machine.id
        keys = {
            name: tenancy.create_key(session, name, now=utcnow(), project_id=project_id).secret
            for name, project_id in projects.items()
        }
    return World(live, api, projects, machines, keys)


def reserve(client: httpx.Client, project: str, **fields: object) -> httpx.Response:
    body = {"project": project, "kind": "public", "family": 4, "size": 29, "metro": "am", **fields}
    return client.post("/api/v1/ipam/reservations", json=body)


def assign(client: httpx.Client, reservation: str, **body: object) -> httpx.Response:
    return client.post(f"/api/v1/ipam/reservations/{reservation}/assignments", json=body)


def test_reserve_assign_move_unassign_release(world: World) -> None:
    web = world.tenant("web")
    reservation = ok(reserve(web, world.projects["web"]), 201)
    block = ipaddress.IPv4Network(reservation["cidr"])
    assert block.subnet_of(ipaddress.IPv4Network("198.51.100.0/24")) and block.prefixlen == 29
    assert (reservation["status"], reservation["project"], reservation["metro"]) == (
        "reservation",
        world.projects["web"],
        "am",
    )
    assert reservation["usage"]["free"] == 8 and reservation["assignments"] == []

    fifth = str(block.network_address + 5)
    single = ok(assign(web, reservation["id"], machine="web1", address=fifth), 201)
    assert (single["cidr"], single["address"], single["gateway"]) == (f"{fifth}/32", fifth, None)
    assert single["machine"] == world.machines["web1"] and single["elastic"] is True
    pair = ok(assign(web, reservation["cidr"], machine=world.machines["web2"], size=31), 201)
    assert pair["cidr"] == f"{block.network_address}/31"
    assert pair["gateway"] == str(block.network_address)
    assert pair["address"] == str(block.network_address + 1)

    listed = ok(web.get("/api/v1/ipam/assignments", params={"machine": "web1"}))
    assert [item["cidr"] for item in listed["items"]] == [f"{fifth}/32"]
    shown = ok(web.get(f"/api/v1/ipam/reservations/{reservation['id']}"))
    assert sorted(item["cidr"] for item in shown["assignments"]) == sorted(
        [f"{fifth}/32", pair["cidr"]]
    )
    assert shown["usage"]["allocated"] == 3

    moved = ok(web.patch(f"/api/v1/ipam/assignments/{single['id']}", json={"machine": "web2"}))
    assert moved["machine"] == world.machines["web2"] and moved["cidr"] == f"{fifth}/32"
    assert world.events("web1") == [
        ("ipam.assigned", f"{fifth}/32"),
        ("ipam.unassigned", f"{fifth}/32"),
    ]
    assert world.events("web2") == [
        ("ipam.assigned", pair["cidr"]),
        ("ipam.assigned", f"{fifth}/32"),
    ]
    on_web2 = ok(web.get("/api/v1/ipam/assignments", params={"machine": "web2"}))
    assert on_web2["count"] == 2

    busy = web.delete(f"/api/v1/ipam/reservations/{reservation['id']}")
    assert "still has 2 assignment(s): unassign them first" in refused(busy, 409, "id")

    assert web.delete(f"/api/v1/ipam/assignments/{single['id']}").status_code == 204
    assert world.events("web2")[-1] == ("ipam.unassigned", f"{fifth}/32")
    after = ok(web.get(f"/api/v1/ipam/reservations/{reservation['id']}"))
    assert after["usage"]["allocated"] == 2, "unassigned space is free in the reservation at once"
    again = ok(assign(web, reservation["id"], machine="web1", address=fifth), 201)
    assert web.delete(f"/api/v1/ipam/assignments/{again['id']}").status_code == 204
    assert web.delete(f"/api/v1/ipam/assignments/{pair['id']}").status_code == 204

    assert web.delete(f"/api/v1/ipam/reservations/{reservation['id']}").status_code == 204
    assert web.get(f"/api/v1/ipam/reservations/{reservation['id']}").status_code == 404
    quarantined = ok(world.provider.get("/api/v1/ipam/prefixes", params={"status": "quarantine"}))
    assert [item["cidr"] for item in quarantined["items"]] == [reservation["cidr"]]


def test_released_space_is_quarantined_before_anyone_reserves_it(world: World) -> None:
    web, shop = world.tenant("web"), world.tenant("shop")
    whole = ok(reserve(web, world.projects["web"], size=28, metro="da"), 201)
    assert whole["cidr"] == "203.0.113.0/28"
    assert web.delete(f"/api/v1/ipam/reservations/{whole['id']}").status_code == 204

    before = world.rows()
    full = reserve(shop, world.projects["shop"], size=29, metro="da")
    message = refused(full, 409, "size")
    assert "203.0.113.0/28 100.0% used" in message and "reserve a smaller block" in message
    assert world.rows() == before

    assert world.sweep(dt.timedelta(minutes=59)) == 0
    assert reserve(shop, world.projects["shop"], size=29, metro="da").status_code == 409
    assert world.sweep(dt.timedelta(hours=1, seconds=1)) == 1
    reused = ok(reserve(shop, world.projects["shop"], size=29, metro="da"), 201)
    assert reused["cidr"] == "203.0.113.0/29" and reused["project"] == world.projects["shop"]


def test_tenants_see_and_use_only_their_projects_reservations_and_machines(world: World) -> None:
    web, shop = world.tenant("web"), world.tenant("shop")
    mine = ok(reserve(web, world.projects["web"]), 201)
    ok(assign(web, mine["id"], machine="web1", size=32), 201)
    theirs = ok(reserve(shop, world.projects["shop"]), 201)

    ghost = shop.get("/api/v1/ipam/reservations/0123456789abcdef0123456789abcdef").json()
    hidden = shop.get(f"/api/v1/ipam/reservations/{mine['id']}")
    assert hidden.status_code == 404
    assert hidden.json()["detail"]["message"] == ghost["detail"]["message"].replace(
        "0123456789abcdef0123456789abcdef", mine["id"]
    )
    assert [r["id"] for r in ok(shop.get("/api/v1/ipam/reservations"))["items"]] == [theirs["id"]]
    provider_view = ok(world.provider.get("/api/v1/ipam/reservations"))
    assert {r["id"] for r in provider_view["items"]} == {mine["id"], theirs["id"]}

    before = world.rows()
    refused(assign(shop, mine["id"], machine="shop1", size=32), 404, "id")
    refused(shop.delete(f"/api/v1/ipam/reservations/{mine['id']}"), 404, "id")
    stranger = refused(assign(web, mine["id"], machine="shop1", size=32), 404, "machine")
    nobody = refused(assign(web, mine["id"], machine="nosuch", size=32), 404, "machine")
    assert stranger == nobody.replace("nosuch", "shop1")
    by_provider = assign(world.provider, mine["id"], machine="shop1", size=32)
    assert refused(by_provider, 404, "machine") == stranger
    assert ok(shop.get("/api/v1/ipam/assignments"))["count"] == 0
    web_assignment = ok(web.get("/api/v1/ipam/assignments"))["items"][0]
    refused(shop.delete(f"/api/v1/ipam/assignments/{web_assignment['id']}"), 404, "id")
    move = shop.patch(f"/api/v1/ipam/assignments/{web_assignment['id']}", json={"machine": "shop1"})
    refused(move, 404, "id")
    steal = web.patch(f"/api/v1/ipam/assignments/{web_assignment['id']}", json={"machine": "shop1"})
    refused(steal, 404, "machine")
    assert world.rows() == before

    prefixes = ok(shop.get("/api/v1/ipam/prefixes"))
    assert [p["cidr"] for p in prefixes["items"]] == [theirs["cidr"]]
    assert shop.get(f"/api/v1/ipam/prefixes/{mine['id']}").status_code == 404
    assert shop.get(f"/api/v1/ipam/prefixes/{mine['cidr']}/usage").status_code == 404
    assert ok(web.get(f"/api/v1/ipam/prefixes/{mine['cidr']}/usage"))["allocated"] == 1
    pool = shop.get("/api/v1/ipam/prefixes/198.51.100.0/24")
    assert pool.status_code == 404 and "no prefix '198.51.100.0/24'" in pool.text


def test_a_brought_prefix_serves_its_project_and_allow_list_only(world: World) -> None:
    projects = world.projects
    body = {
        "cidr": "192.0.2.0/28",
        "project": projects["web"],
        "allowed_projects": [projects["ops"]],
        "metro": "da",
    }
    before = world.rows()
    foreign = {**body, "allowed_projects": [projects["shop"]]}
    message = refused(
        world.provider.post("/api/v1/ipam/byo", json=foreign), 422, "allowed_projects"
    )
    assert "another organization" in message
    inside_pool = {**body, "cidr": "198.51.100.128/25"}
    refused(world.provider.post("/api/v1/ipam/byo", json=inside_pool), 409, "cidr")
    refused(world.tenant("web").post("/api/v1/ipam/byo", json=body), 403, None)
    assert world.rows() == before

    byo = ok(world.provider.post("/api/v1/ipam/byo", json=body), 201)
    assert byo["byo"] is True and byo["allowed_projects"] == [projects["ops"]]
    assert byo["status"] == "reservation" and byo["parent"] is None

    ops = world.tenant("ops")
    assert [r["id"] for r in ok(ops.get("/api/v1/ipam/reservations"))["items"]] == [byo["id"]]
    refused(assign(ops, byo["id"], machine="ops1", size=32), 422, "machine")  # ops1 is in am
    with world.live.services.db.write() as session:
        machine = session.get(Machine, world.machines["ops1"])
        assert machine is not None
        machine.metro = "da"
    given = ok(assign(ops, byo["id"], machine="ops1", size=32), 201)
    assert given["project"] == projects["ops"] and given["cidr"] == "192.0.2.0/32"
    refused(assign(world.tenant("web"), byo["id"], machine="ops1", size=32), 404, "machine")
    assert world.tenant("shop").get(f"/api/v1/ipam/reservations/{byo['id']}").status_code == 404

    shop = world.tenant("shop")
    taken: list[ipaddress.IPv4Network] = []
    for size in (29, 30, 31, 32, 32, 32):
        answer = reserve(shop, projects["shop"], size=size, metro="da")
        if answer.status_code == 201:
            taken.append(ipaddress.IPv4Network(answer.json()["cidr"]))
        else:
            refused(answer, 409, "size")
    assert sum(block.num_addresses for block in taken) == 16, "the da pool is used up"
    assert reserve(shop, projects["shop"], size=32, metro="da").status_code == 409
    listed = ok(shop.get("/api/v1/ipam/reservations"))["items"]
    assert sorted(ipaddress.IPv4Network(item["cidr"]) for item in listed) == sorted(taken)
    brought = ipaddress.ip_network("192.0.2.0/28")
    assert not [block for block in taken if block.overlaps(brought)]
    grab = {"prefixlen": 32, "project": projects["shop"]}
    refused(
        world.provider.post(f"/api/v1/ipam/prefixes/{byo['id']}/allocations", json=grab),
        422,
        "project",
    )

    refused(world.tenant("web").delete(f"/api/v1/ipam/reservations/{byo['id']}"), 403, None)
    assert "the provider removes it" in refused(
        ops.delete(f"/api/v1/ipam/reservations/{byo['id']}"), 403, None
    )
    assert ops.delete(f"/api/v1/ipam/assignments/{given['id']}").status_code == 204
    assert world.provider.delete(f"/api/v1/ipam/reservations/{byo['id']}").status_code == 204
    assert world.provider.get("/api/v1/ipam/prefixes/192.0.2.0/28").status_code == 404


def test_bad_input_names_the_field_and_writes_nothing(world: World) -> None:
    web = world.tenant("web")
    reservation = ok(reserve(web, world.projects["web"]), 201)
    block = ipaddress.ip_network(reservation["cidr"])
    first = ok(assign(web, reservation["id"], machine="web1", size=32), 201)
    rid = reservation["id"]

    def check(send: Callable[[], httpx.Response], status: int, field: str, words: str) -> None:
        before = world.rows()
        assert words in refused(send(), status, field)
        assert world.rows() == before

    outside = str(block.broadcast_address + 1)
    check(
        lambda: assign(web, rid, machine="web1", address=outside),
        422,
        "address",
        "is outside reservation",
    )
    check(
        lambda: assign(web, rid, machine="web2", address=str(block.network_address)),
        409,
        "address",
        f"overlaps {first['cidr']}",
    )
    check(
        lambda: assign(web, rid, machine="web1", address=f"{block.network_address + 1}/30"),
        422,
        "address",
        "has host bits set",
    )
    check(
        lambda: assign(web, rid, machine="web1", address="a.b.c.d"), 422, "address", "no CIDR block"
    )
    check(
        lambda: assign(web, rid, machine="web1", size=28),
        422,
        "size",
        "does not fit in reservation",
    )
    check(
        lambda: assign(web, rid, machine="web1", size=31, address=str(block[2])),
        422,
        "address",
        "not both",
    )
    check(lambda: assign(web, rid, machine="webda", size=32), 422, "machine", "stands in metro da")
    check(lambda: web.delete(f"/api/v1/ipam/reservations/{rid}"), 409, "id", "unassign them first")
    check(lambda: reserve(web, world.projects["web"], size=24), 422, "size", "use one of /28")
    check(
        lambda: reserve(web, world.projects["web"], kind="global"),
        422,
        "kind",
        "reserve public or private",
    )
    check(
        lambda: reserve(web, world.projects["web"], metro="zz"),
        422,
        "metro",
        "use a metro that has one (am, da)",
    )
    check(lambda: reserve(web, world.projects["web"], family=6, size=60), 422, "size", "/56, /64")
    check(
        lambda: reserve(world.provider, "nosuchproject"),
        404,
        "project",
        "no project 'nosuchproject'",
    )
    check(lambda: reserve(web, world.projects["shop"]), 404, "project", "no project")
    with_sizes = reserve(world.provider, world.projects["web"], size=24)
    assert with_sizes.status_code == 409 and "198.51.100.0/24" in with_sizes.text
    for _ in range(7):
        ok(assign(web, rid, machine="web2", size=32), 201)
    exhausted = f"no free /32 in {block} (100.0% used"
    check(lambda: assign(web, rid, machine="web2", size=32), 409, "size", exhausted)


def test_a_machine_leaving_gives_its_elastic_addresses_back_and_keeps_its_per_host_ones(
    world: World,
) -> None:
    web = world.tenant("web")
    reservation = ok(reserve(web, world.projects["web"]), 201)
    for _ in range(2):
        ok(assign(web, reservation["id"], machine="web1", size=32), 201)
    per_host = {
        "prefixlen": 31,
        "project": world.projects["web"],
        "machine": world.machines["web1"],
    }
    pool = world.provider.post("/api/v1/ipam/prefixes/10.20.0.0/16/allocations", json=per_host)
    private = ok(pool, 201)

    with world.live.services.db.write() as session:
        assert ipam.unassign_machine(session, world.machines["web1"]) == 2
    left = ok(web.get("/api/v1/ipam/assignments", params={"machine": "web1"}))["items"]
    assert [(item["cidr"], item["elastic"]) for item in left] == [(private["cidr"], False)]
    assert [kind for kind, _ in world.events("web1")].count("ipam.unassigned") == 2
    shown = ok(web.get(f"/api/v1/ipam/reservations/{reservation['id']}"))
    assert shown["usage"]["allocated"] == 0 and shown["assignments"] == []
    not_elastic = web.delete(f"/api/v1/ipam/assignments/{private['id']}")
    assert "per-host address from a pool" in refused(not_elastic, 422, "id")


Step = tuple[str, int, int]
"""(operation, which project or block, size)."""
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "assign", "unassign", "release", "steal", "cross"]),
        st.integers(0, 7),
        st.integers(28, 32),
    ),
    max_size=25,
)


def test_any_sequence_keeps_reservations_inside_their_pools_and_byo_with_its_project(
    settings: Settings,
) -> None:
    """For any sequence of reserving, assigning, unassigning, releasing and trying another
    project's brought prefix: reservations stay inside the pool, assignments inside their
    reservation and on their project's machines, the brought prefix goes to its project only,
    and every refused step leaves the database as it was."""
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.database_url)
    upgrade(db)
    pool = ipaddress.IPv4Network("198.51.100.0/26")
    brought = ipaddress.IPv4Network("192.0.2.0/28")
    with db.write() as session:
        owner = tenancy.create_user(session, "ada@example.test", "Ada")
        org = tenancy.create_organization(session, "acme", owner.id)
        projects = [tenancy.create_project(session, org.id, name).id for name in ("web", "shop")]
        for index, project in enumerate(projects):
            session.add(
                Machine(
                    id=f"m{index}", name=f"m{index}", state="ready", project_id=project, metro="am"
                )
            )
    try:

        @hyp_settings(max_examples=25, deadline=None)
        @given(steps=STEPS)
        def run(steps: list[Step]) -> None:
            with db.write() as session:
                ipam.create_prefix(session, ipam.PrefixSpec(str(pool), metro="am"))
                byo = ipam.import_byo(session, str(brought), projects[0], metro="am").id
            try:
                for operation, which, size in steps:
                    attempt(db, projects, byo, operation, which, size)
                    check_invariants(db, projects, pool, brought)
            finally:
                empty_ipam(db)

        run()
    finally:
        db.dispose()


def empty_ipam(db: Database) -> None:
    """Children before their parents: a block's parent key restricts deletes."""
    with db.write() as session:
        session.execute(delete(FreeBlock))
        for status in ("assignment", "quarantine", "reservation", "pool"):
            session.execute(delete(IpBlock).where(IpBlock.status == status))


def table_rows(db: Database) -> tuple[int, int]:
    with db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(IpBlock)) or 0,
            session.scalar(select(func.count()).select_from(FreeBlock)) or 0,
        )


def attempt(
    db: Database, projects: list[str], byo: str, operation: str, which: int, size: int
) -> None:
    """One step; a refusal must be a MetalflowError that wrote nothing."""
    before = table_rows(db)
    try:
        with db.write() as session:
            reservations = ipam.list_reservations(session, visible=None)
            assignments = ipam.list_assignments(session, visible=None)
            if operation == "reserve":
                project = projects[which % 2]
                ipam.reserve(session, project, Kind.PUBLIC, 4, size, "am", by_tenant=False)
            elif operation == "assign" and reservations:
                reservation = reservations[which % len(reservations)]
                machine = f"m{projects.index(str(reservation.project_id))}"
                ipam.assign(session, reservation.id, machine, size=max(size, reservation.prefixlen))
            elif operation == "unassign" and assignments:
                ipam.unassign(session, assignments[which % len(assignments)].id)
            elif operation == "release" and reservations:
                reservation = reservations[which % len(reservations)]
                ipam.release_reservation(session, reservation.id, quarantine=dt.timedelta(hours=1))
            elif operation == "cross" and reservations:
                reservation = reservations[which % len(reservations)]
                other = f"m{1 - projects.index(str(reservation.project_id))}"
                ipam.assign(session, reservation.id, other, size=32)
                raise AssertionError("a reservation's address went to another project's machine")
            elif operation == "steal":
                ipam.assign(session, byo, "m1", size=32)
                raise AssertionError("project shop was given an address of web's brought prefix")
    except MetalflowError:
        assert table_rows(db) == before


def check_invariants(
    db: Database,
    projects: list[str],
    pool: ipaddress.IPv4Network,
    brought: ipaddress.IPv4Network,
) -> None:
    with db.read() as session:
        blocks = {block.id: block for block in session.scalars(select(IpBlock))}
        for block in blocks.values():
            network = ipaddress.IPv4Network(block.cidr)
            parent = blocks.get(block.parent_id or "")
            if block.status in ("reservation", "quarantine") and not block.byo:
                assert parent is not None and network.subnet_of(ipaddress.IPv4Network(parent.cidr))
                assert network.subnet_of(pool) and not network.overlaps(brought)
            if block.status == "assignment":
                assert parent is not None and parent.status == "reservation"
                assert network.subnet_of(ipaddress.IPv4Network(parent.cidr))
                machine = session.get(Machine, block.machine_id)
                assert machine is not None and machine.project_id == parent.project_id
                if parent.byo:
                    assert block.project_id == projects[0]
            if block.status in ("pool", "reservation"):
                figures = ipam.stats(session, block)
                children = [b for b in blocks.values() if b.parent_id == block.id]
                given = sum(ipaddress.IPv4Network(child.cidr).num_addresses for child in children)
                assert figures.allocated == given


def test_a_viewer_sees_a_reservation_but_changes_nothing(world: World) -> None:
    reservation = ok(reserve(world.tenant("web"), world.projects["web"]), 201)
    given = ok(assign(world.tenant("web"), reservation["id"], machine="web1", size=32), 201)
    with world.live.services.db.write() as session:
        viewer = tenancy.create_user(session, "val@example.test", "Val")
        tenancy.add_project_member(session, world.projects["web"], viewer.id, ProjectRole.VIEWER)
        key = tenancy.create_key(session, "val", now=utcnow(), user_id=viewer.id).secret
    val = world.live.client(key)
    assert ok(val.get(f"/api/v1/ipam/reservations/{reservation['id']}"))["usage"]["allocated"] == 1
    before = world.rows()
    for refusal in (
        reserve(val, world.projects["web"]),
        assign(val, reservation["id"], machine="web2", size=32),
        val.patch(f"/api/v1/ipam/assignments/{given['id']}", json={"machine": "web2"}),
        val.delete(f"/api/v1/ipam/assignments/{given['id']}"),
        val.delete(f"/api/v1/ipam/reservations/{reservation['id']}"),
    ):
        assert "needs the project role editor (you are viewer)" in refused(refusal, 403, None)
    assert world.rows() == before


def test_a_prefix_created_as_brought_gets_the_checks_of_an_import(world: World) -> None:
    projects = world.projects
    body = {"cidr": "192.0.2.0/28", "kind": "public", "byo": True, "project": projects["web"]}
    before = world.rows()
    prefixes = "/api/v1/ipam/prefixes"
    refused(world.provider.post(prefixes, json={**body, "project": None}), 422, "project")
    foreign = {**body, "allowed_projects": [projects["shop"]]}
    assert "another organization" in refused(
        world.provider.post(prefixes, json=foreign), 422, "allowed_projects"
    )
    inside = {**body, "cidr": "198.51.100.128/25"}
    assert "bring a prefix outside every pool" in refused(
        world.provider.post(prefixes, json=inside), 409, "cidr"
    )
    pool_with_list = {"cidr": "192.0.2.0/28", "allowed_projects": [projects["ops"]]}
    refused(world.provider.post(prefixes, json=pool_with_list), 422, "allowed_projects")
    unknown = {"cidr": "192.0.2.0/28", "project": "no-such-project"}
    refused(world.provider.post(prefixes, json=unknown), 404, "project")
    assert world.rows() == before
    brought = ok(world.provider.post(prefixes, json=body), 201)
    assert (brought["status"], brought["byo"], brought["parent"]) == ("reservation", True, None)
    around = {"cidr": "192.0.2.0/24", "kind": "public"}
    assert "is a brought prefix" in refused(
        world.provider.post(prefixes, json=around), 409, "cidr"
    ), "a pool may not take a tenant's prefix in"


def test_concurrent_imports_of_overlapping_prefixes_leave_one(world: World) -> None:
    """Every import reads "no overlap" before any commits; the database refuses all but one
    (PostgreSQL: the exclusion constraint at commit; SQLite: one writer at a time)."""
    cidrs = [f"192.0.2.0/{size}" for size in (25, 26, 27, 28, 29)] * 2
    barrier = threading.Barrier(len(cidrs))

    def bring(cidr: str) -> int:
        with world.live.client() as client:
            barrier.wait(timeout=30)
            body = {"cidr": cidr, "project": world.projects["web"]}
            return client.post("/api/v1/ipam/byo", json=body).status_code

    with ThreadPoolExecutor(len(cidrs)) as pool:
        statuses = list(pool.map(bring, cidrs))
    assert sorted(statuses) == [201] + [409] * (len(cidrs) - 1), statuses
    with world.live.services.db.read() as session:
        brought = session.scalars(select(IpBlock.cidr).where(IpBlock.byo.is_(True))).all()
    assert len(brought) == 1
