"""What every endpoint needs: the services, the caller, and the authorisation check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from metalflow.boot.index import BootIndex
from metalflow.boot.recorder import BootEventRecorder
from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.events import EventBus, PostgresRelay
from metalflow.inventory.discovery import DiscoveryGate
from metalflow.metrics import Metrics
from metalflow.tenancy.auth import Action, Authenticator, Forbidden, Principal, authorize
from metalflow.tenancy.secrets import Keyring


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: EventBus
    keyring: Keyring
    auth: Authenticator
    metrics: Metrics
    boot_index: BootIndex
    boot_events: BootEventRecorder
    discovery_gate: DiscoveryGate
    relay: PostgresRelay | None = None


async def get_services(request: Request) -> Services:
    """Async: FastAPI would run a plain `def` dependency in a worker thread, for nothing."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_principal(request: Request, services: ServicesDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            detail={
                "message": "missing 'Authorization: Bearer TOKEN'; the admin token is in"
                " DATA_DIR/admin-token",
                "field": "authorization",
            },
            headers={"WWW-Authenticate": "Bearer"},
        )
    with services.db.read() as session:
        principal = services.auth.authenticate(session, token.strip())
    if principal is None:
        raise HTTPException(
            401,
            detail={"message": "unknown or revoked token", "field": "authorization"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _requirement(action: Action) -> object:
    def check(principal: PrincipalDep) -> Principal:
        try:
            authorize(principal, action)
        except Forbidden as exc:
            raise HTTPException(403, detail={"message": str(exc), "field": None}) from exc
        return principal

    return Depends(check)


Reader = Annotated[Principal, _requirement(Action.READ)]
Writer = Annotated[Principal, _requirement(Action.WRITE)]
Agent = Annotated[Principal, _requirement(Action.AGENT)]
