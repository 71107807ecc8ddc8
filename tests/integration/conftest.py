"""Shared fixtures: both storage backends, a real metalflow server on a real socket."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, make_url, text
from typer.testing import CliRunner

from metalflow.config import Settings
from metalflow.server import build_app, build_services
from metalflow.services import Services
from tests.prerequisites import unavailable

PG_ENV = "METALFLOW_TEST_DATABASE_URL"


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        message = (
            f"{PG_ENV} is not set: run the suite with `bash scripts/test.sh`, which starts a"
            " throwaway PostgreSQL"
        )
        unavailable(message)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return worker_database(url, worker) if worker else url


@functools.cache
def worker_database(url: str, worker: str) -> str:
    """A database of the pytest-xdist worker's own on the server at `url`, created on first use:
    reset_postgres drops the schema, which must not happen under another worker's test."""
    server = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{server.database}_{worker}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def reset_postgres(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        # A previous test's server may still be closing its connections; they would deadlock
        # the drop.
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    database = None
    if request.param == "postgresql":
        database = postgres_url()
        reset_postgres(database)
    return Settings(
        data_dir=tmp_path / "data",
        database=database,
        http=f"127.0.0.1:{free_port()}",
        controller_interval=0.1,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    settings: Settings
    services: Services
    url: str
    admin_token: str
    thread: threading.Thread
    server: uvicorn.Server

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
        )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.services.db.dispose()


def start_server(settings: Settings) -> LiveServer:
    services = build_services(settings)
    config = uvicorn.Config(
        build_app(services),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{settings.http}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        raise RuntimeError("metalflow did not become ready")
    token = (settings.data_dir / "admin-token").read_text().strip()
    return LiveServer(settings, services, url, token, thread, server)


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    server = start_server(settings)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client() as client:
        yield client


def apply(api: httpx.Client, text_: str, *, dry_run: bool = False) -> httpx.Response:
    return api.post(
        "/api/v1/apply",
        params={"dry_run": str(dry_run).lower()},
        content=text_.encode(),
        headers={"Content-Type": "application/yaml"},
    )


class AgentClient:
    """A test agent speaking the HTTP protocol the way the real agent does."""

    def __init__(self, url: str, token: str, mac: str) -> None:
        self.mac = mac
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def hello(self, **attributes: Any) -> httpx.Response:
        return self.http.post(
            "/api/v1/agent/hello", json={"mac": self.mac, "attributes": attributes}
        )

    def next(self, wait: float = 0) -> dict[str, Any] | None:
        response = self.http.get("/api/v1/agent/next", params={"wait": wait})
        if response.status_code == 204:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def report(self, action_id: int, status: str, **fields: Any) -> httpx.Response:
        return self.http.post(
            f"/api/v1/agent/actions/{action_id}/status", json={"status": status, **fields}
        )

    def logs(self, action_id: int, lines: list[str], seq: int = 0) -> httpx.Response:
        return self.http.post(
            f"/api/v1/agent/actions/{action_id}/logs", json={"seq": seq, "lines": lines}
        )

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def cli(live: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """The CLI pointed at the live server, finding the admin token in its data dir, with no
    credentials file of `metalflow login` but the test's own and a wide terminal."""
    monkeypatch.setenv("METALFLOW_URL", live.url)
    monkeypatch.delenv("METALFLOW_TOKEN", raising=False)
    monkeypatch.setenv("METALFLOW_DATA_DIR", str(live.settings.data_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


from tests.integration.bootlab import lab  # noqa: E402, F401  (the network-namespace fixture)
