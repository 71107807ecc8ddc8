"""Several metalflow processes on one PostgreSQL: a change on one wakes agents on another."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from metalflow.config import Settings
from tests.integration.conftest import (
    AgentClient,
    free_port,
    postgres_url,
    reset_postgres,
    start_server,
)
from tests.manifests import machine_yaml, simple_template


def test_long_poll_on_one_replica_wakes_on_change_made_through_another(tmp_path: Path) -> None:
    database = postgres_url()
    reset_postgres(database)
    first = start_server(
        Settings(data_dir=tmp_path / "a", database=database, http=f"127.0.0.1:{free_port()}")
    )
    (tmp_path / "b").mkdir()
    for shared in ("secret.key", "admin-token"):
        (tmp_path / "b" / shared).write_bytes((tmp_path / "a" / shared).read_bytes())
    second = start_server(
        Settings(data_dir=tmp_path / "b", database=database, http=f"127.0.0.1:{free_port()}")
    )
    try:
        with first.client() as api:
            api.post(
                "/api/v1/apply",
                content=machine_yaml("m1", "52:54:00:00:00:01") + "---\n" + simple_template(),
                headers={"Content-Type": "application/yaml"},
            ).raise_for_status()
            token = api.post("/api/v1/machines/m1/agent-token").json()["token"]
        agent = AgentClient(second.url, token, "52:54:00:00:00:01")
        got: list[dict[str, Any] | None] = []
        waiter = threading.Thread(target=lambda: got.append(agent.next(wait=120)))
        waiter.start()
        time.sleep(0.5)
        with first.client() as api:
            api.post("/api/v1/machines/m1/provision", json={"template": "ubuntu"})
        waiter.join(timeout=60)
        assert got, "the long poll was not woken by the change made on the other replica"
        assert got[0] is not None and got[0]["name"] == "step-0"
        agent.close()
    finally:
        second.stop()
        first.stop()
