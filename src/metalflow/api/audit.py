"""One audit entry for every write request to the API, appended before its answer is sent.

Routes say what they changed with `services.note_audit` (resource, project, before/after), or
write the entry in their own transaction with `tenancy.audit.record`; this recorder adds who
(the provider's token or the key used), the route's template, the address, the status and the
result, so a write route cannot forget its entry, and a refused write (403, 404, 409, 422) is on
record too. The entry is written after the route's own transaction: a crash between the two
loses an entry, never a change; writing it before the answer leaves means a client that got its
answer finds the entry.

Not recorded here: requests refused before a caller was known (no token, too large: the limits
count those), the agent's reports (many per action; their events are the record), and the
tenancy routes' successful writes, whose entries are written inside the transaction of their
change (their refusals are recorded here like any other).

Starlette's and FastAPI's middleware hooks (BaseHTTPMiddleware, dependencies with yield) were
looked at: the first wraps the body in a second task, the second runs too early to see the
status of errors mapped by the exception handlers; a plain ASGI wrapper sees both.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metalflow.services import AUDIT_NOTE_KEY, PRINCIPAL_KEY, AuditNote, Services
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.audit import entry_fields
from metalflow.tenancy.auth import Principal, Role

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AGENT_TAG = "agent"
TENANCY_TAG = "tenancy"
"""Routers whose writes are not this recorder's (see the module docstring); a refused tenancy
write changed nothing and wrote no entry of its own, so it is this recorder's."""


def _audited(scope: Scope, status: int) -> bool:
    tags = {str(tag) for tag in getattr(scope.get("route"), "tags", None) or ()}
    if AGENT_TAG in tags or (TENANCY_TAG in tags and status < 400):
        return False
    note = (scope.get("state") or {}).get(AUDIT_NOTE_KEY)
    return not (isinstance(note, AuditNote) and note.written and status < 400)


class AuditRecorder:
    """ASGI middleware inside `api.limits.RequestGuard`, which leaves the caller in the scope."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    def _append(self, fields: dict[str, Any]) -> None:
        with self.services.db.write() as session:
            tenancy.append_audit(session, **fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        principal = (scope.get("state") or {}).get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal) or principal.role is Role.AGENT:
            await self.app(scope, receive, send)
            return

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if _audited(scope, status):
                    fields = entry_fields(scope, principal, status)
                    await to_thread.run_sync(self._append, fields)
            await send(message)

        await self.app(scope, receive, recording_send)
