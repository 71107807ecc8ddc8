"""Every route by every kind of caller, built from the OpenAPI document itself: each operation
declares its access (`x-metalflow-access`), and each caller gets exactly what that access says.
A route added without an access, or with one this table does not know, fails here."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from metalflow.db.base import utcnow
from metalflow.tenancy import service
from metalflow.tenancy.policy import ProjectRole
from tests.integration.conftest import LiveServer, apply
from tests.manifests import machine_yaml

CALLERS = ("provider", "provider_read_only", "tenant", "project_key", "agent", "anonymous")
ALLOWED = {
    "public": set(CALLERS),
    "authenticated": set(CALLERS) - {"anonymous"},
    "read": {"provider", "provider_read_only"},
    "write": {"provider"},
    "project-read": {"provider", "provider_read_only", "tenant", "project_key"},
    "project-write": {"provider", "tenant", "project_key"},
    "agent": {"agent"},
    "hello": {"agent"},
}
"""Who passes each access; everyone else is refused: 401 without a token, 403 with one."""
SWITCHED_OFF = {("post", "/api/v1/agent/discover")}
"""Operations that answer 403 to everyone while their feature is off (discovery is, here)."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    access: str | None


def operations(document: dict[str, object]) -> list[Operation]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return [
        Operation(method, path, operation.get("x-metalflow-access"))
        for path, item in paths.items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


def tokens(live: LiveServer, api: httpx.Client) -> dict[str, str | None]:
    """A token of every kind of caller."""
    assert apply(api, machine_yaml("m1", "52:54:00:00:ac:01", "192.0.2.41")).status_code == 200
    agent = api.post("/api/v1/machines/m1/agent-token").json()["token"]
    with live.services.db.write() as session:
        provider = service.create_user(session, "ops@example.test", "Ops", provider=True)
        tenant = service.create_user(session, "dev@example.test", "Dev")
        org = service.create_organization(session, "acme", tenant.id)
        project = service.create_project(session, org.id, "web")
        service.add_project_member(session, project.id, tenant.id, ProjectRole.OWNER)
        now = utcnow()
        read_only = service.create_key(session, "ro", now=now, user_id=provider.id, read_only=True)
        tenant_key = service.create_key(session, "dev", now=now, user_id=tenant.id)
        project_key = service.create_key(session, "ci", now=now, project_id=project.id)
    return {
        "provider": live.admin_token,
        "provider_read_only": read_only.secret,
        "tenant": tenant_key.secret,
        "project_key": project_key.secret,
        "agent": agent,
        "anonymous": None,
    }


def call(live: LiveServer, token: str | None, operation: Operation) -> httpx.Response:
    path = re.sub(r"\{[^}]+\}", "nope", operation.path)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body: dict[str, object] | None = {} if operation.method in ("post", "put", "patch") else None
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        return client.request(
            operation.method.upper(), path, json=body, params={"wait": 0, "limit": 1}
        )


def test_every_route_answers_each_caller_as_its_access_says(
    live: LiveServer, api: httpx.Client
) -> None:
    document = api.get("/api/v1/openapi.json").json()
    found = operations(document)
    undecided = [
        f"{o.method.upper()} {o.path}: {o.access}" for o in found if o.access not in ALLOWED
    ]
    assert undecided == [], "routes without a known x-metalflow-access"
    callers = tokens(live, api)
    problems = []
    for operation in found:
        if operation.path.startswith("/boot/") or operation.path == "/healthz":
            continue
        assert operation.access is not None
        for caller, token in callers.items():
            status = call(live, token, operation).status_code
            allowed = caller in ALLOWED[operation.access]
            if (operation.method, operation.path) in SWITCHED_OFF:
                expected_refusal = status == 403
            elif allowed:
                expected_refusal = status not in (401, 403)
            else:
                expected_refusal = status == (401 if token is None else 403)
            if not expected_refusal:
                problems.append(
                    f"{operation.method.upper()} {operation.path} as {caller}: {status}"
                )
    assert problems == []
