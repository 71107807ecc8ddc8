"""The API app: routers, error mapping, /healthz, /metrics; no background work of its own."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Set
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from metalflow import __version__
from metalflow.api import events
from metalflow.api.audit import AuditRecorder
from metalflow.api.errors import install_error_handlers
from metalflow.api.limits import RequestGuard
from metalflow.api.openapi import install_openapi
from metalflow.api.schemas import Ready, Starting
from metalflow.apply import router as apply_router
from metalflow.boot import router as boot_router
from metalflow.boot.dhcp import router as dhcp_router
from metalflow.config import ALL_ROLES, Role
from metalflow.inventory import router as machines
from metalflow.ipam import router as ipam_router
from metalflow.metadata import router as metadata_router
from metalflow.power import router as power_router
from metalflow.services import Reader, Services, ServicesDep, authenticate
from metalflow.templates import router as templates
from metalflow.tenancy import router as tenancy_router
from metalflow.workflows import agent_router, provision_router
from metalflow.workflows import router as workflows

API_PREFIX = "/api/v1"
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready", "model": Ready},
    503: {"description": "Still starting (loading the boot index)", "model": Starting},
}


def create_app(
    services: Services, lifespan: Lifespan | None = None, roles: Set[Role] = ALL_ROLES
) -> FastAPI:
    """The API's routes and error handling; what runs beside them (the index, the workers)
    is started by `lifespan`, which the composition root (`metalflow.server`) passes in.
    Only the routes of `roles` are mounted (the others are a 404); `/healthz` and `/metrics`
    always are. `/healthz` says "starting" until that start-up is done."""

    @asynccontextmanager
    async def ready(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app) if lifespan is not None else contextlib.nullcontext():
            app.state.ready = True
            try:
                yield
            finally:
                app.state.ready = False

    app = FastAPI(
        lifespan=ready,
        title="metalflow",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.services = services
    app.state.ready = False

    # First: machines fetch their scripts and files far more often than operators call the
    # API, and routes are matched in order.
    mounted: list[tuple[str, APIRouter]] = []
    if Role.BOOT in roles:
        app.include_router(boot_router.router)
        mounted.append(("", boot_router.router))
    if Role.API in roles:
        app.include_router(metadata_router.router)
        mounted.append(("", metadata_router.router))
        api = APIRouter(prefix=API_PREFIX)
        for router in (
            machines.router,
            provision_router.router,
            templates.router,
            workflows.router,
            agent_router.router,
            events.router,
            apply_router.router,
            dhcp_router.router,
            power_router.router,
            ipam_router.router,
            tenancy_router.router,
        ):
            api.include_router(router)
            mounted.append((API_PREFIX, router))
        app.include_router(api)
    shown_roles = [role for role in Role if role in roles]

    install_error_handlers(app)
    install_openapi(app, mounted)
    app.add_middleware(AuditRecorder, services=services)
    app.add_middleware(RequestGuard, authenticate=functools.partial(authenticate, services))

    @app.get("/healthz", tags=["health"], responses=HEALTH_RESPONSES)
    def healthz(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse(status_code=503, content=Starting(status="starting").model_dump())
        return JSONResponse(
            Ready(status="ok", version=__version__, roles=shown_roles).model_dump(mode="json")
        )

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(services: ServicesDep, _: Reader) -> PlainTextResponse:
        return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
