"""The metadata port's HTTP server as clients meet it, over raw sockets on loopback: keep-alive,
pipelining in order, HTTP/1.0, HEAD, bad and oversized requests (answered, counted, closed,
the server unharmed), answers that follow a machine's changes, and the same answers on the API
port with `--metadata-on-api-port`. Callers are picked by X-Forwarded-For from the trusted
proxy 127.0.0.1."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest

from metalflow.index.views import MachineIndex
from metalflow.metadata.service import MetadataService
from metalflow.metadata.wire import MetadataServer
from tests.integration.conftest import free_port
from tests.integration.test_up import METALFLOW, stop
from tests.manifests import interface, machine, stream


def manifest(name: str, hostname: str, mac: str, ip: str) -> dict[str, object]:
    return machine(name, interface(mac, ip, gateway="198.18.0.1"), hostname=hostname)


@dataclass
class Served:
    api_port: int
    metadata_port: int
    token: str
    process: subprocess.Popen[str]

    def apply(self, text: str) -> None:
        found = httpx.post(
            f"http://127.0.0.1:{self.api_port}/api/v1/apply",
            content=text.encode(),
            headers={"Content-Type": "application/yaml", "Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert found.status_code == 200, found.text

    def metrics(self) -> str:
        found = httpx.get(
            f"http://127.0.0.1:{self.api_port}/metrics",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        return found.text

    def connect(self, port: int | None = None) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port or self.metadata_port), timeout=10)

    def wait_for_hostname(self, caller: str, hostname: bytes) -> None:
        """Until the index (refreshed by events, in the background) answers with `hostname`."""
        deadline = time.monotonic() + 10
        with self.connect() as sock:
            while True:
                sock.sendall(get("/latest/meta-data/hostname", caller))
                body = read_responses(sock, 1)[0].body
                if body == hostname or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert body == hostname, f"{caller} is answered {body!r}, not {hostname!r}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir: Path = tmp_path_factory.mktemp("wire") / "data"
    api_port, metadata_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            METALFLOW,
            "up",
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{api_port}",
            "--metadata-port",
            str(metadata_port),
            "--metadata-trusted-proxy",
            "127.0.0.1/32",
            "--metadata-on-api-port",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("metalflow up never became ready") from None
                time.sleep(0.1)
        token = (data_dir / "admin-token").read_text().strip()
        result = Served(api_port, metadata_port, token, process)
        result.apply(
            stream(
                manifest("m1", "one.lab", "52:54:00:00:77:01", "198.18.0.11"),
                manifest("m2", "two.lab", "52:54:00:00:77:02", "198.18.0.12"),
            )
        )
        result.wait_for_hostname("198.18.0.11", b"one.lab")
        result.wait_for_hostname("198.18.0.12", b"two.lab")
        yield result
    finally:
        if process.poll() is None:
            stop(process)


def get(path: str, caller: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: 127.0.0.1", f"X-Forwarded-For: {caller}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Reader:
    """Responses off one socket, framed by their content-length; what is read past one stays
    for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self, *, head: bool = False) -> Response:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                lines = self.buffer[:end].decode("latin-1").split("\r\n")
                headers = {
                    name.lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:])
                }
                length = 0 if head else int(headers.get("content-length", "0"))
                if len(self.buffer) >= end + 4 + length:
                    body = self.buffer[end + 4 : end + 4 + length]
                    self.buffer = self.buffer[end + 4 + length :]
                    return Response(int(lines[0].split()[1]), headers, body)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed before a whole response")
            self.buffer += chunk


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    reader = Reader(sock)
    return [reader.next() for _ in range(count)]


def closed(sock: socket.socket) -> bool:
    """True when the server has closed its end (reads give end of file)."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def counted(served: Served, outcome: str) -> int:
    found = re.search(
        rf'metalflow_metadata_requests_total{{outcome="{outcome}"}} (\S+)', served.metrics()
    )
    return int(float(found.group(1))) if found else 0


def test_pipelined_requests_are_answered_in_order_on_one_connection(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(
            get("/latest/meta-data/hostname", "198.18.0.11")
            + get("/latest/meta-data/hostname", "198.18.0.12")
            + get("/latest/meta-data/no-such-entry", "198.18.0.11")
            + get("/latest/meta-data/local-ipv4", "198.18.0.12")
        )
        answers = read_responses(sock, 4)
        # The same connection goes on serving afterwards (keep-alive).
        sock.sendall(get("/latest/meta-data/hostname", "198.18.0.11"))
        again = read_responses(sock, 1)
    assert [(a.status, a.body) for a in answers] == [
        (200, b"one.lab"),
        (200, b"two.lab"),
        (404, b"meta-data/no-such-entry: not found\n"),
        (200, b"198.18.0.12"),
    ]
    assert answers[0].headers["content-type"] == "text/plain; charset=utf-8"
    assert "date" in answers[0].headers
    assert (again[0].status, again[0].body) == (200, b"one.lab")


def test_http_1_0_and_connection_close_end_the_connection(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(get("/latest/meta-data/hostname", "198.18.0.11", version="1.0"))
        (answer,) = read_responses(sock, 1)
        assert (answer.status, answer.body) == (200, b"one.lab")
        assert answer.headers["connection"] == "close"
        assert closed(sock)
    with served.connect() as sock:
        sock.sendall(get("/latest/meta-data/hostname", "198.18.0.12", "Connection: close"))
        (answer,) = read_responses(sock, 1)
        assert answer.body == b"two.lab" and closed(sock)


def test_head_gives_the_length_without_the_body(served: Served) -> None:
    with served.connect() as sock:
        request = get("/latest/meta-data/hostname", "198.18.0.11").replace(b"GET", b"HEAD", 1)
        sock.sendall(request + get("/latest/meta-data/hostname", "198.18.0.11"))
        reader = Reader(sock)
        head = reader.next(head=True)
        full = reader.next()
    assert head.status == 200 and head.headers["content-length"] == str(len(b"one.lab"))
    assert head.body == b""
    assert full.body == b"one.lab", "the HEAD answer carried a body"


@pytest.mark.parametrize(
    ("request_bytes", "status", "outcome"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed"),
        (
            b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            400,
            "malformed",
        ),
        (b"GET /latest/ HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431, "too_large"),
        (
            b"POST /phone-home HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"
            + b"a" * 70_000,
            413,
            "too_large",
        ),
    ],
    ids=["garbage", "bad-header", "huge-head", "huge-body"],
)
def test_bad_requests_are_answered_counted_and_closed(
    served: Served, request_bytes: bytes, status: int, outcome: str
) -> None:
    before = counted(served, outcome)
    with served.connect() as sock:
        # The server may close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request_bytes)
        (answer,) = read_responses(sock, 1)
        assert answer.status == status, answer.body
        assert answer.headers["connection"] == "close"
        assert closed(sock)
    assert counted(served, outcome) == before + 1
    with served.connect() as sock:
        sock.sendall(get("/latest/meta-data/hostname", "198.18.0.11"))
        assert read_responses(sock, 1)[0].body == b"one.lab", "the server must go on serving"


def test_a_pipelined_phone_home_is_answered_before_what_follows_it(served: Served) -> None:
    post = (
        b"POST /phone-home HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 198.18.0.12\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\n"
        b"instance_id=m2"
    )
    with served.connect() as sock:
        sock.sendall(post + get("/latest/meta-data/hostname", "198.18.0.12"))
        answers = read_responses(sock, 2)
    assert [a.status for a in answers] == [204, 200]
    assert answers[1].body == b"two.lab"


def test_answers_follow_the_machines_changes(served: Served) -> None:
    served.wait_for_hostname("198.18.0.11", b"one.lab")  # now kept by the server
    served.apply(stream(manifest("m1", "renamed.lab", "52:54:00:00:77:01", "198.18.0.11")))
    served.wait_for_hostname("198.18.0.11", b"renamed.lab")
    served.apply(stream(manifest("m1", "one.lab", "52:54:00:00:77:01", "198.18.0.11")))
    served.wait_for_hostname("198.18.0.11", b"one.lab")


def test_the_api_port_gives_the_same_answers_when_asked_to(served: Served) -> None:
    for port in (served.metadata_port, served.api_port):
        with served.connect(port) as sock:
            sock.sendall(get("/metadata", "198.18.0.12") + get("/userdata", "198.18.0.12"))
            document, userdata = read_responses(sock, 2)
        assert document.status == 200
        data = json.loads(document.body)
        assert data["hostname"] == "two.lab"
        assert data["phone_home_url"] == "http://127.0.0.1/phone-home"
        assert userdata.status == 404
    with served.connect() as sock:
        sock.sendall(get("/api/v1/machines", "198.18.0.12"))
        assert read_responses(sock, 1)[0].status == 404, "the API must not be on the metadata port"


def test_slow_and_idle_connections_are_closed() -> None:
    """A request that never completes gets a 408; an idle keep-alive connection is closed; both
    are counted. (The server's own timeouts, shortened: nothing is answered from the service.)"""

    async def scenario() -> tuple[bytes, bytes, collections.Counter[str]]:
        server = MetadataServer(
            cast(MetadataService, object()), MachineIndex(), idle_seconds=0.4, request_seconds=0.4
        )
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        await server.start(listener)
        try:
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            slow_writer.write(b"GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n")
            idle_reader, _ = await asyncio.open_connection("127.0.0.1", port)
            slow = await asyncio.wait_for(slow_reader.read(), timeout=10)
            idle = await asyncio.wait_for(idle_reader.read(), timeout=10)
            return slow, idle, server.outcomes
        finally:
            await server.stop()

    slow, idle, outcomes = asyncio.run(scenario())
    assert slow.startswith(b"HTTP/1.1 408 ") and b"connection: close" in slow
    assert idle == b"", "an idle connection is closed without an answer"
    assert outcomes["timeout"] == 1 and outcomes["idle_closed"] == 1
