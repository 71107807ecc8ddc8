"""Two processes with different `--roles` on one PostgreSQL: the one without `controller` never
ends a workflow past its deadline, the one without `power` never runs a power job; the other
process does both, and each answers only the routes of its roles."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from metalflow.config import Role, Settings
from tests.integration.conftest import (
    AgentClient,
    LiveServer,
    apply,
    free_port,
    postgres_url,
    reset_postgres,
    start_server,
)
from tests.manifests import machine_yaml, template_yaml

pytestmark = pytest.mark.postgres

FRONT = frozenset({Role.API, Role.BOOT, Role.METADATA})
BACK = frozenset({Role.CONTROLLER, Role.POWER})
CONTROLLER_INTERVAL = 0.1
QUIET_SECONDS = 2.0
"""How long the process without the role is watched leaving the work alone: twenty controller
sweeps, and far more than a power runner takes to claim a job it was woken for."""

Start = Callable[[frozenset[Role]], LiveServer]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts processes on one fresh PostgreSQL database sharing one key and admin token."""
    database = postgres_url()
    reset_postgres(database)
    started: list[LiveServer] = []

    def run(roles: frozenset[Role]) -> LiveServer:
        data_dir = tmp_path / f"p{len(started)}"
        if started:
            data_dir.mkdir()
            for shared in ("secret.key", "admin-token"):
                (data_dir / shared).write_bytes(
                    (started[0].settings.data_dir / shared).read_bytes()
                )
        settings = Settings(
            data_dir=data_dir,
            database=database,
            http=f"127.0.0.1:{free_port()}",
            roles=roles,
            controller_interval=CONTROLLER_INTERVAL,
            power_sync_interval=0,
        )
        started.append(start_server(settings))
        return started[-1]

    try:
        yield run
    finally:
        for server in reversed(started):
            server.stop()


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "never reached"
        time.sleep(0.1)
    return found


def watch(check: Callable[[], bool], until: float) -> None:
    """Asserts `check` all along until the monotonic time `until`."""
    while time.monotonic() < until:
        assert check()
        time.sleep(0.1)


def test_only_the_process_with_the_controller_ends_a_workflow_past_its_deadline(
    start: Start,
) -> None:
    front = start(FRONT)
    template = template_yaml(
        "brief", [{"name": "wipe", "image": "wipe", "timeout": 600}], global_timeout=1
    )
    with front.client() as api:
        assert apply(api, machine_yaml("m1", "52:54:00:00:00:01") + "---\n" + template).is_success
        token = api.post("/api/v1/machines/m1/agent-token").json()["token"]
        workflow = api.post("/api/v1/machines/m1/provision", json={"template": "brief"}).json()
        agent = AgentClient(front.url, token, "52:54:00:00:00:01")
        try:
            assert agent.next() is not None
        finally:
            agent.close()

        def state() -> str:
            shown: dict[str, Any] = api.get(f"/api/v1/workflows/{workflow['id']}").json()
            return str(shown["state"])

        shown = api.get(f"/api/v1/workflows/{workflow['id']}").json()
        assert shown["state"] == "RUNNING"
        started = dt.datetime.fromisoformat(shown["started_at"])
        past_deadline = (
            started + dt.timedelta(seconds=1) - dt.datetime.now(dt.UTC)
        ).total_seconds()
        watch(lambda: state() == "RUNNING", time.monotonic() + past_deadline + QUIET_SECONDS)

        start(BACK)
        wait_for(lambda: state() == "TIMEOUT")
        reasons = api.get(f"/api/v1/workflows/{workflow['id']}").json()["reason"]
        assert "global timeout" in reasons


def test_only_the_process_with_power_runs_a_power_job(start: Start) -> None:
    front = start(FRONT)
    host = f"fake-{uuid.uuid4().hex[:8]}"
    manifest = f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: p1}}
spec:
  interfaces: [{{mac: "52:54:00:00:99:01"}}]
  bmc: {{driver: fake, address: {host}, username: admin, password: secret}}
"""
    with front.client() as api:
        assert apply(api, manifest).is_success
        queued = api.post("/api/v1/machines/p1/power", json={"action": "on"})
        assert queued.status_code == 202, queued.text
        job = queued.json()["id"]

        def state() -> str:
            return str(api.get(f"/api/v1/power-jobs/{job}").json()["state"])

        assert state() == "queued"
        watch(lambda: state() == "queued", time.monotonic() + QUIET_SECONDS)

        back = start(BACK)
        wait_for(lambda: state() == "succeeded")
        assert api.get("/api/v1/machines/p1/power").json()["state"] == "on"

    assert httpx.get(f"{front.url}/healthz").json()["roles"] == ["api", "boot", "metadata"]
    assert httpx.get(f"{back.url}/healthz").json()["roles"] == ["controller", "power"]
    with back.client() as other:
        assert other.get("/api/v1/machines/p1").status_code == 404
        assert other.get("/boot/auto.ipxe").status_code == 404
        assert other.get("/metrics").status_code == 200
