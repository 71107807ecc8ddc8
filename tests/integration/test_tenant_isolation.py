"""Two tenants side by side, on SQLite and PostgreSQL: each sees and drives only the machines
assigned to its project, with their workflows, power jobs and events, as its role allows;
everything of the other is the very 404 of a thing that does not exist. The provider assigns
machines and sees all."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from typer.testing import CliRunner

from metalflow.cli import app
from metalflow.db.base import utcnow
from metalflow.events import ASSIGNED, Event, EventFilter, list_events, prune_events, replay
from metalflow.tenancy import service
from metalflow.tenancy.policy import ProjectRole
from tests.integration.conftest import LiveServer, apply
from tests.manifests import machine_yaml, simple_template

Json = dict[str, Any]


@dataclass(frozen=True)
class World:
    """Project A (org acme) with machine a1, project B (org globex) with machine b1, and c1,
    still the provider's; a key of each kind of caller."""

    project_a: str
    project_b: str
    keys: dict[str, str]
    """a_owner (user key, owner of A through its org), a_project (project key: editor),
    a_viewer (user key, viewer of A), a_read_only (read-only key of A's owner), b_owner."""


def fake_bmc_machine(name: str, mac: str) -> str:
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  interfaces: [{{mac: "{mac}"}}]
  bmc: {{driver: fake, address: fake-{uuid.uuid4().hex[:8]}, username: admin, password: pw}}
"""


def assign(api: httpx.Client, machine: str, project: str | None) -> httpx.Response:
    return api.put(f"/api/v1/machines/{machine}/project", json={"project": project})


@pytest.fixture
def world(live: LiveServer, api: httpx.Client) -> World:
    manifests = [
        fake_bmc_machine("a1", "52:54:00:00:f0:01"),
        fake_bmc_machine("b1", "52:54:00:00:f0:02"),
        machine_yaml("c1", "52:54:00:00:f0:03"),
        simple_template(count=1),
    ]
    assert apply(api, "---\n".join(manifests)).status_code == 200
    now = utcnow()
    with live.services.db.write() as session:
        ada = service.create_user(session, "ada@acme.test", "Ada")
        vic = service.create_user(session, "vic@acme.test", "Vic")
        bob = service.create_user(session, "bob@globex.test", "Bob")
        acme = service.create_organization(session, "acme", ada.id)
        globex = service.create_organization(session, "globex", bob.id)
        project_a = service.create_project(session, acme.id, "web")
        project_b = service.create_project(session, globex.id, "web")
        service.add_project_member(session, project_a.id, vic.id, ProjectRole.VIEWER)
        keys = {
            "a_owner": service.create_key(session, "ada", now=now, user_id=ada.id),
            "a_project": service.create_key(session, "ci", now=now, project_id=project_a.id),
            "a_viewer": service.create_key(session, "vic", now=now, user_id=vic.id),
            "a_read_only": service.create_key(
                session, "ro", now=now, user_id=ada.id, read_only=True
            ),
            "b_owner": service.create_key(session, "bob", now=now, user_id=bob.id),
        }
        ids = project_a.id, project_b.id
    assert assign(api, "a1", ids[0]).status_code == 200
    assert assign(api, "b1", ids[1]).status_code == 200
    return World(ids[0], ids[1], {name: key.secret for name, key in keys.items()})


@pytest.fixture
def callers(live: LiveServer, world: World) -> Iterator[dict[str, httpx.Client]]:
    """A client for each of the world's keys, by the key's name."""
    clients = {name: live.client(key) for name, key in world.keys.items()}
    yield clients
    for client in clients.values():
        client.close()


def assert_hidden(
    client: httpx.Client, method: str, path: str, hidden: str, absent: str, **kwargs: Any
) -> None:
    """`path` with `hidden` (another tenant's) answers exactly as with `absent` (no such thing)."""
    seen = client.request(method, path.format(hidden), **kwargs)
    missing = client.request(method, path.format(absent), **kwargs)
    assert missing.status_code == 404, missing.text
    assert seen.status_code == 404, seen.text
    assert seen.json() == json.loads(missing.text.replace(absent, hidden))


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def test_the_provider_assigns_machines_to_projects_and_back(
    api: httpx.Client, world: World
) -> None:
    shown = api.get("/api/v1/machines/a1").json()
    assert shown["project_id"] == world.project_a
    assigned = api.get("/api/v1/events", params={"machine": "a1", "kind": "machine.assigned"})
    assert [e["data"] for e in assigned.json()["items"]] == [
        {"before": None, "after": world.project_a}
    ]
    assert names(api.get("/api/v1/machines", params={"project": world.project_b})) == ["b1"]
    assert names(api.get("/api/v1/machines")) == ["a1", "b1", "c1"]

    unknown = assign(api, "c1", "no-such-project")
    assert unknown.status_code == 404 and unknown.json()["detail"]["field"] == "project"
    empty = api.put("/api/v1/machines/c1/project", json={})
    assert empty.status_code == 422
    assert api.get("/api/v1/machines/c1").json()["project_id"] is None

    busy = api.post("/api/v1/machines/c1/provision", json={"template": "ubuntu", "power": False})
    assert busy.status_code == 201, busy.text
    refused = assign(api, "c1", world.project_a)
    assert refused.status_code == 409
    assert refused.json()["detail"]["field"] == "project"
    assert "cancel its workflow" in refused.json()["detail"]["message"]
    assert api.get("/api/v1/machines/c1").json()["project_id"] is None
    assert api.post(f"/api/v1/workflows/{busy.json()['id']}/cancel").status_code == 200

    back = assign(api, "a1", None)
    assert back.status_code == 200 and back.json()["project_id"] is None
    assert names(api.get("/api/v1/machines", params={"project": world.project_a})) == []


def test_a_tenant_sees_only_its_projects_machines(
    world: World, callers: dict[str, httpx.Client]
) -> None:
    for name in ("a_owner", "a_project", "a_viewer", "a_read_only"):
        tenant = callers[name]
        assert names(tenant.get("/api/v1/machines")) == ["a1"], name
        assert names(tenant.get("/api/v1/machines", params={"project": world.project_b})) == []
        a1 = tenant.get("/api/v1/machines/a1")
        assert a1.status_code == 200 and a1.json()["bmc"] is None, "the BMC is the provider's"
        for path in (
            "/api/v1/machines/{}",
            "/api/v1/machines/{}/power",
            "/api/v1/machines/{}/metadata-url",
        ):
            assert_hidden(tenant, "GET", path, "b1", "zz")
            assert_hidden(tenant, "GET", path, "c1", "zz")
        assert tenant.get("/api/v1/machines/a1/metadata-url").status_code == 200
    b_owner = callers["b_owner"]
    assert names(b_owner.get("/api/v1/machines")) == ["b1"]
    refused = b_owner.put("/api/v1/machines/b1/project", json={"project": None})
    assert refused.status_code == 403, "only the provider assigns machines"


def test_power_by_role_and_each_tenant_its_own_jobs(
    api: httpx.Client, callers: dict[str, httpx.Client]
) -> None:
    viewer = callers["a_viewer"]
    refused = viewer.post("/api/v1/machines/a1/power", json={"action": "on"})
    assert refused.status_code == 403 and "editor" in refused.json()["detail"]["message"]
    read_only = callers["a_read_only"]
    refused = read_only.post("/api/v1/machines/a1/power", json={"action": "on"})
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]["message"]

    editor = callers["a_project"]
    job = editor.post("/api/v1/machines/a1/power", json={"action": "on"}, params={"wait": 30})
    assert job.status_code == 202 and job.json()["state"] == "succeeded", job.text
    assert viewer.get("/api/v1/machines/a1/power").json()["state"] == "on"
    job_id = job.json()["id"]
    assert callers["a_owner"].get(f"/api/v1/power-jobs/{job_id}").json()["machine"] == "a1"
    b_owner = callers["b_owner"]
    assert_hidden(b_owner, "GET", "/api/v1/power-jobs/{}", job_id, uuid.uuid4().hex)
    assert_hidden(b_owner, "POST", "/api/v1/power-jobs/{}/cancel", job_id, uuid.uuid4().hex)
    assert_hidden(editor, "POST", "/api/v1/machines/{}/power", "b1", "zz", json={"action": "off"})
    assert_hidden(
        editor, "POST", "/api/v1/machines/{}/boot-device", "b1", "zz", json={"device": "pxe"}
    )
    assert api.get(f"/api/v1/power-jobs/{job_id}").status_code == 200, "the provider sees all"


def test_provision_and_workflows_stay_in_their_project(
    api: httpx.Client, callers: dict[str, httpx.Client]
) -> None:
    editor = callers["a_project"]
    viewer = callers["a_viewer"]
    b_owner = callers["b_owner"]
    body = {"template": "ubuntu", "power": False}
    refused = viewer.post("/api/v1/machines/a1/provision", json=body)
    assert refused.status_code == 403 and "editor" in refused.json()["detail"]["message"]
    assert_hidden(editor, "POST", "/api/v1/machines/{}/provision", "b1", "zz", json=body)
    started = editor.post("/api/v1/machines/a1/provision", json=body)
    assert started.status_code == 201, started.text
    mine = started.json()["id"]
    theirs = b_owner.post("/api/v1/machines/b1/provision", json=body)
    assert theirs.status_code == 201, theirs.text

    assert [w["id"] for w in viewer.get("/api/v1/workflows").json()["items"]] == [mine]
    assert [w["id"] for w in b_owner.get("/api/v1/workflows").json()["items"]] == [
        theirs.json()["id"]
    ]
    assert api.get("/api/v1/workflows").json()["count"] == 2
    absent = uuid.uuid4().hex
    for method, path in (
        ("GET", "/api/v1/workflows/{}"),
        ("POST", "/api/v1/workflows/{}/cancel"),
        ("POST", "/api/v1/workflows/{}/rerun"),
    ):
        assert_hidden(b_owner, method, path, mine, absent)
    assert b_owner.get("/api/v1/workflows", params={"machine": "a1"}).status_code == 404
    assert viewer.post(f"/api/v1/workflows/{mine}/cancel").status_code == 403
    cancelled = editor.post(f"/api/v1/workflows/{mine}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    created = editor.post("/api/v1/workflows", json={"machine": "a1", "template": "ubuntu"})
    assert created.status_code == 201, created.text
    assert editor.delete(f"/api/v1/workflows/{mine}").status_code == 403, "the provider's record"


def test_events_are_each_tenants_own(api: httpx.Client, callers: dict[str, httpx.Client]) -> None:
    assert api.post("/api/v1/machines/b1/agent-token/rotate").status_code == 200
    for name in ("a_owner", "a_project", "a_viewer"):
        tenant = callers[name]
        assert tenant.get("/api/v1/events", params={"machine": "b1"}).json()["count"] == 0
        seen = tenant.get("/api/v1/events", params={"limit": 1000}).json()["items"]
        assert seen and {event["machine"] for event in seen} == {"a1"}
    everything = api.get("/api/v1/events", params={"limit": 1000}).json()["items"]
    assert {"a1", "b1", "c1"} <= {event["machine"] for event in everything}


def test_a_machine_s_next_tenant_sees_nothing_of_the_one_before(
    api: httpx.Client, world: World, callers: dict[str, httpx.Client]
) -> None:
    b_owner = callers["b_owner"]
    theirs = b_owner.post(
        "/api/v1/machines/b1/provision", json={"template": "ubuntu", "power": False}
    )
    assert theirs.status_code == 201, theirs.text
    assert b_owner.post(f"/api/v1/workflows/{theirs.json()['id']}/cancel").status_code == 200
    job = b_owner.post("/api/v1/machines/b1/power", json={"action": "on"}, params={"wait": 30})
    assert job.status_code == 202, job.text
    assert assign(api, "b1", world.project_a).status_code == 200

    a_owner = callers["a_owner"]
    assert names(a_owner.get("/api/v1/machines")) == ["a1", "b1"]
    assert a_owner.get("/api/v1/workflows", params={"machine": "b1"}).json()["count"] == 0
    assert_hidden(a_owner, "GET", "/api/v1/workflows/{}", theirs.json()["id"], uuid.uuid4().hex)
    assert_hidden(a_owner, "GET", "/api/v1/power-jobs/{}", job.json()["id"], uuid.uuid4().hex)
    assert a_owner.get("/api/v1/machines/b1/power").json()["jobs"] == []
    events = a_owner.get("/api/v1/events", params={"machine": "b1"}).json()["items"]
    assert [(e["kind"], e["data"]) for e in events] == [
        ("machine.assigned", {"before": None, "after": world.project_a})
    ], "nor the project it came from"
    provider = api.get("/api/v1/events", params={"machine": "b1", "kind": "machine.assigned"})
    assert provider.json()["items"][-1]["data"]["before"] == world.project_b
    assert names(b_owner.get("/api/v1/machines")) == []


def test_the_bound_outlives_the_pruned_assignment_event(
    live: LiveServer, api: httpx.Client, world: World, callers: dict[str, httpx.Client]
) -> None:
    b_owner = callers["b_owner"]
    theirs = b_owner.post(
        "/api/v1/machines/b1/provision", json={"template": "ubuntu", "power": False}
    )
    assert b_owner.post(f"/api/v1/workflows/{theirs.json()['id']}/cancel").status_code == 200
    job = b_owner.post("/api/v1/machines/b1/power", json={"action": "on"}, params={"wait": 30})
    assert job.status_code == 202, job.text
    assert assign(api, "b1", world.project_a).status_code == 200
    with live.services.db.write() as session:
        while prune_events(session, utcnow() + dt.timedelta(days=1)):
            pass
    assert api.get("/api/v1/events", params={"machine": "b1"}).json()["items"] == []

    a_owner = callers["a_owner"]
    assert_hidden(a_owner, "GET", "/api/v1/workflows/{}", theirs.json()["id"], uuid.uuid4().hex)
    assert_hidden(a_owner, "GET", "/api/v1/power-jobs/{}", job.json()["id"], uuid.uuid4().hex)
    assert a_owner.get("/api/v1/machines/b1/power").json()["jobs"] == []
    listed = a_owner.get("/api/v1/workflows").json()["items"]
    assert theirs.json()["id"] not in {item["id"] for item in listed}


def test_the_cli_assigns_and_lists_by_project(cli: CliRunner, world: World) -> None:
    assigned = cli.invoke(app, ["machine", "assign", "c1", "--project", world.project_a])
    assert assigned.exit_code == 0, assigned.output
    assert assigned.stdout == f"machine/c1 assigned to project {world.project_a}\n"
    listed = cli.invoke(app, ["-o", "json", "machine", "list", "--project", world.project_a])
    assert [m["name"] for m in json.loads(listed.stdout)["items"]] == ["a1", "c1"]
    unknown = cli.invoke(app, ["machine", "assign", "c1", "--project", "nope"])
    assert unknown.exit_code == 2
    assert unknown.stderr == "error: project 'nope' not found\n"
    back = cli.invoke(app, ["machine", "unassign", "c1"])
    assert back.stdout == "machine/c1 assigned to the provider\n"


def sse(response: httpx.Response) -> Iterator[Json]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def test_a_followed_stream_never_shows_another_tenants_events(
    live: LiveServer, api: httpx.Client, world: World
) -> None:
    """The stream's scope follows assignments: c1 is shown while it is A's, and not after."""
    start = api.get("/api/v1/events", params={"machine": "a1"}).json()["items"][0]["id"]
    with (
        live.client(world.keys["a_viewer"]) as tenant,
        tenant.stream(
            "GET", "/api/v1/events", params={"follow": "true", "after": start - 1}
        ) as response,
    ):
        assert response.status_code == 200
        events = sse(response)
        first = next(events)
        assert (first["machine"], first["kind"]) == ("a1", "machine.assigned")
        # The stream is scoped and live now: what follows is committed after it subscribed.
        rotate = "/api/v1/machines/{}/agent-token/rotate"
        assert api.post(rotate.format("b1")).status_code == 200
        assert assign(api, "c1", world.project_a).status_code == 200
        assert api.post(rotate.format("c1")).status_code == 200
        assert assign(api, "c1", world.project_b).status_code == 200
        assert api.post(rotate.format("c1")).status_code == 200
        assert api.post(rotate.format("b1")).status_code == 200
        assert api.post(rotate.format("a1")).status_code == 200
        seen = []
        for event in events:
            seen.append((event["machine"], event["kind"]))
            if event["machine"] == "a1":
                break
    assert seen == [
        ("c1", "machine.assigned"),
        ("c1", "machine.token_rotated"),
        ("a1", "machine.token_rotated"),
    ]


MACHINE_IDS = ("m-a", "m-b", "m-c")
KINDS = (ASSIGNED, "machine.state", "power.job.done", "workflow.action.started")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    made=st.lists(
        st.tuples(
            st.sampled_from((*MACHINE_IDS, None)),
            st.sampled_from(KINDS),
            st.sampled_from(("p-a", "p-b", None)),
        ),
        max_size=12,
    ),
    since=st.dictionaries(st.sampled_from(MACHINE_IDS), st.integers(0, 40)),
    machine=st.sampled_from((None, "m-a", "m-b")),
    kind=st.sampled_from((None, "machine.", "power", "%")),
)
def test_the_stored_log_and_a_live_stream_show_a_tenant_the_same_events(
    live: LiveServer,
    made: list[tuple[str | None, str, str | None]],
    since: dict[str, int],
    machine: str | None,
    kind: str | None,
) -> None:
    """`EventFilter.where` (the stored log, in SQL) and `matches` (the bus) agree."""
    with live.services.db.write() as session:
        session.add_all(
            Event(
                machine_id=machine_id,
                machine_name=machine_id,
                kind=kind_made,
                data={"before": None, "after": project},
            )
            for machine_id, kind_made, project in made
        )
    scoped = EventFilter(machine=machine, kind_prefix=kind, since=since)
    with live.services.db.read() as session:
        stored = [e.id for e in list_events(session, scoped, limit=10_000)]
        every = list(session.scalars(select(Event).order_by(Event.id)))
    assert stored == [e.id for e in every if scoped.matches(e)]


def test_a_scope_follows_a_machine_into_and_out_of_the_projects() -> None:
    """As the bus and `replay` see the log: c1 is shown from its assignment to A until it
    leaves, and an assignment older than one already applied changes nothing."""

    def event(event_id: int, kind: str, **data: str | None) -> Event:
        return Event(id=event_id, machine_id="c1", machine_name="c1", kind=kind, data=data)

    log = [
        event(1, "machine.token_rotated"),
        event(2, ASSIGNED, before=None, after="p-a"),
        event(3, "machine.token_rotated"),
        event(4, ASSIGNED, before="p-a", after="p-b"),
        event(5, "machine.token_rotated"),
    ]
    tenant = EventFilter(since={}, projects=frozenset({"p-a"}))
    after, shown = replay(tenant, log)
    assert [e.id for e in shown] == [2, 3]
    assert after.since == {} and after.latest == {"c1": 4}
    assert after.assigned("c1", 2, joined=True) is after, "a stale assignment"
    assert replay(EventFilter(), log)[1] == log, "the provider sees all"


def test_the_audit_of_a_machine_given_by_another_tenant_does_not_name_its_project(
    api: httpx.Client, world: World, callers: dict[str, httpx.Client]
) -> None:
    assert assign(api, "b1", world.project_a).status_code == 200
    provider_view = api.get("/api/v1/audit", params={"project": world.project_a}).json()
    moved = next(e for e in provider_view["items"] if e["action"].endswith("/project"))
    assert (moved["summary"]["before"], moved["summary"]["after"]) == (
        world.project_b,
        world.project_a,
    )
    seen = callers["a_owner"].get("/api/v1/audit").json()["items"]
    entry = next(e for e in seen if e["id"] == moved["id"])
    assert (entry["summary"]["before"], entry["summary"]["after"]) == (None, world.project_a)
    assert world.project_b not in callers["a_owner"].get("/api/v1/audit").text


def test_a_refused_tenancy_write_is_on_record(
    api: httpx.Client, world: World, callers: dict[str, httpx.Client]
) -> None:
    b_owner = callers["b_owner"]
    refused = b_owner.delete(f"/api/v1/projects/{world.project_a}")
    assert refused.status_code == 404, refused.text
    mine = b_owner.get("/api/v1/audit").json()["items"]
    assert mine[0]["action"] == "DELETE /api/v1/projects/{project_id}", mine[0]
    assert (mine[0]["result"], mine[0]["status"]) == ("error", 404)
