"""The tenancy API on SQLite and PostgreSQL, as the provider's operator and a signing-in user
see it: organizations, projects, users, memberships, keys, the audit log and `POST /login`."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner, Result

from metalflow.cli import app
from tests.integration.conftest import LiveServer

PASSWORD = "correct horse battery"
Json = dict[str, Any]


def created(response: httpx.Response) -> Json:
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


def acme(api: httpx.Client) -> dict[str, str]:
    """A user with a password owning organization acme, which has project web."""
    ada = created(
        api.post(
            "/api/v1/users", json={"email": "Ada@Example.com", "name": "Ada", "password": PASSWORD}
        )
    )
    org = created(api.post("/api/v1/organizations", json={"name": "acme", "owner_id": ada["id"]}))
    web = created(api.post(f"/api/v1/organizations/{org['id']}/projects", json={"name": "web"}))
    return {"ada": ada["id"], "org": org["id"], "web": web["id"]}


def anonymous(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=30)


def test_organizations_projects_users_and_memberships(api: httpx.Client) -> None:
    ids = acme(api)
    bob = created(api.post("/api/v1/users", json={"email": "bob@example.com", "name": "Bob"}))
    assert bob["has_password"] is False and bob["provider"] is False

    users = api.get("/api/v1/users").json()
    assert [u["email"] for u in users["items"]] == ["ada@example.com", "bob@example.com"]
    assert PASSWORD not in api.get("/api/v1/users").text
    assert PASSWORD not in api.get(f"/api/v1/users/{ids['ada']}").text
    assert "password_hash" not in api.get(f"/api/v1/users/{ids['ada']}").text

    org_members = f"/api/v1/organizations/{ids['org']}/members"
    owners = api.get(org_members).json()["items"]
    assert [(m["user_id"], m["role"]) for m in owners] == [(ids["ada"], "owner")]
    created(api.post(org_members, json={"user_id": bob["id"], "role": "admin"}))
    changed = api.patch(f"{org_members}/{bob['id']}", json={"role": "member"})
    assert changed.status_code == 200 and changed.json()["role"] == "member"
    last_owner = api.delete(f"{org_members}/{ids['ada']}")
    assert last_owner.status_code == 409 and "last owner" in last_owner.json()["detail"]["message"]

    project_members = f"/api/v1/projects/{ids['web']}/members"
    created(api.post(project_members, json={"user_id": bob["id"], "role": "viewer"}))
    again = api.post(project_members, json={"user_id": bob["id"], "role": "owner"})
    assert again.status_code == 409 and again.json()["detail"]["field"] == "user"
    assert api.patch(f"{project_members}/{bob['id']}", json={"role": "editor"}).json()["role"] == (
        "editor"
    )
    assert [m["role"] for m in api.get(project_members).json()["items"]] == ["editor"]
    assert api.delete(f"{project_members}/{bob['id']}").status_code == 204
    assert api.get(project_members).json()["count"] == 0

    projects = api.get("/api/v1/projects", params={"organization": ids["org"]}).json()
    assert [p["name"] for p in projects["items"]] == ["web"]
    assert api.get(f"/api/v1/projects/{ids['web']}").json()["organization_id"] == ids["org"]
    busy = api.delete(f"/api/v1/organizations/{ids['org']}")
    assert busy.status_code == 409 and "web" in busy.json()["detail"]["message"]
    assert api.delete(f"/api/v1/projects/{ids['web']}").status_code == 204
    assert api.get(f"/api/v1/projects/{ids['web']}").status_code == 404
    assert api.delete(f"/api/v1/organizations/{ids['org']}").status_code == 204
    assert api.get("/api/v1/organizations").json() == {"items": [], "count": 0}
    assert api.delete(f"/api/v1/users/{bob['id']}").status_code == 204
    assert api.get(f"/api/v1/users/{bob['id']}").status_code == 404


def test_a_key_secret_is_shown_once_and_revoking_keeps_it_listed(api: httpx.Client) -> None:
    ids = acme(api)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).isoformat()
    user_key = created(
        api.post(
            "/api/v1/keys", json={"name": "laptop", "user_id": ids["ada"], "expires_at": later}
        )
    )
    project_key = created(
        api.post("/api/v1/keys", json={"name": "ci", "project_id": ids["web"], "read_only": True})
    )
    assert user_key["secret"].startswith("mfu_") and user_key["kind"] == "user"
    assert project_key["secret"].startswith("mfp_") and project_key["read_only"] is True
    assert user_key["secret"].startswith(user_key["prefix"])

    listed = api.get("/api/v1/keys")
    shown = api.get(f"/api/v1/keys/{user_key['id']}")
    audit = api.get("/api/v1/audit")
    for response in (listed, shown, audit):
        assert response.status_code == 200
        assert user_key["secret"] not in response.text
        assert project_key["secret"] not in response.text
        assert "secret" not in response.text
    assert {k["name"] for k in listed.json()["items"]} == {"laptop", "ci"}
    assert shown.json()["prefix"] == user_key["prefix"]
    only_web = api.get("/api/v1/keys", params={"project": ids["web"]}).json()["items"]
    assert [k["name"] for k in only_web] == ["ci"]

    revoked = api.delete(f"/api/v1/keys/{project_key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert api.get(f"/api/v1/keys/{project_key['id']}").json()["revoked_at"] is not None
    assert api.get(f"/api/v1/keys/{user_key['id']}").json()["revoked_at"] is None
    assert api.delete("/api/v1/keys/nope").status_code == 404


def test_login_answers_a_user_key_without_a_token(api: httpx.Client, live: LiveServer) -> None:
    ids = acme(api)
    with anonymous(live) as http:
        answer = http.post("/api/v1/login", json={"email": "ADA@example.com", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user"]["id"] == ids["ada"]
    assert body["key"]["secret"].startswith("mfu_") and body["key"]["user_id"] == ids["ada"]
    expires = dt.datetime.fromisoformat(body["key"]["expires_at"])
    expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
    remaining = expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < remaining <= dt.timedelta(days=30)
    keys = api.get("/api/v1/keys", params={"user": ids["ada"]})
    assert [k["name"] for k in keys.json()["items"]] == ["login"]
    assert body["key"]["secret"] not in keys.text
    assert body["key"]["secret"] not in api.get("/api/v1/audit").text
    with anonymous(live) as http:
        who = http.get("/api/v1/whoami", headers={"X-Auth-Token": body["key"]["secret"]})
    assert who.status_code == 200, who.text
    assert who.json()["name"] == "ada@example.com"


def test_five_bad_passwords_then_429_with_retry_after(api: httpx.Client, live: LiveServer) -> None:
    acme(api)
    wrong = {"email": "ada@example.com", "password": "not the password"}
    with anonymous(live) as http:
        for _ in range(5):
            refused = http.post("/api/v1/login", json=wrong)
            assert refused.status_code == 401
            assert refused.json()["detail"]["message"] == "wrong email or password"
        limited = http.post(
            "/api/v1/login", json={"email": "ada@example.com", "password": PASSWORD}
        )
    assert limited.status_code == 429, limited.text
    assert 0 < int(limited.headers["Retry-After"]) <= 300
    assert limited.json()["detail"]["field"] == "email"
    failures = [
        entry
        for entry in api.get("/api/v1/audit", params={"actor": "ada@example.com"}).json()["items"]
        if entry["action"] == "POST /api/v1/login"
    ]
    assert [entry["status"] for entry in failures] == [429, 401, 401, 401, 401, 401]
    assert all(entry["result"] == "error" for entry in failures)
    assert "not the password" not in api.get("/api/v1/audit").text


def test_a_sign_in_forgives_the_account_not_the_address(
    api: httpx.Client, live: LiveServer
) -> None:
    acme(api)
    right = {"email": "ada@example.com", "password": PASSWORD}
    with anonymous(live) as http:
        for _ in range(4):
            assert http.post("/api/v1/login", json={**right, "password": "nope"}).status_code == 401
        assert http.post("/api/v1/login", json=right).status_code == 200
        for _ in range(4):
            assert http.post("/api/v1/login", json={**right, "password": "nope"}).status_code == 401
        for number in range(12):
            guess = {"email": f"guess{number}@example.com", "password": "nope"}
            assert http.post("/api/v1/login", json=guess).status_code == 401
        from_here = http.post("/api/v1/login", json={"email": "new@example.com", "password": "x"})
    assert from_here.status_code == 429, "20 failures from one address, whatever the accounts"
    assert int(from_here.headers["Retry-After"]) > 0


def test_audit_lists_the_writes_with_their_actor(api: httpx.Client) -> None:
    ids = acme(api)
    actor = api.get("/api/v1/whoami").json()["name"]
    entries = api.get("/api/v1/audit", params={"actor": actor}).json()["items"]
    assert [(e["action"], e["actor_name"], e["result"]) for e in entries] == [
        ("POST /api/v1/organizations/{organization_id}/projects", actor, "ok"),
        ("POST /api/v1/organizations", actor, "ok"),
        ("POST /api/v1/users", actor, "ok"),
    ]
    assert entries[0]["project_id"] == ids["web"] and entries[0]["status"] == 201
    assert PASSWORD not in api.get("/api/v1/audit").text
    in_web = api.get("/api/v1/audit", params={"project": ids["web"]}).json()["items"]
    assert [e["resource_id"] for e in in_web] == [ids["web"]]
    assert api.get("/api/v1/audit", params={"limit": 1}).json()["count"] == 1
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/audit", params={"since": future}).json()["count"] == 0
    assert api.get("/api/v1/audit", params={"actor": "someone-else"}).json()["count"] == 0
    bare = api.get("/api/v1/audit", params={"since": "2026-01-01T00:00"})
    assert bare.status_code == 422 and bare.json()["detail"]["field"] == "query.since"


BAD_INPUT = [
    ("/api/v1/users", {"email": "not-an-address", "name": "X"}, "email"),
    ("/api/v1/users", {"email": "x@example.com"}, "body.name"),
    ("/api/v1/users", {"email": "x@example.com", "name": "X", "password": "short"}, "password"),
    ("/api/v1/organizations", {"name": "Not A Slug", "owner_id": "u"}, "name"),
    ("/api/v1/keys", {"name": "k", "user_id": "a", "project_id": "b"}, "user_id"),
    ("/api/v1/keys", {"name": "k", "user_id": "nobody"}, "user"),
    (
        "/api/v1/keys",
        {"name": "k", "user_id": "a", "expires_at": "2030-01-01T00:00"},
        "body.expires_at",
    ),
    ("/api/v1/login", {"email": "x@example.com"}, "body.password"),
]


def test_bad_input_names_the_field(api: httpx.Client) -> None:
    for path, body, field in BAD_INPUT:
        response = api.post(path, json=body)
        assert response.status_code in (404, 422), f"{path} {body}: {response.text}"
        assert response.json()["detail"]["field"] == field, f"{path} {body}"


# --- the CLI against the live server ------------------------------------------------------------


def run(cli: CliRunner, *args: str, input: str | None = None) -> Result:
    return cli.invoke(app, list(args), input=input)


def run_json(cli: CliRunner, *args: str, input: str | None = None) -> Json:
    result = run(cli, "-o", "json", *args, input=input)
    assert result.exit_code == 0, result.output
    body: Json = json.loads(result.stdout)
    return body


def test_cli_creates_users_organizations_projects_members_and_keys(cli: CliRunner) -> None:
    ada = run_json(
        cli,
        "user",
        "create",
        "ada@example.com",
        "--name",
        "Ada",
        "--password",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert ada["has_password"] is True
    bob = run_json(cli, "user", "create", "bob@example.com", "--name", "Bob")
    users = run(cli, "user", "list")
    assert "ada@example.com" in users.output and "bob@example.com" in users.output
    assert PASSWORD not in users.output

    org = run_json(cli, "org", "create", "acme", "--owner", ada["id"])
    assert org["id"] in run(cli, "org", "list").output
    web = run_json(cli, "project", "create", "web", "--org", org["id"])
    assert "web" in run(cli, "project", "show", web["id"]).output
    added = run(cli, "org", "member", "add", org["id"], bob["id"], "--role", "admin")
    assert added.exit_code == 0 and "admin" in added.output
    assert run(cli, "project", "member", "add", web["id"], bob["id"]).exit_code == 0
    changed = run(cli, "project", "member", "set", web["id"], bob["id"], "editor")
    assert changed.exit_code == 0, changed.output
    members = run(cli, "project", "member", "list", web["id"])
    assert bob["id"] in members.output and "editor" in members.output
    last_owner = run(cli, "org", "member", "remove", org["id"], ada["id"])
    assert last_owner.exit_code == 2 and "last owner" in last_owner.output

    made = run(cli, "key", "create", "ci", "--project", web["id"], "--read-only")
    assert made.exit_code == 0, made.output
    secret = max((word for word in made.output.split() if word.startswith("mfp_")), key=len)
    assert len(secret) == 50 and "shown this once" in made.output
    listed = run(cli, "key", "list")
    assert "ci" in listed.output and secret[:12] in listed.output and secret not in listed.output
    key_id = run_json(cli, "key", "list")["items"][0]["id"]
    assert "revoked" in run(cli, "key", "delete", key_id).output
    assert run_json(cli, "key", "show", key_id)["revoked_at"] is not None

    audit = run(cli, "audit", "--project", web["id"])
    assert audit.exit_code == 0 and "DELETE /api/v1/keys/{key_id}" in audit.output
    assert secret not in run(cli, "audit").output
    bad = run(cli, "user", "create", "not-an-address", "--name", "X")
    assert bad.exit_code == 2 and "email" in bad.output


def test_cli_login_keeps_the_key_in_a_0600_file(
    cli: CliRunner, api: httpx.Client, tmp_path: Path
) -> None:
    ids = acme(api)
    refused = run(cli, "login", "--email", "ada@example.com", input="wrong password\n")
    assert refused.exit_code == 2
    assert "wrong email or password" in refused.output and "--token" not in refused.output
    credentials = tmp_path / "config" / "metalflow" / "credentials"
    assert not credentials.exists()

    signed_in = run(cli, "login", input=f"ada@example.com\n{PASSWORD}\n")
    assert signed_in.exit_code == 0, signed_in.output
    assert "signed in as ada@example.com" in signed_in.output
    assert PASSWORD not in signed_in.output
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    key = credentials.read_text().strip()
    assert key.startswith("mfu_")
    assert key not in signed_in.output
    [login_key] = api.get("/api/v1/keys", params={"user": ids["ada"]}).json()["items"]
    assert key.startswith(login_key["prefix"])
    assert list(credentials.parent.iterdir()) == [credentials], "no temporary file is left"
