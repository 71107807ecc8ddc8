"""The services of one process, and what every endpoint asks of them: the caller and its rights.

`server.py` builds one `Services` and hands it to the app, the boot servers and the metadata
port; nothing looks its parts up elsewhere. The container's field types are imported for type
checking only, so the routers of every package can depend on this module without importing
each other's packages through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from anyio import to_thread
from fastapi import Depends, HTTPException, Request

from metalflow.errors import Unauthorized
from metalflow.tenancy.auth import Action, Forbidden, Principal, authorize

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
MISSING_TOKEN = "missing 'Authorization: Bearer TOKEN'; the admin token is in DATA_DIR/admin-token"


def authenticate(services: Services, authorization: str | None) -> Principal:
    """The caller named by an Authorization header; blocking (a database read)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(MISSING_TOKEN, field="authorization")
    with services.db.read() as session:
        principal = services.auth.authenticate(session, token.strip())
    if principal is None:
        raise Unauthorized("unknown or revoked token", field="authorization")
    return principal


async def current_principal(request: Request, services: ServicesDep) -> Principal:
    """The principal RequestGuard found; authenticated here only where it did not run."""
    found = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return found
    return await to_thread.run_sync(authenticate, services, request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _requirement(action: Action) -> object:
    async def check(principal: PrincipalDep) -> Principal:
        try:
            authorize(principal, action)
        except Forbidden as exc:
            raise HTTPException(403, detail={"message": str(exc), "field": None}) from exc
        return principal

    return Depends(check)


Reader = Annotated[Principal, _requirement(Action.READ)]
Writer = Annotated[Principal, _requirement(Action.WRITE)]
Agent = Annotated[Principal, _requirement(Action.AGENT)]
