"""FastAPI app assembly: routers, error mapping, /healthz, /metrics."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from metalflow import __version__
from metalflow.api import events
from metalflow.api.deps import Reader, Services, ServicesDep, authenticate
from metalflow.api.errors import install_error_handlers
from metalflow.api.limits import RequestGuard
from metalflow.api.openapi import install_openapi
from metalflow.apply import router as apply_router
from metalflow.boot import router as boot_router
from metalflow.boot.dhcp import router as dhcp_router
from metalflow.boot.index import IndexRefresher
from metalflow.inventory import router as machines
from metalflow.metadata import router as metadata_router
from metalflow.power import router as power_router
from metalflow.power.runner import PowerRunner
from metalflow.templates import router as templates
from metalflow.workflows import agent_router
from metalflow.workflows import router as workflows
from metalflow.workflows.controller import run_controller

API_PREFIX = "/api/v1"
WORKER_THREADS = 100
"""Database calls run in threads; sized for many agents reporting at once."""
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Ready",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status", "version"],
                    "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
                }
            }
        },
    },
    503: {
        "description": "Still starting (loading the boot index)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "starting"}},
                }
            }
        },
    },
}


def create_app(services: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.bus.bind(asyncio.get_running_loop())
        if services.relay is not None:
            services.relay.start()
        to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        refresher = IndexRefresher(services.db, services.boot_index)
        services.bus.listeners.append(refresher.on_event)
        await refresher.load_all()
        power = PowerRunner(
            services.db,
            services.keyring,
            workers=services.settings.power_workers,
            sync_interval=services.settings.power_sync_interval,
        )
        services.bus.listeners.append(power.on_event)
        background = [
            asyncio.create_task(refresher.run()),
            asyncio.create_task(services.boot_events.run()),
            asyncio.create_task(power.run()),
        ]
        controller = asyncio.create_task(
            run_controller(
                services.db,
                services.settings.controller_interval,
                services.settings.event_retention_hours,
            )
        )
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            controller.cancel()
            for task in background:
                task.cancel()
            services.bus.listeners.remove(refresher.on_event)
            services.bus.listeners.remove(power.on_event)
            await services.boot_events.flush()
            if services.relay is not None:
                services.relay.stop()

    app = FastAPI(
        lifespan=lifespan,
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
    app.include_router(boot_router.router)
    app.include_router(metadata_router.router)
    api = APIRouter(prefix=API_PREFIX)
    for router in (
        machines.router,
        templates.router,
        workflows.router,
        agent_router.router,
        events.router,
        apply_router.router,
        dhcp_router.router,
        power_router.router,
    ):
        api.include_router(router)
    app.include_router(api)

    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(RequestGuard, authenticate=functools.partial(authenticate, services))

    @app.get("/healthz", tags=["health"], responses=HEALTH_RESPONSES)
    def healthz(request: Request) -> JSONResponse:
        if not request.app.state.ready:
            return JSONResponse(status_code=503, content={"status": "starting"})
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics(services: ServicesDep, _: Reader) -> PlainTextResponse:
        return PlainTextResponse(services.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
