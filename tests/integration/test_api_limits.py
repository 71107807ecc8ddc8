"""Bodies the API port refuses before it reads them, against `metalflow up` as operators run it:
what the caller is told, how little of the body the server took, and that it keeps answering."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from metalflow.api.limits import AGENT_REPORT_MAX_BODY, MAX_JSON_DEPTH
from tests.integration.conftest import free_port

METALFLOW = str(Path(sys.executable).with_name("metalflow"))
CHUNK = b"x" * (64 * 1024)
HUGE = 400 * 1024 * 1024
MAX_GROWTH = 64 * 1024 * 1024
"""What the server's peak RSS may grow by while refusing: before, a 400 MB body added 1.2 GB."""
MACHINE = """\
apiVersion: metalflow/v1
kind: Machine
metadata:
  name: m1
spec:
  interfaces:
    - mac: "52:54:00:00:00:01"
"""


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    admin: dict[str, str]
    agent: dict[str, str]

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
        return int(line.split()[1]) * 1024

    def healthy(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    data_dir = tmp_path / "data"
    command = [METALFLOW, "up", "--data-dir", str(data_dir), "--http", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [*command, "--metadata-on-api-port", "--metadata-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("metalflow up never became ready")
        admin = {"Authorization": f"Bearer {(data_dir / 'admin-token').read_text().strip()}"}
        applied = httpx.post(
            f"{url}/api/v1/apply",
            content=MACHINE,
            headers={**admin, "Content-Type": "application/yaml"},
        )
        assert applied.status_code == 200, applied.text
        token = httpx.post(f"{url}/api/v1/machines/m1/agent-token", headers=admin).json()["token"]
        yield Server(process, url, admin, {"Authorization": f"Bearer {token}"})
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Upload:
    """A chunked body of `total` bytes, counting what the client got to send."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self.total:
            self.sent += len(CHUNK)
            yield CHUNK


def test_400_mb_without_a_token_is_a_401_and_the_server_reads_none_of_it(server: Server) -> None:
    before = server.peak_rss()
    upload = Upload(HUGE)
    response = httpx.post(f"{server.url}/api/v1/agent/hello", content=upload, timeout=60)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"]["field"] == "authorization"
    assert upload.sent < HUGE // 4, "the server went on reading the body after its answer"
    assert server.peak_rss() - before < MAX_GROWTH
    assert server.healthy()


def test_a_chunked_body_past_the_limit_is_a_413_naming_it(server: Server) -> None:
    before = server.peak_rss()
    upload = Upload(HUGE)
    response = httpx.post(
        f"{server.url}/api/v1/agent/hello", content=upload, headers=server.agent, timeout=60
    )
    assert response.status_code == 413
    assert str(AGENT_REPORT_MAX_BODY) in response.json()["detail"]["message"]
    assert upload.sent < HUGE // 4
    assert server.peak_rss() - before < MAX_GROWTH
    assert server.healthy()


def test_a_declared_length_past_the_limit_is_a_413_at_once(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/apply",
        content=b"x" * (9 * 1024 * 1024),
        headers={**server.admin, "Content-Type": "application/yaml"},
        timeout=60,
    )
    assert response.status_code == 413
    assert "8388608 bytes" in response.json()["detail"]["message"]
    assert server.healthy()


def test_3000_nested_brackets_are_a_422_saying_so(server: Server) -> None:
    body = b'{"mac": "52:54:00:00:00:01", "attributes": {"x": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    response = httpx.post(
        f"{server.url}/api/v1/agent/hello",
        content=body,
        headers={**server.agent, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == {
        "message": f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; flatten it",
        "field": "body",
    }
    hello = httpx.post(
        f"{server.url}/api/v1/agent/hello",
        json={"mac": "52:54:00:00:00:01", "attributes": {"x": [[[1]]]}},
        headers=server.agent,
    )
    assert hello.status_code == 200, hello.text


def test_a_phone_home_on_the_api_port_is_bounded_too(server: Server) -> None:
    before = server.peak_rss()
    upload = Upload(HUGE)
    response = httpx.post(f"{server.url}/phone-home", content=upload, timeout=60)
    assert response.status_code == 413
    assert upload.sent < HUGE // 4
    assert server.peak_rss() - before < MAX_GROWTH
    assert server.healthy()
