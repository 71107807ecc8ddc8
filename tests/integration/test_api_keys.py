"""API keys on a live server: accepted as Bearer and as Equinix Metal's X-Auth-Token, read-only
keys refused writes, tenants kept off the provider's routes, and a revoked, expired, unknown or
mistyped key refused with a message that says which."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from metalflow.db.base import utcnow
from metalflow.tenancy import service
from metalflow.tenancy.auth import KEY_CACHE_SECONDS
from metalflow.tenancy.policy import ProjectRole
from metalflow.tenancy.tables import ApiKey
from tests.integration.conftest import LiveServer

POOL = {"cidr": "198.18.0.0/24"}


def key_for(
    live: LiveServer,
    *,
    provider: bool = False,
    project_key: bool = False,
    read_only: bool = False,
    expires_at: dt.datetime | None = None,
) -> tuple[str, str]:
    """A fresh user (a project member unless a provider) and a key; (secret, key id)."""
    with live.services.db.write() as session:
        email = f"u{time.monotonic_ns()}@example.test"
        user = service.create_user(session, email, "A User", provider=provider)
        org = service.create_organization(session, f"org-{user.id[:8]}", user.id)
        project = service.create_project(session, org.id, "web")
        if not provider:
            service.add_project_member(session, project.id, user.id, ProjectRole.EDITOR)
        created = service.create_key(
            session,
            "laptop",
            now=utcnow(),
            user_id=None if project_key else user.id,
            project_id=project.id if project_key else None,
            read_only=read_only,
            expires_at=expires_at,
        )
        return created.secret, created.key.id


def get(live: LiveServer, path: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        return client.get(path)


def test_a_provider_key_works_as_bearer_and_as_x_auth_token(live: LiveServer) -> None:
    secret, key_id = key_for(live, provider=True)
    for headers in ({"Authorization": f"Bearer {secret}"}, {"X-Auth-Token": secret}):
        who = get(live, "/api/v1/whoami", headers)
        assert who.status_code == 200, who.text
        assert who.json()["role"] == "admin" and who.json()["name"].endswith("@example.test")
        assert get(live, "/api/v1/machines", headers).status_code == 200
    with httpx.Client(base_url=live.url, headers={"X-Auth-Token": secret}) as client:
        assert client.post("/api/v1/ipam/prefixes", json=POOL).status_code == 201
    with live.services.db.read() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None and key.last_used_at is not None
        assert key.last_used_address == "127.0.0.1"


def test_a_read_only_key_reads_but_never_writes(live: LiveServer) -> None:
    secret, _ = key_for(live, provider=True, read_only=True)
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {secret}"}) as client:
        assert client.get("/api/v1/ipam/prefixes").status_code == 200
        refused = client.post("/api/v1/ipam/prefixes", json=POOL)
    assert refused.status_code == 403
    assert "read-only" in refused.json()["detail"]["message"]


@pytest.mark.parametrize("project_key", [False, True])
def test_a_tenant_key_is_kept_off_the_providers_routes(live: LiveServer, project_key: bool) -> None:
    secret, _ = key_for(live, project_key=project_key)
    headers = {"Authorization": f"Bearer {secret}"}
    assert get(live, "/api/v1/whoami", headers).json()["role"] == "tenant"
    refused = get(live, "/api/v1/templates", headers)
    assert refused.status_code == 403
    assert "the provider's" in refused.json()["detail"]["message"]


def test_mistyped_unknown_expired_and_revoked_keys_are_refused(live: LiveServer) -> None:
    secret, key_id = key_for(live, provider=True)
    mistyped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    answer = get(live, "/api/v1/whoami", {"Authorization": f"Bearer {mistyped}"})
    assert answer.status_code == 401 and "checksum" in answer.json()["detail"]["message"]

    expiring, _ = key_for(live, provider=True, expires_at=utcnow() + dt.timedelta(seconds=1))
    answer = wait_for_refusal(live, {"X-Auth-Token": expiring})
    assert answer.json()["detail"] == {
        "message": "unknown, revoked or expired API key",
        "field": "x-auth-token",
    }

    headers = {"Authorization": f"Bearer {secret}"}
    assert get(live, "/api/v1/whoami", headers).status_code == 200
    with live.services.db.write() as session:
        service.revoke_key(session, key_id, utcnow())
    assert wait_for_refusal(live, headers).status_code == 401


def wait_for_refusal(live: LiveServer, headers: dict[str, str]) -> httpx.Response:
    """The first refusal of a key that has just expired or been revoked, which may be used for
    up to KEY_CACHE_SECONDS after."""
    deadline = time.monotonic() + KEY_CACHE_SECONDS + 10
    while (answer := get(live, "/api/v1/whoami", headers)).status_code == 200:
        assert time.monotonic() < deadline, "the key still works after the cache time"
        time.sleep(0.2)
    assert answer.status_code == 401
    return answer
