"""Every write through the API leaves one audit entry, refused writes included; reads and the
agent's reports leave none. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx

from metalflow.config import Settings
from metalflow.db.base import utcnow
from metalflow.server import build_services
from metalflow.tenancy import retention, service
from tests.integration.conftest import LiveServer, apply, start_server
from tests.manifests import machine_yaml


def entries(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    body = api.get("/api/v1/audit", params={"limit": 1000, **params}).json()
    items: list[dict[str, Any]] = body["items"]
    return items


def test_each_write_is_audited_with_route_status_and_result(api: httpx.Client) -> None:
    before = len(entries(api))
    assert apply(api, machine_yaml("m1", "52:54:00:00:ad:01", "192.0.2.51")).status_code == 200
    assert api.post("/api/v1/machines/m1/transition", json={"event": "nope"}).status_code == 409
    assert api.delete("/api/v1/machines/absent").status_code == 404
    api.get("/api/v1/machines")
    found = entries(api)
    assert len(found) == before + 3
    newest = {entry["action"]: entry for entry in found[:3]}
    assert set(newest) == {
        "POST /api/v1/apply",
        "POST /api/v1/machines/{name}/transition",
        "DELETE /api/v1/machines/{name}",
    }
    assert newest["POST /api/v1/apply"]["result"] == "ok"
    refused = newest["DELETE /api/v1/machines/{name}"]
    assert (refused["result"], refused["status"], refused["resource_id"]) == (
        "error",
        404,
        "absent",
    )
    transition = newest["POST /api/v1/machines/{name}/transition"]
    assert (transition["resource_type"], transition["resource_id"]) == ("machines", "m1")
    assert all(entry["actor_kind"] == "provider" and entry["address"] for entry in found[:3])


def test_a_keys_write_names_the_key_and_an_agents_report_is_not_audited(
    api: httpx.Client, live: LiveServer
) -> None:
    assert apply(api, machine_yaml("m2", "52:54:00:00:ad:02", "192.0.2.52")).status_code == 200
    agent_token = api.post("/api/v1/machines/m2/agent-token").json()["token"]
    with live.services.db.write() as session:
        ops = service.create_user(session, "ops@example.test", "Ops", provider=True)
        key = service.create_key(session, "laptop", now=utcnow(), user_id=ops.id)
    before = len(entries(api))
    with httpx.Client(
        base_url=live.url, headers={"X-Auth-Token": key.secret}, timeout=30
    ) as as_key:
        assert as_key.post("/api/v1/machines/m2/agent-token/rotate").status_code == 200
    with httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {agent_token}"}, timeout=30
    ) as agent:
        agent.post("/api/v1/agent/actions/none/status", json={})
    found = entries(api)
    assert len(found) == before + 1
    assert (found[0]["actor_kind"], found[0]["actor_name"]) == ("key", ops.email)
    assert (found[0]["actor_id"], found[0]["key_id"]) == (ops.id, key.key.id)
    assert key.secret not in api.get("/api/v1/audit").text


def test_the_retention_purge_removes_only_entries_older_than_the_setting(
    api: httpx.Client, live: LiveServer
) -> None:
    with live.services.db.write() as session:
        for days in (40, 20, 1):
            service.append_audit(
                session,
                actor_kind=service.ActorKind.SYSTEM,
                actor_name=f"aged-{days}",
                action="test",
                at=utcnow() - dt.timedelta(days=days),
            )
    assert retention.purge_once(live.services.db, dt.timedelta(days=30)) >= 1
    names = {entry["actor_name"] for entry in entries(api)}
    assert {"aged-20", "aged-1"} <= names
    assert "aged-40" not in names


def test_the_controller_purges_entries_past_the_retention_setting_when_it_starts(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"audit_retention_days": 30})
    services = build_services(settings)
    with services.db.write() as session:
        for days in (40, 1):
            service.append_audit(
                session,
                actor_kind=service.ActorKind.SYSTEM,
                actor_name=f"aged-{days}",
                action="test",
                at=utcnow() - dt.timedelta(days=days),
            )
    services.db.dispose()
    live = start_server(settings)
    try:
        with live.client() as api:
            deadline = time.monotonic() + 30
            names = {entry["actor_name"] for entry in entries(api)}
            while "aged-40" in names and time.monotonic() < deadline:
                time.sleep(0.05)
                names = {entry["actor_name"] for entry in entries(api)}
        assert "aged-40" not in names, "the purge did not run at start-up"
        assert "aged-1" in names
    finally:
        live.stop()
