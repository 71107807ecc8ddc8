"""The API app: routers, error mapping, /healthz, /metrics; no background work of its own.

Routing cost: FastAPI (0.165) includes a router lazily, as one route that scans the included
router's routes when asked whether it matches and again when it handles the request, and an
included router inside another is scanned once more per level. The API's routers are therefore
included in the app itself under /api/v1 (one level), and `SegmentDispatch`, placed before them,
asks only the routers that have a route under the request's first path segment (/api/v1/ipam/...:
the IPAM router), so a request is matched against one router instead of every router before its
own. FastAPI has no eager (flattening) include any more, and Starlette's `Mount` would change the
routes' paths in `scope["route"]` and the OpenAPI document; the routers stay where FastAPI put
them, so the document, 404 and 405 answers and `scope["route"]` are FastAPI's own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence, Set
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

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
from metalflow.cloud import catalogue_router, hardware_router
from metalflow.cloud.metal import METAL_PREFIX
from metalflow.cloud.routers import METAL_ROUTERS
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


CHOSEN_KEY = "metalflow.api_router"
"""Where `SegmentDispatch.matches` leaves the included router that matched, for its `handle`."""


def first_segments(router: APIRouter) -> frozenset[str] | None:
    """The literal first path segments of the router's routes; None when one of them could
    match any segment (a parameter there, or a route without a path of its own)."""
    segments: set[str] = set()
    for route in router.routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not path.startswith("/"):
            return None
        segment = path.split("/")[1]
        if "{" in segment:
            return None
        segments.add(segment)
    return frozenset(segments)


class SegmentDispatch(BaseRoute):
    """The routers included under `prefix` that may hold a request's route, by its first path
    segment after the prefix: a FULL match of theirs (the first in inclusion order, as the app's
    own scan would find it) is handed to them; anything else (no route, another method, a
    trailing slash) is left to the app's routes after this one, which answer as before."""

    def __init__(
        self, prefix: str, included: Sequence[tuple[BaseRoute, frozenset[str] | None]]
    ) -> None:
        self.prefix = prefix + "/"
        known = {segment for _, segments in included for segment in segments or ()}
        self.candidates = {
            segment: tuple(
                route for route, segments in included if segments is None or segment in segments
            )
            for segment in known
        }
        self.anywhere = tuple(route for route, segments in included if segments is None)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("root_path") or not path.startswith(self.prefix):
            return Match.NONE, {}
        segment = path[len(self.prefix) :].partition("/")[0]
        for route in self.candidates.get(segment, self.anywhere):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {**child_scope, CHOSEN_KEY: route}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute = scope.pop(CHOSEN_KEY)
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        """Names are the included routers' (after this route in the app's routes)."""
        raise NoMatchFound(name, path_params)


def include_under(app: FastAPI, prefix: str, routers: Sequence[APIRouter]) -> None:
    """Include `routers` in the app under `prefix`, in order, behind one `SegmentDispatch`."""
    first = len(app.router.routes)
    for router in routers:
        app.include_router(router, prefix=prefix)
    included = app.router.routes[first:]
    segments = [first_segments(router) for router in routers]
    app.router.routes.insert(
        first, SegmentDispatch(prefix, list(zip(included, segments, strict=True)))
    )


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
        api_routers = (
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
            hardware_router.provider_router,
            catalogue_router.router,
        )
        include_under(app, API_PREFIX, api_routers)
        mounted.extend((API_PREFIX, router) for router in api_routers)
        include_under(app, METAL_PREFIX, METAL_ROUTERS)
        mounted.extend((METAL_PREFIX, router) for router in METAL_ROUTERS)
        tenancy_router.sign_in_state_of(app)
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
