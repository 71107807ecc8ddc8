"""`metalflow up` as an operator runs it: first start, restart, and a clean Ctrl-C."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from tests.integration.conftest import free_port

METALFLOW = str(Path(sys.executable).with_name("metalflow"))


def start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [METALFLOW, "up", "--data-dir", str(data_dir), "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"metalflow up never became ready:\n{process.communicate()[0]}")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("metalflow up did not stop on Ctrl-C") from None
    return output


def test_first_start_restart_and_clean_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    process = start(data_dir, port)
    token = (data_dir / "admin-token").read_text().strip()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data_dir.iterdir()}
    assert {"admin-token", "metalflow.db", "metalflow.db-wal", "metalflow.db-shm"} <= set(modes)
    assert modes == dict.fromkeys(modes, 0o600)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/api/v1/machines", headers=headers).json()["count"] == 0

    streamed: list[str] = []

    def follow() -> None:
        with httpx.stream(
            "GET",
            f"{url}/api/v1/events",
            params={"follow": "true"},
            headers=headers,
            timeout=60,
        ) as response:
            streamed.extend(response.iter_lines())

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.5)
    output = stop(process)
    reader.join(timeout=30)
    assert process.returncode in (0, 130, -signal.SIGINT), output
    assert "Traceback" not in output
    assert not reader.is_alive(), "the event stream stayed open after the server stopped"

    process = start(data_dir, port)
    try:
        assert (data_dir / "admin-token").read_text().strip() == token
        assert httpx.get(f"{url}/api/v1/machines", headers=headers).status_code == 200
    finally:
        stop(process)


def test_sqlite_files_an_older_version_left_readable_are_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "metalflow.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    database.dispose()
    for name in ("metalflow.db", "metalflow.db-journal"):
        (tmp_path / name).touch()
        (tmp_path / name).chmod(0o644)

    database = Database(f"sqlite:///{path}")
    with database.write() as session:
        session.execute(text("CREATE TABLE probe (x INTEGER)"))
    try:
        modes = {item.name: stat.S_IMODE(item.stat().st_mode) for item in tmp_path.iterdir()}
        assert "metalflow.db-wal" in modes
        assert modes == dict.fromkeys(modes, 0o600)
    finally:
        database.dispose()
