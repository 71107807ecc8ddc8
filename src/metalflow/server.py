"""`metalflow up`: the composition root. Storage, keys and tokens, the services container, the
background workers, the app, the boot servers and the metadata port of one process, on one
asyncio loop; the packages below only receive what they need from here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType

import uvicorn
from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp

from metalflow.api.app import create_app
from metalflow.boot.errors import BootSetupError
from metalflow.boot.runtime import BootServers, check_boot_files, plan_boot
from metalflow.cloud import devices
from metalflow.cloud.catalogue import classify_reported
from metalflow.config import Role, Settings
from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.events import Event, EventBus, PostgresRelay, load_events, persist
from metalflow.index.store import IndexRefresher
from metalflow.index.views import MachineIndex
from metalflow.inventory.discovery import DiscoveryGate, Rate
from metalflow.ipam import service as ipam
from metalflow.ipam.sweeper import run_quarantine_sweeps
from metalflow.metadata.router import MetadataGate
from metalflow.metadata.service import MetadataService
from metalflow.metadata.wire import MetadataServer
from metalflow.metrics import Metrics
from metalflow.power.runner import PowerRunner
from metalflow.recorder import BootEventRecorder
from metalflow.services import Services
from metalflow.tenancy import policy
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.auth import Authenticator, create_api_token, has_admin_token
from metalflow.tenancy.retention import run_audit_purges
from metalflow.tenancy.secrets import (
    Keyring,
    load_or_create_master_key,
    make_data_dir,
    write_admin_token,
)
from metalflow.tls import TlsFiles, TlsSetupError, self_signed, server_context
from metalflow.workflows import engine as workflows
from metalflow.workflows import protocol
from metalflow.workflows.controller import run_controller
from metalflow.workflows.tables import Workflow

log = logging.getLogger("metalflow")
WORKER_THREADS = 100
"""Database calls run in threads; sized for many agents reporting at once."""
SHUTDOWN_GRACE_SECONDS = 5
"""What a request still running at shutdown gets before it is cancelled."""
ADMIN_TOKEN_LOCK = 0x6D66_6174
"""Advisory lock key: processes starting together on one PostgreSQL create one admin token."""


def resolve_key(
    session: Session, key: str, address: str | None
) -> tuple[bool, policy.Principal] | None:
    """The tenancy service's answer for an API key, as the Authenticator asks for it."""
    identity = tenancy.authenticate_key(session, key, address, utcnow())
    if identity is None:
        return None
    return identity.read_only, tenancy.principal_for_key(session, identity)


def build_services(settings: Settings) -> Services:
    """Open (and upgrade) the database, load keys, create the first admin token if none."""
    make_data_dir(settings.data_dir)
    bus = EventBus()
    db = Database(
        settings.database_url,
        after_commit=bus.publish,
        before_commit=[classify_reported, persist],
        pool_size=settings.db_pool_size,
    )
    upgrade(db)
    db.before_commit.insert(0, devices.finish_deletions(settings))
    relay = None
    if not db.is_sqlite:

        def load(ids: list[int]) -> list[Event]:
            with db.read() as session:
                return load_events(session, ids)

        dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        relay = PostgresRelay(bus, dsn, load)
        db.before_commit.append(relay.announce)
    keyring = Keyring(load_or_create_master_key(settings.data_dir))
    token = None
    with db.write() as session:
        if not db.is_sqlite:
            session.execute(select(func.pg_advisory_xact_lock(ADMIN_TOKEN_LOCK)))
        if not has_admin_token(session):
            token = create_api_token(session, "admin")
    if token is not None:
        path = write_admin_token(settings.data_dir, token)
        log.info("event=admin_token.created path=%s", path)

    def count_workflows() -> dict[str, int]:
        with db.read() as session:
            rows = session.execute(select(Workflow.state, func.count()).group_by(Workflow.state))
            return {state: count for state, count in rows}

    metrics = Metrics(count_workflows)
    metrics.register_prefix_usage(ipam.prefix_usage_reader(db))
    bus.listeners.append(metrics.on_event)
    boot_events = BootEventRecorder(db)
    metrics.register_counts(
        "metalflow_boot_events_dropped",
        "Boot events not written: too many distinct ones pending at once",
        "reason",
        lambda: {"pending_full": boot_events.dropped},
    )
    return Services(
        settings=settings,
        db=db,
        bus=bus,
        keyring=keyring,
        auth=Authenticator(keyring, run_records=protocol.run_record, resolve_key=resolve_key),
        metrics=metrics,
        index=MachineIndex(),
        boot_events=boot_events,
        discovery_gate=DiscoveryGate(
            Rate(settings.discovery_rate_per_address), Rate(settings.discovery_rate)
        ),
        relay=relay,
    )


class Workers:
    """What runs beside the requests, by role: the event relay (always, on PostgreSQL), the
    index refresher and the boot event recorder (boot, metadata: the only readers of the index
    and the only recorders), the power runner (power) and the workflow controller (controller)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[Event], None]] = []

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        """Bind the bus to this loop and load the index before anything is answered."""
        services = self.services
        services.bus.bind(asyncio.get_running_loop())
        if services.relay is not None:
            services.relay.start()
        to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        roles = services.settings.roles
        if roles & {Role.BOOT, Role.METADATA}:
            refresher = IndexRefresher(services.db, services.index)
            self._listen(refresher.on_event)
            await refresher.load_all()
            self._tasks.append(asyncio.create_task(refresher.run()))
            self._tasks.append(asyncio.create_task(services.boot_events.run()))
        if Role.POWER in roles:
            power = PowerRunner(
                services.db,
                services.keyring,
                on_job_finished=workflows.power_job_finished,
                workers=services.settings.power_workers,
                sync_interval=services.settings.power_sync_interval,
            )
            self._listen(power.on_event)
            self._tasks.append(asyncio.create_task(power.run()))
        if Role.CONTROLLER in roles:
            self._tasks.append(
                asyncio.create_task(
                    run_controller(
                        services.db,
                        services.settings.controller_interval,
                        services.settings.event_retention_hours,
                    )
                )
            )
            self._tasks.append(asyncio.create_task(run_quarantine_sweeps(services.db)))
            if services.settings.audit_retention_days:
                retention = dt.timedelta(days=services.settings.audit_retention_days)
                self._tasks.append(asyncio.create_task(run_audit_purges(services.db, retention)))

    def _listen(self, listener: Callable[[Event], None]) -> None:
        self.services.bus.listeners.append(listener)
        self._listeners.append(listener)

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        self._tasks = []
        for listener in self._listeners:
            self.services.bus.listeners.remove(listener)
        self._listeners = []
        await self.services.boot_events.flush()
        if self.services.relay is not None:
            self.services.relay.stop()


def build_app(services: Services, metadata: MetadataService | None = None) -> ASGIApp:
    """The API port's app with this process's workers started and stopped by its lifespan;
    without the metadata role, metadata paths are the app's 404 like any unknown path."""
    roles = services.settings.roles
    app = create_app(services, lifespan=Workers(services).lifespan, roles=roles)
    if Role.METADATA not in roles:
        return app
    return MetadataGate(app, metadata or MetadataService(services))


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    plan = None
    if Role.BOOT in settings.roles:
        check_boot_files(settings)
        plan = plan_boot(settings, settings.interface) if settings.interface else None
    services = build_services(settings)
    boot = BootServers(settings, services, plan) if plan is not None else None
    log.info(
        "event=up http=%s https=%s database=%s data_dir=%s roles=%s",
        settings.http,
        settings.https or "off",
        services.db.engine.url.render_as_string(hide_password=True),
        settings.data_dir,
        ",".join(role for role in Role if role in settings.roles),
    )
    https = https_listener(settings)
    metadata_socket = _metadata_socket(settings) if Role.METADATA in settings.roles else None
    metadata = MetadataService(services)
    config = uvicorn.Config(
        build_app(services, metadata),
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        access_log=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )
    metadata_server = None
    if metadata_socket is not None:
        metadata_server = _metadata_server(metadata, services)
    server = _Server(config, https, services.bus, boot, metadata_server, metadata_socket)
    server.run(sockets=[config.bind_socket()])
    if server.boot_error is not None:
        raise server.boot_error


@dataclass(frozen=True)
class HttpsListener:
    """The second listener: the same app over TLS, beside the plain HTTP one that machines
    boot and read their metadata from."""

    socket: socket.socket
    context: ssl.SSLContext
    files: TlsFiles


def https_listener(settings: Settings) -> HttpsListener | None:
    """The HTTPS listener `settings` ask for (its certificate made first with `--tls
    self-signed`), bound now so that a taken port is an error before anything starts."""
    if settings.https is None or settings.https_port is None:
        return None
    if settings.tls_cert is not None and settings.tls_key is not None:
        files = TlsFiles(settings.tls_cert, settings.tls_key, None)
    else:
        hosts = [settings.https_host or "", settings.http_host]
        files = self_signed(settings.data_dir, hosts)
    context = server_context(files)
    host = settings.https_host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, settings.https_port), family=family, backlog=2048)
    except OSError as exc:
        raise TlsSetupError(
            f"--https {settings.https}: cannot listen there: {exc}", field="https"
        ) from None
    return HttpsListener(sock, context, files)


class HttpsServer(uvicorn.Server):
    """uvicorn's server with the HTTPS listener beside its own: one app, one lifespan, one set
    of connections that shutdown closes. (A second uvicorn.Server would run the app's
    lifespan, and so the workers, twice.)"""

    def __init__(self, config: uvicorn.Config, https: HttpsListener | None) -> None:
        super().__init__(config)
        self.https = https

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.https is None or not self.started:
            return
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            """As uvicorn's own startup makes them: the scheme follows the transport."""
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )

        loop = asyncio.get_running_loop()
        listening = await loop.create_server(
            create_protocol, sock=self.https.socket, ssl=self.https.context, backlog=config.backlog
        )
        self.servers.append(listening)
        log.info(
            "event=https.listening address=%s cert=%s ca_bundle=%s",
            self.https.socket.getsockname()[:2],
            self.https.files.cert,
            self.https.files.ca or "the certificate's own CA (--tls-cert)",
        )


def _metadata_socket(settings: Settings) -> socket.socket | None:
    """The metadata service's listening socket, on the API's address (0 = no such port)."""
    if settings.metadata_port == 0:
        return None
    if settings.metadata_port == settings.http_port:
        raise BootSetupError(
            f"--metadata-port {settings.metadata_port} is the API port; pick another port, or"
            " --metadata-port 0 --metadata-on-api-port",
            field="metadata_port",
        )
    host = settings.http_host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, settings.metadata_port), family=family, backlog=2048)
    except OSError as exc:
        raise BootSetupError(
            f"--metadata-port {settings.metadata_port}: cannot listen on {host}: {exc}"
            " (another metadata service running? --metadata-port 0 turns it off)",
            field="metadata_port",
        ) from None


def _metadata_server(metadata: MetadataService, services: Services) -> MetadataServer:
    server = MetadataServer(metadata, services.index)
    services.metrics.register_counts(
        "metalflow_metadata_requests",
        "Metadata port requests by answer status, or why none was made (malformed, too_large,"
        " timeout, idle_closed)",
        "outcome",
        lambda: server.outcomes,
    )
    return server


class _Server(HttpsServer):
    """Runs the boot servers and the metadata port in uvicorn's loop once the app is up (its
    index loaded), and ends event streams and long polls as soon as a stop is asked for, so they
    close cleanly instead of being cancelled after the grace period."""

    def __init__(
        self,
        config: uvicorn.Config,
        https: HttpsListener | None,
        bus: EventBus,
        boot: BootServers | None,
        metadata: MetadataServer | None,
        metadata_socket: socket.socket | None,
    ) -> None:
        super().__init__(config, https)
        self.bus = bus
        self.boot = boot
        self.boot_error: BootSetupError | None = None
        self.metadata = metadata
        self.metadata_socket = metadata_socket

    async def main_loop(self) -> None:
        """Start the boot servers once the app is up; if their ports cannot be had, stop the
        way Ctrl-C does (the app's shutdown runs) and let `serve` report why."""
        if self.boot is not None:
            try:
                await self.boot.start()
            except BootSetupError as exc:
                self.boot_error = exc
                self.boot = None
                return
        if self.metadata is not None and self.metadata_socket is not None:
            await self.metadata.start(self.metadata_socket)
            log.info("event=metadata.listening address=%s", self.metadata_socket.getsockname()[:2])
        # What start-up built (modules, the app, the boot index) lives as long as the process:
        # collected once, then frozen out of the collector's generations, full collections stop
        # rescanning it (their pauses were the p99 of the boot endpoints in bench/ipxe_script.py).
        gc.collect()
        gc.freeze()
        await super().main_loop()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.boot is not None:
            await self.boot.stop()
        if self.metadata is not None:
            await self.metadata.stop()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.bus.close_soon()
        super().handle_exit(sig, frame)
