"""The audit entry of one API write request, and how a route puts it in its own transaction.

`api.audit.AuditRecorder` appends the entry of every write request once it is answered, from
what the route noted (`services.note_audit`). A route on a hot path (IP allocation) calls
`record` instead: the entry then joins the route's own transaction, one commit instead of two,
and the change and its entry are committed together or not at all.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.types import Scope

from metalflow.services import AUDIT_NOTE_KEY, PRINCIPAL_KEY, AuditNote
from metalflow.tenancy import service
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.service import ActorKind

API_PREFIX = "/api/v1"
"""Where the API's routers are included; their routes keep their own paths."""


def _route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return str(scope["path"])
    return path if path.startswith(API_PREFIX) else API_PREFIX + path


def _default_note(scope: Scope) -> AuditNote:
    """A route that left no note: its first tag names the resource, its path parameters it."""
    tags = getattr(scope.get("route"), "tags", None) or ["api"]
    params: dict[str, Any] = scope.get("path_params") or {}
    return AuditNote(str(tags[0]), "/".join(str(value) for value in params.values()))


def entry_fields(
    scope: Scope, principal: Principal, status: int, note: AuditNote | None = None
) -> dict[str, Any]:
    """`service.append_audit`'s keyword arguments for a write answered with `status`."""
    if note is None:
        state: dict[str, Any] = scope.get("state") or {}
        noted = state.get(AUDIT_NOTE_KEY)
        note = noted if isinstance(noted, AuditNote) else _default_note(scope)
    client = scope.get("client")
    access = principal.access
    return {
        "actor_kind": ActorKind.PROVIDER if access is None else ActorKind.KEY,
        "actor_name": principal.name,
        "actor_id": None if access is None else access.user_id,
        "key_id": None if access is None else access.key_id,
        "action": f"{scope['method']} {_route_template(scope)}",
        "result": "ok" if status < 400 else "error",
        "resource_type": note.resource_type,
        "resource_id": note.resource_id or None,
        "project_id": note.project_id,
        "summary": note.summary,
        "address": client[0] if client else None,
        "status": status,
    }


def record(
    session: Session,
    request: Request,
    resource_type: str,
    resource_id: str,
    *,
    project_id: str | None = None,
    summary: dict[str, Any] | None = None,
) -> None:
    """Append this request's entry to `session`, the route's write, as a success with the
    route's status code."""
    state = request.scope.setdefault("state", {})
    principal = state.get(PRINCIPAL_KEY)
    note = AuditNote(resource_type, resource_id, project_id, summary or {}, written=True)
    state[AUDIT_NOTE_KEY] = note
    if not isinstance(principal, Principal):
        return
    status = int(getattr(request.scope.get("route"), "status_code", None) or 200)
    service.append_audit(session, **entry_fields(request.scope, principal, status, note))
