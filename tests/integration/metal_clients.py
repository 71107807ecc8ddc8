"""A live metalflow with its HTTPS listener (`--tls self-signed`) and two tenants, for the Metal
API's official clients: packet-python 1.44.3 and equinix-metal 0.11.0, unmodified.

Import the fixtures into a test module (`from tests.integration.metal_clients import cloud  #
noqa: F401`); `cloud` runs on both databases (the `settings` fixture of conftest). packet-python
reads its CA bundle from `REQUESTS_CA_BUNDLE`, set for the test with `monkeypatch`.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import packet
import pytest
import uvicorn
from equinix_metal.api_client import ApiClient
from equinix_metal.configuration import Configuration

from metalflow.config import Settings, TlsMode
from metalflow.db.base import utcnow
from metalflow.server import HttpsServer, build_app, build_services, https_listener
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.policy import ProjectRole
from tests.integration.conftest import LiveServer, free_port


@dataclass(frozen=True)
class Tenant:
    user_id: str
    email: str
    organization_id: str
    project_id: str
    key: str
    """A read-write user key of the project's owner."""


@dataclass
class MetalCloud:
    live: LiveServer
    https_port: int
    ca: Path
    a: Tenant
    b: Tenant

    @property
    def end_point(self) -> str:
        """packet-python's `Manager.end_point`: it puts `https://` before it itself."""
        return f"127.0.0.1:{self.https_port}/metal/v1"

    @property
    def url(self) -> str:
        return f"https://{self.end_point}"

    def packet(self, tenant: Tenant) -> packet.Manager:
        manager = packet.Manager(auth_token=tenant.key)
        manager.end_point = self.end_point
        return manager

    def equinix(self, tenant: Tenant) -> ApiClient:
        configuration = Configuration(
            host=self.url, api_key={"x_auth_token": tenant.key}, ssl_ca_cert=str(self.ca)
        )
        return ApiClient(configuration)

    def http(self, token: str | None = None) -> httpx.Client:
        """A plain client of the Metal API over HTTPS, trusting the data dir's CA (with the
        admin token unless given another)."""
        return httpx.Client(
            base_url=self.url,
            headers={"X-Auth-Token": token or self.live.admin_token},
            verify=ssl.create_default_context(cafile=str(self.ca)),
            timeout=30,
        )


def start_https_server(settings: Settings) -> tuple[LiveServer, int]:
    """As conftest's start_server, with the HTTPS listener beside the plain one."""
    services = build_services(settings)
    listener = https_listener(settings)
    assert listener is not None
    config = uvicorn.Config(
        build_app(services),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
    )
    server = HttpsServer(config, listener)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{settings.http}"
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("metalflow did not start")
    token = (settings.data_dir / "admin-token").read_text().strip()
    return LiveServer(settings, services, url, token, thread, server), int(
        listener.socket.getsockname()[1]
    )


def make_tenant(live: LiveServer, name: str) -> Tenant:
    """A person owning an organization and one project in it, with a user key."""
    with live.services.db.write() as session:
        email = f"{name}@example.test"
        user = tenancy.create_user(session, email, f"{name.title()} Tester")
        organization = tenancy.create_organization(session, f"{name}-org", user.id)
        project = tenancy.create_project(session, organization.id, f"{name}-web")
        tenancy.add_project_member(session, project.id, user.id, ProjectRole.OWNER)
        key = tenancy.create_key(session, f"{name}-key", now=utcnow(), user_id=user.id)
        return Tenant(user.id, email, organization.id, project.id, key.secret)


@pytest.fixture
def cloud(settings: Settings) -> Iterator[MetalCloud]:
    https = f"127.0.0.1:{free_port()}"
    live, port = start_https_server(
        settings.model_copy(update={"https": https, "tls": TlsMode.SELF_SIGNED})
    )
    try:
        ca = live.settings.data_dir / "tls" / "ca.pem"
        yield MetalCloud(live, port, ca, make_tenant(live, "ada"), make_tenant(live, "bob"))
    finally:
        live.stop()
