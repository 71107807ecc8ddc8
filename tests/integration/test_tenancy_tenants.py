"""The tenancy API as tenants use it, on SQLite and PostgreSQL: they found organizations, make
projects, manage members and keys and read their audit; tenant A learns nothing of tenant B (the
very 404 of an absent resource), and each role does what it should and no more."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner, Result

from metalflow.cli import app
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import Status
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.tables import AuditEntry
from tests.integration.conftest import LiveServer, apply
from tests.manifests import machine_yaml

PASSWORD = "correct horse battery"
Json = dict[str, Any]


def created(response: httpx.Response) -> Json:
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


@dataclass
class Person:
    id: str
    email: str
    key: str
    http: httpx.Client


@pytest.fixture
def people(live: LiveServer, api: httpx.Client) -> Iterator[dict[str, Person]]:
    """ada and bob (each to found an organization), carol and dave (to join them): users the
    provider made, each with a user key of their own."""
    found = {}
    for name in ("ada", "bob", "carol", "dave"):
        email = f"{name}@example.com"
        user = created(
            api.post("/api/v1/users", json={"email": email, "name": name, "password": PASSWORD})
        )
        key = created(api.post("/api/v1/keys", json={"name": "laptop", "user_id": user["id"]}))
        client = httpx.Client(
            base_url=live.url,
            headers={"Authorization": f"Bearer {key['secret']}"},
            timeout=30,
        )
        found[name] = Person(user["id"], email, key["secret"], client)
    try:
        yield found
    finally:
        for person in found.values():
            person.http.close()


def found_org(person: Person, org: str, project: str) -> tuple[str, str]:
    """`person` founds organization `org` with one project; their ids."""
    organization = created(person.http.post("/api/v1/organizations", json={"name": org}))
    made = created(
        person.http.post(
            f"/api/v1/organizations/{organization['id']}/projects", json={"name": project}
        )
    )
    return organization["id"], made["id"]


def absent(
    http: httpx.Client, method: str, path: str, real_id: str, body: Json | None = None
) -> None:
    """The request naming `real_id` (in its path or body) is answered exactly as the same
    request naming an id that exists nowhere."""
    missing = "0" * 32
    seen = http.request(method, path, json=body)
    elsewhere = None if body is None else json.loads(json.dumps(body).replace(real_id, missing))
    nothing = http.request(method, path.replace(real_id, missing), json=elsewhere)
    assert seen.status_code == 404, f"{method} {path}: {seen.status_code} {seen.text}"
    assert nothing.status_code == 404, f"{method} {path} (absent): {nothing.text}"
    assert (
        seen.json()["detail"]["message"].replace(real_id, missing)
        == (nothing.json()["detail"]["message"])
    )
    assert seen.json()["detail"]["field"] == nothing.json()["detail"]["field"]


def refused(response: httpx.Response, needed: str) -> None:
    assert response.status_code == 403, response.text
    assert needed in response.json()["detail"]["message"], response.text


def test_a_signed_in_user_founds_an_organization_and_owns_what_they_make(
    people: dict[str, Person],
) -> None:
    ada = people["ada"]
    org, web = found_org(ada, "acme", "web")
    listed = ada.http.get("/api/v1/organizations").json()
    assert [o["id"] for o in listed["items"]] == [org]
    members = ada.http.get(f"/api/v1/organizations/{org}/members").json()["items"]
    assert [(m["user_id"], m["role"]) for m in members] == [(ada.id, "owner")]
    project_members = ada.http.get(f"/api/v1/projects/{web}/members").json()["items"]
    assert [(m["user_id"], m["role"]) for m in project_members] == [(ada.id, "owner")]
    assert [p["id"] for p in ada.http.get("/api/v1/projects").json()["items"]] == [web]

    who = ada.http.get("/api/v1/whoami").json()
    assert who["user_id"] == ada.id and who["name"] == ada.email and who["role"] == "tenant"
    assert who["organizations"] == [{"id": org, "name": "acme", "role": "owner"}]
    assert who["projects"] == [{"id": web, "name": "web", "organization_id": org, "role": "owner"}]

    other_owner = ada.http.post(
        "/api/v1/organizations", json={"name": "beta", "owner_id": people["bob"].id}
    )
    assert other_owner.status_code == 403 and other_owner.json()["detail"]["field"] == "owner_id"
    project_key = created(ada.http.post("/api/v1/keys", json={"name": "ci", "project_id": web}))
    with httpx.Client(
        base_url=str(ada.http.base_url),
        headers={"Authorization": f"Bearer {project_key['secret']}"},
    ) as ci:
        refused(ci.post("/api/v1/organizations", json={"name": "gamma"}), "user key")
        assert ci.get("/api/v1/organizations").json() == {"items": [], "count": 0}
        assert [p["id"] for p in ci.get("/api/v1/projects").json()["items"]] == [web]
        assert ci.get("/api/v1/whoami").json()["projects"] == [
            {"id": web, "name": "web", "organization_id": org, "role": "editor"}
        ]


def test_tenant_a_sees_and_changes_nothing_of_tenant_b(people: dict[str, Person]) -> None:
    ada, bob = people["ada"], people["bob"]
    ada_org, web = found_org(ada, "acme", "web")
    bob_org, shop = found_org(bob, "bobco", "shop")
    bob_key = created(bob.http.post("/api/v1/keys", json={"name": "ci", "project_id": shop}))
    http = ada.http

    absent(http, "GET", f"/api/v1/organizations/{bob_org}", bob_org)
    absent(http, "GET", f"/api/v1/organizations/{bob_org}/members", bob_org)
    absent(http, "DELETE", f"/api/v1/organizations/{bob_org}", bob_org)
    absent(
        http,
        "POST",
        f"/api/v1/organizations/{bob_org}/members",
        bob_org,
        {"user_id": ada.id, "role": "owner"},
    )
    absent(
        http,
        "PATCH",
        f"/api/v1/organizations/{bob_org}/members/{bob.id}",
        bob_org,
        {"role": "member"},
    )
    absent(http, "DELETE", f"/api/v1/organizations/{bob_org}/members/{bob.id}", bob_org)
    absent(http, "POST", f"/api/v1/organizations/{bob_org}/projects", bob_org, {"name": "x"})
    absent(http, "GET", f"/api/v1/projects/{shop}", shop)
    absent(http, "DELETE", f"/api/v1/projects/{shop}", shop)
    absent(http, "GET", f"/api/v1/projects/{shop}/members", shop)
    absent(http, "POST", f"/api/v1/projects/{shop}/members", shop, {"user_id": ada.id})
    absent(http, "DELETE", f"/api/v1/projects/{shop}/members/{bob.id}", shop)
    absent(http, "POST", "/api/v1/keys", shop, {"name": "x", "project_id": shop})
    absent(http, "POST", "/api/v1/keys", bob.id, {"name": "x", "user_id": bob.id})
    absent(http, "GET", f"/api/v1/keys/{bob_key['id']}", bob_key["id"])
    absent(http, "DELETE", f"/api/v1/keys/{bob_key['id']}", bob_key["id"])
    absent(http, "GET", f"/api/v1/users/{bob.id}", bob.id)

    for path in ("/api/v1/organizations", "/api/v1/projects", "/api/v1/keys", "/api/v1/users"):
        text = http.get(path).text
        for secret_id in (bob_org, shop, bob_key["id"], bob.id):
            assert secret_id not in text, path
    assert http.get("/api/v1/projects", params={"organization": bob_org}).json()["count"] == 0
    assert http.get("/api/v1/keys", params={"project": shop}).json()["count"] == 0

    audit = http.get("/api/v1/audit")
    assert audit.status_code == 200
    naming_theirs = [
        entry
        for entry in audit.json()["items"]
        if shop in str(entry) or bob_org in str(entry) or bob.id in str(entry)
    ]
    assert naming_theirs, "ada's refused attempts are on record"
    assert all(
        entry["result"] == "error" and entry["actor_name"] == ada.email for entry in naming_theirs
    ), "the only entries naming bob's things are ada's own refused attempts at them"
    assert web in audit.text and ada_org in audit.text
    assert http.get("/api/v1/audit", params={"project": shop}).json() == {"items": [], "count": 0}
    assert bob.http.get(f"/api/v1/keys/{bob_key['id']}").status_code == 200, "bob still sees it"


def test_organization_roles_owner_admin_member(people: dict[str, Person]) -> None:
    ada, carol, dave = people["ada"], people["carol"], people["dave"]
    org, _ = found_org(ada, "acme", "web")
    members = f"/api/v1/organizations/{org}/members"
    created(ada.http.post(members, json={"user_id": carol.id, "role": "member"}))

    assert carol.http.get(f"/api/v1/organizations/{org}").status_code == 200
    assert [o["id"] for o in carol.http.get("/api/v1/organizations").json()["items"]] == [org]
    refused(carol.http.post(f"/api/v1/organizations/{org}/projects", json={"name": "x"}), "admin")
    refused(carol.http.post(members, json={"user_id": dave.id}), "admin")
    refused(carol.http.delete(f"/api/v1/organizations/{org}"), "admin")
    assert carol.http.get("/api/v1/projects").json()["count"] == 0, "no project of hers yet"

    assert ada.http.patch(f"{members}/{carol.id}", json={"role": "admin"}).status_code == 200
    shop = created(carol.http.post(f"/api/v1/organizations/{org}/projects", json={"name": "shop"}))
    assert [p["name"] for p in carol.http.get("/api/v1/projects").json()["items"]] == [
        "shop",
        "web",
    ], "an admin owns every project of the organization"
    assert shop["organization_id"] == org
    refused(carol.http.post(members, json={"user_id": dave.id, "role": "owner"}), "owner")
    created(carol.http.post(members, json={"user_id": dave.id, "role": "member"}))
    refused(carol.http.patch(f"{members}/{dave.id}", json={"role": "owner"}), "owner")
    refused(carol.http.patch(f"{members}/{ada.id}", json={"role": "member"}), "owner")
    refused(carol.http.delete(f"{members}/{ada.id}"), "owner")
    assert carol.http.delete(f"{members}/{dave.id}").status_code == 204

    last = ada.http.patch(f"{members}/{ada.id}", json={"role": "admin"})
    assert last.status_code == 409 and "make another member owner" in last.text
    leaving = ada.http.delete(f"{members}/{ada.id}")
    assert leaving.status_code == 409 and "last owner" in leaving.text
    assert ada.http.patch(f"{members}/{carol.id}", json={"role": "owner"}).status_code == 200
    assert ada.http.delete(f"{members}/{ada.id}").status_code == 204, "another owner remains"
    absent(ada.http, "GET", f"/api/v1/organizations/{org}", org)


def test_project_roles_and_members_from_the_organization(
    people: dict[str, Person], live: LiveServer, api: httpx.Client
) -> None:
    ada, carol, dave = people["ada"], people["carol"], people["dave"]
    org, web = found_org(ada, "acme", "web")
    members = f"/api/v1/projects/{web}/members"
    stranger = ada.http.post(members, json={"user_id": carol.id, "role": "viewer"})
    assert stranger.status_code == 422 and stranger.json()["detail"]["field"] == "user"
    for person in (carol, dave):
        created(ada.http.post(f"/api/v1/organizations/{org}/members", json={"user_id": person.id}))
    created(ada.http.post(members, json={"user_id": carol.id, "role": "viewer"}))
    created(ada.http.post(members, json={"user_id": dave.id, "role": "editor"}))

    assert carol.http.get(f"/api/v1/projects/{web}").status_code == 200
    assert carol.http.get(members).json()["count"] == 3
    refused(carol.http.patch(f"{members}/{dave.id}", json={"role": "viewer"}), "owner")
    refused(dave.http.delete(f"{members}/{carol.id}"), "owner")
    refused(dave.http.delete(f"/api/v1/projects/{web}"), "owner")
    refused(dave.http.post("/api/v1/keys", json={"name": "ci", "project_id": web}), "owner")
    assert ada.http.patch(f"{members}/{carol.id}", json={"role": "owner"}).status_code == 200
    created(carol.http.post("/api/v1/keys", json={"name": "ci", "project_id": web}))

    assert apply(api, machine_yaml("m1", "52:54:00:00:ad:01", "192.0.2.51")).status_code == 200
    with live.services.db.write() as session:
        session.execute(update(Machine).where(Machine.name == "m1").values(project_id=web))
    busy = carol.http.delete(f"/api/v1/projects/{web}")
    assert busy.status_code == 409 and "m1" in busy.json()["detail"]["message"]
    with live.services.db.write() as session:
        session.execute(update(Machine).where(Machine.name == "m1").values(project_id=None))
        pool = ipam.create_prefix(session, ipam.PrefixSpec("198.51.100.0/24"))
        reservation = ipam.allocate(
            session, pool.id, prefixlen=29, status=Status.RESERVATION, project_id=web
        ).id
    holding = carol.http.delete(f"/api/v1/projects/{web}")
    assert holding.status_code == 409 and "198.51.100.0/29" in holding.text
    with live.services.db.write() as session:
        ipam.release(session, reservation, quarantine=dt.timedelta(hours=1))
    assert carol.http.delete(f"/api/v1/projects/{web}").status_code == 204
    absent(ada.http, "GET", f"/api/v1/projects/{web}", web)


def test_keys_are_their_owners_own(people: dict[str, Person], live: LiveServer) -> None:
    ada, carol = people["ada"], people["carol"]
    org, web = found_org(ada, "acme", "web")
    created(ada.http.post(f"/api/v1/organizations/{org}/members", json={"user_id": carol.id}))
    created(ada.http.post(f"/api/v1/projects/{web}/members", json={"user_id": carol.id}))

    own = created(ada.http.post("/api/v1/keys", json={"name": "desk", "read_only": True}))
    assert own["kind"] == "user" and own["user_id"] == ada.id and own["read_only"] is True
    ci = created(ada.http.post("/api/v1/keys", json={"name": "ci", "project_id": web}))
    names = {k["name"] for k in ada.http.get("/api/v1/keys").json()["items"]}
    assert names == {"laptop", "desk", "ci"}
    assert {k["name"] for k in carol.http.get("/api/v1/keys").json()["items"]} == {"laptop"}
    refused(carol.http.get(f"/api/v1/keys/{ci['id']}"), "owner")
    absent(carol.http, "GET", f"/api/v1/keys/{own['id']}", own["id"])
    absent(carol.http, "DELETE", f"/api/v1/keys/{own['id']}", own["id"])

    with httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {own['secret']}"}, timeout=30
    ) as read_only:
        assert read_only.get("/api/v1/keys").status_code == 200
        refused(read_only.post("/api/v1/keys", json={"name": "more"}), "read-only")
    with httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {ci['secret']}"}, timeout=30
    ) as project_key:
        refused(project_key.post("/api/v1/keys", json={"name": "x", "project_id": web}), "owner")
    revoked = ada.http.delete(f"/api/v1/keys/{ci['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None


def test_users_a_tenant_sees_and_may_not_make(people: dict[str, Person]) -> None:
    ada, carol = people["ada"], people["carol"]
    org, _ = found_org(ada, "acme", "web")
    assert [u["id"] for u in carol.http.get("/api/v1/users").json()["items"]] == [carol.id]
    created(ada.http.post(f"/api/v1/organizations/{org}/members", json={"user_id": carol.id}))
    seen = carol.http.get("/api/v1/users")
    assert {u["email"] for u in seen.json()["items"]} == {"ada@example.com", "carol@example.com"}
    assert "password" not in seen.text.replace("has_password", "") and PASSWORD not in seen.text
    assert carol.http.get(f"/api/v1/users/{ada.id}").json()["has_password"] is True
    absent(carol.http, "GET", f"/api/v1/users/{people['bob'].id}", people["bob"].id)
    made = carol.http.post("/api/v1/users", json={"email": "eve@example.com", "name": "Eve"})
    assert made.status_code == 403
    assert carol.http.delete(f"/api/v1/users/{ada.id}").status_code == 403


def test_a_tenant_reads_its_projects_audit_and_its_own_writes(
    people: dict[str, Person], api: httpx.Client
) -> None:
    ada, carol = people["ada"], people["carol"]
    org, web = found_org(ada, "acme", "web")
    created(ada.http.post(f"/api/v1/organizations/{org}/members", json={"user_id": carol.id}))
    created(ada.http.post(f"/api/v1/projects/{web}/members", json={"user_id": carol.id}))
    _, solo = found_org(people["bob"], "bobco", "solo")

    entries = carol.http.get("/api/v1/audit").json()["items"]
    assert {e["project_id"] for e in entries} == {web}, "web's entries, not acme's org entries"
    mine = ada.http.get("/api/v1/audit").json()["items"]
    assert "POST /api/v1/organizations" in {e["action"] for e in mine}, "her own write"
    assert all(e["project_id"] in (web, None) for e in mine)
    assert all(e["actor_id"] == ada.id for e in mine if e["project_id"] is None)
    founding = next(e for e in mine if e["action"] == "POST /api/v1/organizations")
    assert founding["actor_name"] == ada.email and founding["key_id"] is not None
    assert solo not in ada.http.get("/api/v1/audit").text
    assert api.get("/api/v1/audit", params={"project": solo}).json()["count"] == 1, "provider"


def test_two_hundred_refused_sign_ins_write_a_bounded_audit(
    people: dict[str, Person], live: LiveServer, api: httpx.Client
) -> None:
    wrong = {"email": "ada@example.com", "password": "not the password"}
    with httpx.Client(base_url=live.url, timeout=30) as http:
        statuses = [http.post("/api/v1/login", json=wrong).status_code for _ in range(200)]
        still = http.post("/api/v1/login", json={**wrong, "password": PASSWORD})
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert still.status_code == 429 and int(still.headers["Retry-After"]) > 0
    with live.services.db.read() as session:
        rows = session.query(AuditEntry).filter(AuditEntry.actor_name == "ada@example.com").all()
    assert len(rows) <= 7, f"{len(rows)} entries for 201 refusals"
    limited = [row for row in rows if row.status == 429]
    assert [row.summary["refused"] for row in limited] == [1]
    metrics = api.get("/metrics").text
    assert re.search(r'metalflow_sign_in_refusals_total\{reason="sign_in_limited"\} 196', metrics)
    assert re.search(r'metalflow_sign_in_refusals_total\{reason="bad_credentials"\} 5', metrics)

    with httpx.Client(base_url=live.url, timeout=30) as http:
        guesses = [
            http.post("/api/v1/login", json={**wrong, "email": f"guess{n}@example.com"})
            for n in range(40)
        ]
    assert [g.status_code for g in guesses] == [401] * 15 + [429] * 25, "20 from this address"
    with live.services.db.read() as session:
        limited = session.query(AuditEntry).filter(AuditEntry.status == 429).all()
    by_account = sorted((row.actor_name, row.summary["refused"]) for row in limited)
    assert by_account == [("*", 1), ("ada@example.com", 1)], "one entry for the address"


# --- the CLI with a tenant's own credentials ----------------------------------------------------


def run(cli: CliRunner, *args: str, input: str | None = None) -> Result:
    return cli.invoke(app, list(args), input=input)


def run_json(cli: CliRunner, *args: str) -> Json:
    result = run(cli, "-o", "json", *args)
    assert result.exit_code == 0, result.output
    body: Json = json.loads(result.stdout)
    return body


def test_a_tenant_drives_the_cli_after_metalflow_login(
    cli: CliRunner, people: dict[str, Person]
) -> None:
    carol = people["carol"]
    signed_in = run(cli, "login", "--email", "ada@example.com", input=f"{PASSWORD}\n")
    assert signed_in.exit_code == 0, signed_in.output
    org = run_json(cli, "org", "create", "acme")
    assert [o["id"] for o in run_json(cli, "org", "list")["items"]] == [org["id"]]
    web = run_json(cli, "project", "create", "web", "--org", org["id"])
    assert run(cli, "org", "member", "add", org["id"], carol.id).exit_code == 0
    added = run(cli, "project", "member", "add", web["id"], carol.id, "--role", "editor")
    assert added.exit_code == 0, added.output
    listed = run(cli, "project", "member", "list", web["id"])
    assert carol.id in listed.output and "editor" in listed.output
    assert run(cli, "project", "member", "remove", web["id"], carol.id).exit_code == 0
    assert carol.id not in run(cli, "project", "member", "list", web["id"]).output

    made = run(cli, "key", "create", "ci", "--project", web["id"])
    assert made.exit_code == 0 and "mfp_" in made.output, made.output
    own = run_json(cli, "key", "create", "desk")
    assert own["user_id"] is not None and own["kind"] == "user"
    assert "POST /api/v1/keys" in run(cli, "audit", "--project", web["id"]).output
    others = run(cli, "user", "create", "eve@example.com", "--name", "Eve")
    assert others.exit_code != 0 and "provider" in others.output


def test_prune_audit_removes_the_entries_before_a_time_and_says_how_many(
    live: LiveServer,
) -> None:
    now = dt.datetime.now(dt.UTC)
    with live.services.db.write() as session:
        for age in (dt.timedelta(days=40), dt.timedelta(days=31), dt.timedelta(days=1)):
            tenancy.append_audit(
                session,
                actor_kind=tenancy.ActorKind.SYSTEM,
                actor_name="test",
                action=f"aged {age.days}",
                at=now - age,
            )
    with live.services.db.write() as session:
        assert tenancy.prune_audit(session, now - dt.timedelta(days=30)) == 2
    with live.services.db.read() as session:
        left = [e.action for e in tenancy.query_audit(session) if e.action.startswith("aged")]
    assert left == ["aged 1"]


def test_the_sign_in_refusal_counters_are_scraped_as_zero_before_any_sign_in(
    api: httpx.Client,
) -> None:
    metrics = api.get("/metrics").text
    for reason in ("bad_credentials", "sign_in_limited"):
        assert re.search(rf'metalflow_sign_in_refusals_total\{{reason="{reason}"\}} 0\.0', metrics)
