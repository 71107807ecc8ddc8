"""The services of one process, and what every endpoint asks of them: the caller and its rights.

`server.py` builds one `Services` and hands it to the app, the boot servers and the metadata
port; nothing looks its parts up elsewhere. The container's field types are imported for type
checking only, so the routers of every package can depend on this module without importing
each other's packages through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from anyio import to_thread
from fastapi import Depends, HTTPException, Request

from metalflow.errors import Forbidden as ForbiddenError
from metalflow.errors import NotFound, Unauthorized
from metalflow.tenancy import policy
from metalflow.tenancy.auth import Action, Forbidden, Principal, Role, authorize
from metalflow.tenancy.keys import parse_key

if TYPE_CHECKING:
    from metalflow.config import Settings
    from metalflow.db.engine import Database
    from metalflow.events import EventBus, PostgresRelay
    from metalflow.index.views import MachineIndex
    from metalflow.inventory.discovery import DiscoveryGate
    from metalflow.metrics import Metrics
    from metalflow.recorder import BootEventRecorder
    from metalflow.tenancy.auth import Authenticator
    from metalflow.tenancy.secrets import Keyring


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: EventBus
    keyring: Keyring
    auth: Authenticator
    metrics: Metrics
    index: MachineIndex
    boot_events: BootEventRecorder
    discovery_gate: DiscoveryGate
    relay: PostgresRelay | None = None


async def get_services(request: Request) -> Services:
    """Async: FastAPI would run a plain `def` dependency in a worker thread, for nothing."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


PRINCIPAL_KEY = "metalflow.principal"
"""Where the API's RequestGuard (api.limits) leaves the caller it authenticated, in
`scope["state"]`, before the body was read."""
MISSING_TOKEN = (
    "missing 'Authorization: Bearer TOKEN' (or 'X-Auth-Token: TOKEN'); the admin token is in"
    " DATA_DIR/admin-token"
)


@dataclass(frozen=True)
class Credentials:
    """What a request offers to say who sent it: either header, and the peer's address (an API
    key records where it was last used)."""

    authorization: str | None
    x_auth_token: str | None = None
    address: str | None = None


def authenticate(services: Services, credentials: Credentials) -> Principal:
    """The caller named by `Authorization: Bearer` or Equinix Metal's `X-Auth-Token`; blocking
    (a database read, or for an API key a short write now and then)."""
    scheme, _, bearer = (credentials.authorization or "").partition(" ")
    if scheme.lower() == "bearer" and bearer.strip():
        token, field = bearer.strip(), "authorization"
    elif credentials.x_auth_token and credentials.x_auth_token.strip():
        token, field = credentials.x_auth_token.strip(), "x-auth-token"
    else:
        raise Unauthorized(MISSING_TOKEN, field="authorization")
    parsed = parse_key(token)
    if parsed.kind is not None:
        if parsed.problem is not None:
            raise Unauthorized(parsed.problem, field=field)
        principal = services.auth.cached_key(token)
        if principal is None:
            with services.db.write() as session:
                principal = services.auth.authenticate_key(session, token, credentials.address)
        if principal is None:
            raise Unauthorized("unknown, revoked or expired API key", field=field)
        return principal
    with services.db.read() as session:
        principal = services.auth.authenticate(session, token)
    if principal is None:
        raise Unauthorized("unknown or revoked token", field=field)
    return principal


async def current_principal(request: Request, services: ServicesDep) -> Principal:
    """The principal RequestGuard found; authenticated here only where it did not run."""
    found = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return found
    credentials = Credentials(
        request.headers.get("authorization"),
        request.headers.get("x-auth-token"),
        request.client.host if request.client else None,
    )
    return await to_thread.run_sync(authenticate, services, credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


ACCESS_ATTRIBUTE = "metalflow_access"
"""Set on each requirement's check: the OpenAPI document names every route's access from it
(`x-metalflow-access`), so the access matrix test covers every route, later ones included."""
AUTHENTICATED = "authenticated"
"""The access of a route that takes any authenticated caller (it depends on PrincipalDep only)."""


def _requirement(action: Action) -> object:
    async def check(principal: PrincipalDep) -> Principal:
        try:
            authorize(principal, action)
        except Forbidden as exc:
            raise HTTPException(403, detail={"message": str(exc), "field": None}) from exc
        return principal

    setattr(check, ACCESS_ATTRIBUTE, action.value)
    return Depends(check)


Reader = Annotated[Principal, _requirement(Action.READ)]
Writer = Annotated[Principal, _requirement(Action.WRITE)]
Agent = Annotated[Principal, _requirement(Action.AGENT)]
HelloCaller = Annotated[Principal, _requirement(Action.HELLO)]
"""The agent's hello: an agent token, or a boot token to exchange."""


PROJECT_READ = "project-read"
PROJECT_WRITE = "project-write"
"""The access of routes that tenants reach too, each resource decided by `require`."""


def _scoped(action: Action, access: str) -> object:
    """The provider (a read-only key only for reads) and tenants pass; agents do not. Which of
    a tenant's projects the resource must be in is the route's `require` or `visible`."""

    async def check(principal: PrincipalDep) -> Principal:
        if principal.role is Role.AGENT:
            raise HTTPException(
                403,
                detail={
                    "message": "agent tokens reach only the agent endpoints of their machine",
                    "field": None,
                },
            )
        if principal.read_only and action is not Action.READ:
            raise HTTPException(
                403,
                detail={
                    "message": "this API key is read-only: use a read-write key for changes",
                    "field": None,
                },
            )
        return principal

    setattr(check, ACCESS_ATTRIBUTE, access)
    return Depends(check)


ProjectReader = Annotated[Principal, _scoped(Action.READ, PROJECT_READ)]
ProjectWriter = Annotated[Principal, _scoped(Action.WRITE, PROJECT_WRITE)]


def visible(principal: Principal) -> frozenset[str] | None:
    """The project ids whose resources `principal` sees; None for all (the provider). A route
    narrows its lists to these."""
    if principal.role is Role.ADMIN:
        return None
    if principal.access is None:
        return frozenset()
    return policy.visible_projects(principal.access)


def require(
    principal: Principal, action: policy.Action, project_id: str | None, missing: NotFound
) -> None:
    """Raise `missing` (the very 404 of a resource that does not exist, so a tenant learns
    nothing of others' resources) or a 403 naming the role that would do, unless `principal`
    may do `action` on a resource of `project_id` (None: the provider's own)."""
    if principal.role is Role.ADMIN:
        if principal.read_only and action is not policy.Action.READ:
            raise ForbiddenError("this API key is read-only: use a read-write key for changes")
        return
    if principal.access is None or project_id is None:
        raise missing
    decision = policy.decide(principal.access, action, project_id)
    if decision.outcome is policy.Outcome.NOT_FOUND:
        raise missing
    if not decision.allowed:
        raise ForbiddenError(decision.reason)


AUDIT_NOTE_KEY = "metalflow.audit"
"""Where a write route leaves what the audit entry of its request should say (`note_audit`)."""


@dataclass(frozen=True)
class AuditNote:
    resource_type: str
    resource_id: str
    project_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    """Before/after of what changed; never a secret (a password, a key, a BMC password)."""
    written: bool = False
    """The route appended the entry in its own transaction (`tenancy.audit.record`): the
    recorder adds one only if the request failed after all."""


def note_audit(
    request: Request,
    resource_type: str,
    resource_id: str,
    *,
    project_id: str | None = None,
    summary: dict[str, Any] | None = None,
) -> None:
    """Say what the audit entry of this write names: the api's audit recorder appends one entry
    for every write request once it is answered, with the caller, route, address and status;
    without a note it names the route's path parameters, and no project."""
    request.scope.setdefault("state", {})[AUDIT_NOTE_KEY] = AuditNote(
        resource_type, resource_id, project_id, summary or {}
    )
