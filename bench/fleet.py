#!/usr/bin/env python3
"""Fleet benchmark: N simulated agents drive zero-time workflows through the agent protocol.

Starts metalflow (and, for --database postgresql, a throwaway PostgreSQL cluster) itself, sets up
machines, a no-op template, agent tokens and workflows (not measured), then measures

1. the agent phase: every agent loops `GET /agent/next?wait=0` -> `POST /agent/actions/{id}/status`
   until its workflows are done (each round trip = one action handed out and completed);
2. the baseline phase: the same number of `GET /agent/ping` pairs at the same concurrency
   (two authenticated no-op requests ~ one next+status round trip).

and prints latency percentiles, throughput and the ratio of the two ("control-plane overhead vs
no-op endpoint"). Only loopback traffic; every phase has a hard time limit; only processes this
script started are stopped (by PID). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_NAME = "bench"
ERROR_SAMPLES = 5


# --------------------------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinner(cpus: set[int] | None) -> Callable[[], None]:
    """A preexec_fn that pins the child process to `cpus` (no-op for None)."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return pin


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (metalflow up shuts down cleanly), then SIGKILL if it has not ended in 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class Stats:
    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def summary(self) -> dict[str, float]:
        data = sorted(self.values)
        return {
            "count": len(data),
            "p50_ms": percentile(data, 0.50) * 1000,
            "p99_ms": percentile(data, 0.99) * 1000,
            "max_ms": (data[-1] if data else float("nan")) * 1000,
        }


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of one process, plus that of its exited children (cutime+cstime: e.g. the
    PostgreSQL backends a postmaster reaped), from /proc; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(value) for value in fields[11:15]) / ticks


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (PostgreSQL backends of a postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def system_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named process groups between start() and stop()."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}
        self.busy_before = 0.0

    def _snapshot(self) -> dict[str, dict[int, float]]:
        snap: dict[str, dict[int, float]] = {}
        for name, pids in self.groups.items():
            snap[name] = {}
            for pid in pids():
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    snap[name][pid] = seconds
        return snap

    def start(self) -> None:
        self.before = self._snapshot()
        self.busy_before = system_busy_seconds()

    def stop(self) -> None:
        after = self._snapshot()
        busy = system_busy_seconds() - self.busy_before
        for name, per_pid in after.items():
            old = self.before.get(name, {})
            self.used[name] = sum(now - old.get(pid, 0.0) for pid, now in per_pid.items())
        # everything else on the machine (other users' jobs compete for the same 2 cores)
        self.used["other"] = max(0.0, busy - sum(self.used.values()))


# --------------------------------------------------------------------------------------------
# HTTP clients: httpx (default) or a minimal stdlib keep-alive HTTP/1.1 client


Request = Callable[[str, str, str, bytes | None, str], Awaitable[tuple[int, bytes]]]


class HttpxClient:
    def __init__(self, base_url: str, connections: int, timeout: float) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=httpx.Timeout(timeout, pool=None)
        )

    async def request(
        self, method: str, path: str, token: str, body: bytes | None = None, ctype: str = ""
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"}
        if ctype:
            headers["Content-Type"] = ctype
        response = await self.client.request(method, path, headers=headers, content=body)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


class StdlibClient:
    """HTTP/1.1 keep-alive over asyncio streams: far less CPU per request than httpx.

    Enough for metalflow's JSON API (Content-Length bodies, chunked as a fallback); a pool of at
    most `connections` sockets, reused LIFO.
    """

    def __init__(self, base_url: str, connections: int, timeout: float) -> None:
        url = httpx.URL(base_url)
        self.host = url.host
        self.port = url.port or 80
        self.timeout = timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(connections)

    async def request(
        self, method: str, path: str, token: str, body: bytes | None = None, ctype: str = ""
    ) -> tuple[int, bytes]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            try:
                status, data, keep = await asyncio.wait_for(
                    self._exchange(conn, method, path, token, body, ctype), self.timeout
                )
            except BaseException:
                conn[1].close()
                raise
            if keep:
                self.idle.append(conn)
            else:
                conn[1].close()
            return status, data

    async def _exchange(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        path: str,
        token: str,
        body: bytes | None,
        ctype: str,
    ) -> tuple[int, bytes, bool]:
        reader, writer = conn
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Authorization: Bearer {token}",
        ]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
            if ctype:
                lines.append(f"Content-Type: {ctype}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        head = await reader.readuntil(b"\r\n\r\n")
        header_lines = head.decode("latin-1").split("\r\n")
        status = int(header_lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            data = b"".join(chunks)
        elif status in (204, 304) or 100 <= status < 200:
            data = b""
        else:
            data = await reader.read()
            keep = False
        return status, data, keep

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


# --------------------------------------------------------------------------------------------
# throwaway PostgreSQL (same recipe as scripts/test.sh, minus its durability shortcuts)


class Postgres:
    def __init__(self, cpus: set[int] | None) -> None:
        self.cpus = cpus
        bins = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")],
        )
        if not bins or not (bins[-1] / "initdb").exists():
            raise SystemExit(
                "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                "(apt-get install postgresql, or run scripts/test.sh once)"
            )
        self.bin = bins[-1]
        self.run_as: list[str] = []
        self.owner: str | None = None
        if os.getuid() == 0:
            self.owner = "postgres"
            if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
                self.owner = "metalflow-pg"
                if subprocess.run(["id", "-u", self.owner], capture_output=True).returncode:
                    subprocess.run(
                        [
                            "useradd",
                            "--system",
                            "--no-create-home",
                            "--home-dir",
                            "/nonexistent",
                            "--shell",
                            "/usr/sbin/nologin",
                            self.owner,
                        ],
                        check=True,
                    )
            self.run_as = ["runuser", "-u", self.owner, "--"]
        base = os.environ.get("TMPDIR", "/tmp")
        if len(base) > 60:
            base = "/tmp"  # unix socket paths are limited to ~107 bytes
        self.tmp = Path(tempfile.mkdtemp(prefix="metalflow-bench-pg.", dir=base))
        self.data = self.tmp / "data"
        self.port: int | None = None
        self.postmaster: int | None = None

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.run_as, *argv],
            cwd=self.tmp,
            capture_output=True,
            text=True,
            check=check,
            preexec_fn=pinner(self.cpus),
        )

    def start(self) -> str:
        if self.owner:
            shutil.chown(self.tmp, user=self.owner)
        result = self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "metalflow",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            check=False,
        )
        if result.returncode:
            raise SystemExit(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        for _ in range(3):
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self.tmp}"
                " -c max_connections=300"
            )
            result = self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.tmp / "pg.log"),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                options,
                check=False,
            )
            if result.returncode == 0:
                self.port = port
                break
            log(f"PostgreSQL did not start on port {port}; retrying")
        if self.port is None:
            tail = (self.tmp / "pg.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"could not start the throwaway PostgreSQL:\n{tail}")
        pid_file = self.data / "postmaster.pid"
        self.postmaster = int(pid_file.read_text().split("\n", 1)[0])
        self._run(
            str(self.bin / "createdb"),
            "-h",
            str(self.tmp),
            "-p",
            str(self.port),
            "-U",
            "metalflow",
            "metalflow_bench",
        )
        version = self._run(
            str(self.bin / "psql"),
            "-X",
            "-h",
            str(self.tmp),
            "-p",
            str(self.port),
            "-U",
            "metalflow",
            "-d",
            "metalflow_bench",
            "-Atc",
            "show server_version",
        ).stdout.strip()
        log(f"PostgreSQL {version} on 127.0.0.1:{self.port} (data {self.data})")
        return f"postgresql://metalflow@127.0.0.1:{self.port}/metalflow_bench"

    def pids(self) -> list[int]:
        if self.postmaster is None:
            return []
        return [self.postmaster, *children_of(self.postmaster)]

    def version(self) -> str:
        return self.bin.parent.name

    def stop(self) -> None:
        if not self.tmp.exists():
            return
        if (self.data / "postmaster.pid").exists():
            result = self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "stop",
                "-m",
                "immediate",
                "-w",
                check=False,
            )
            if result.returncode and self.postmaster:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.postmaster, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the metalflow server


class Server:
    def __init__(self, database: str | None, cpus: set[int] | None) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="metalflow-bench."))
        self.port = free_port()
        self.database = database
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.how = ""

    def _commands(self) -> list[tuple[str, list[str]]]:
        bindir = Path(sys.executable).parent
        http = f"127.0.0.1:{self.port}"
        cli = [str(bindir / "metalflow"), "up", "--data-dir", str(self.data_dir), "--http", http]
        if self.database:
            cli += ["--database", self.database]
        code = (
            "from metalflow.config import Settings; from metalflow.server import serve; "
            f"serve(Settings(data_dir={str(self.data_dir)!r}, http={http!r}, "
            f"database={self.database!r}))"
        )
        commands = [("python -c serve(Settings(...))", [sys.executable, "-c", code])]
        if (bindir / "metalflow").exists():
            commands.insert(0, ("metalflow up", cli))
        return commands

    def start(self, timeout: float = 90.0) -> str:
        for how, argv in self._commands():
            log(f"starting metalflow ({how}) on {self.url}, data dir {self.data_dir}")
            with self.log_path.open("ab") as out:
                self.proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.data_dir,
                    preexec_fn=pinner(self.cpus),
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        self.how = how
                        token = (self.data_dir / "admin-token").read_text().strip()
                        return token
                time.sleep(0.2)
            log(f"metalflow ({how}) did not become healthy; log tail:\n{self.log_tail()}")
            self.stop()
        raise SystemExit("could not start metalflow (see the log tail above)")

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def log_problems(self) -> list[str]:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return [
                line
                for line in lines
                if "Traceback" in line or " ERROR " in line or "Exception" in line
            ]
        return []

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_server(self.proc)
        self.proc = None

    def cleanup(self, keep: bool) -> None:
        if keep:
            log(f"kept data dir and server log: {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# setup (not measured)


def template_yaml(actions: int) -> str:
    lines = [
        "apiVersion: metalflow/v1",
        "kind: Template",
        f"metadata: {{name: {TEMPLATE_NAME}}}",
        "spec:",
        "  data: |",
        '    version: "0.1"',
        f"    name: {TEMPLATE_NAME}",
        "    global_timeout: 3600",
        "    tasks:",
        "      - name: t",
        '        worker: "{{.device_1}}"',
        "        actions:",
    ]
    action = "          - {{name: a{}, image: noop, timeout: 600}}"
    lines += [action.format(i) for i in range(1, actions + 1)]
    return "\n".join(lines) + "\n"


def machine_name(index: int) -> str:
    return f"n{index:05d}"


def machine_yaml(index: int) -> str:
    octets = (2, 0, 0, (index >> 16) & 255, (index >> 8) & 255, index & 255)
    mac = ":".join(f"{b:02x}" for b in octets)
    return (
        "apiVersion: metalflow/v1\nkind: Machine\n"
        f"metadata: {{name: {machine_name(index)}}}\n"
        f'spec:\n  interfaces: [{{mac: "{mac}"}}]\n'
    )


class ApiError(RuntimeError):
    pass


async def api(
    client: HttpxClient | StdlibClient,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    *,
    expect: tuple[int, ...] = (200, 201),
    yaml_body: str | None = None,
) -> Any:
    if yaml_body is not None:
        status, data = await client.request(
            method, path, token, yaml_body.encode(), "application/yaml"
        )
    elif body is not None:
        status, data = await client.request(
            method, path, token, json.dumps(body).encode(), "application/json"
        )
    else:
        status, data = await client.request(method, path, token, None, "")
    if status not in expect:
        raise ApiError(f"{method} {path} -> {status}: {data[:1000]!r}")
    return json.loads(data) if data else None


async def bounded_map(
    items: list[Any], worker: Callable[[Any], Awaitable[Any]], parallel: int
) -> list[Any]:
    gate = asyncio.Semaphore(parallel)

    async def one(item: Any) -> Any:
        async with gate:
            return await worker(item)

    return await asyncio.gather(*(one(item) for item in items))


async def setup(
    client: HttpxClient | StdlibClient, admin: str, agents: int, actions: int, batch: int
) -> list[str]:
    """Template, machines, one workflow each; returns the agent tokens (index = machine)."""
    await api(client, "POST", "/api/v1/apply", admin, yaml_body=template_yaml(actions))
    for start in range(0, agents, batch):
        stop = min(agents, start + batch)
        docs = "---\n".join(machine_yaml(i) for i in range(start, stop))
        result = await api(client, "POST", "/api/v1/apply", admin, yaml_body=docs)
        if len(result.get("results", [])) != stop - start:
            raise ApiError(f"apply returned {len(result.get('results', []))} results: {result}")
    log(f"applied template and {agents} machines")

    async def token_for(index: int) -> str:
        data = await api(
            client, "POST", f"/api/v1/machines/{machine_name(index)}/agent-token", admin
        )
        return str(data["token"])

    tokens: list[str] = await bounded_map(list(range(agents)), token_for, 32)
    log(f"fetched {agents} agent tokens")

    async def provision(index: int) -> None:
        await api(
            client,
            "POST",
            f"/api/v1/machines/{machine_name(index)}/provision",
            admin,
            {"template": TEMPLATE_NAME},
            expect=(201,),
        )

    await bounded_map(list(range(agents)), provision, 32)
    log(f"created {agents} workflows")
    return tokens


# --------------------------------------------------------------------------------------------
# measured phases


@dataclass
class Results:
    next: Stats = field(default_factory=Stats)
    status: Stats = field(default_factory=Stats)
    round_trip: Stats = field(default_factory=Stats)
    provision: Stats = field(default_factory=Stats)
    ping_pair: Stats = field(default_factory=Stats)
    ping: Stats = field(default_factory=Stats)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    empty_next: int = 0
    workflows_done: int = 0
    agent_seconds: float = 0.0
    ping_seconds: float = 0.0
    agent_timed_out: bool = False
    ping_timed_out: bool = False

    def error(self, key: str, detail: str) -> None:
        self.errors[key] += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(detail)


async def call(
    client: HttpxClient | StdlibClient,
    results: Results,
    method: str,
    path: str,
    token: str,
    body: bytes | None = None,
) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    try:
        status, data = await client.request(
            method, path, token, body, "application/json" if body else ""
        )
    except (TimeoutError, httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
        detail = f"{method} {path}: {type(exc).__name__}: {exc}"
        results.error(f"{endpoint(path)} transport", detail)
        return 0, b"", time.perf_counter() - started
    return status, data, time.perf_counter() - started


def endpoint(path: str) -> str:
    """`next`, `status`, `ping`, `provision` ... from a request path."""
    parts = path.split("?")[0].rstrip("/").split("/")
    return parts[-1]


SUCCESS_BODY = json.dumps({"status": "success", "exit_code": 0}).encode()


async def agent_loop(
    index: int,
    token: str,
    admin: str,
    client: HttpxClient | StdlibClient,
    gate: asyncio.Semaphore,
    results: Results,
    workflows: int,
    wait: float,
) -> None:
    done = 0
    next_path = f"/api/v1/agent/next?wait={wait:g}"
    while done < workflows:
        async with gate:
            status, data, next_time = await call(client, results, "GET", next_path, token)
            if status != 200:
                if status == 204:
                    results.empty_next += 1
                elif status:
                    results.error(f"next {status}", f"GET {next_path} -> {status}: {data[:500]!r}")
                report_time = None
            else:
                results.next.add(next_time)
                attempt = json.loads(data)["id"]
                report_path = f"/api/v1/agent/actions/{attempt}/status"
                for _ in range(5):  # a final report is idempotent: retry it on errors
                    code, body, report_time = await call(
                        client, results, "POST", report_path, token, SUCCESS_BODY
                    )
                    if code == 200:
                        break
                    if code:
                        results.error(
                            f"status {code}", f"POST {report_path} -> {code}: {body[:500]!r}"
                        )
                    report_time = None
                if report_time is not None:
                    results.status.add(report_time)
                    results.round_trip.add(next_time + report_time)
                    if json.loads(body).get("workflow_state") == "SUCCESS":
                        done += 1
                        results.workflows_done += 1
                        if done < workflows:
                            started = time.perf_counter()
                            code, body = await client.request(
                                "POST",
                                f"/api/v1/machines/{machine_name(index)}/provision",
                                admin,
                                json.dumps({"template": TEMPLATE_NAME}).encode(),
                                "application/json",
                            )
                            if code == 201:
                                results.provision.add(time.perf_counter() - started)
                            else:
                                results.error(
                                    f"provision {code}",
                                    f"provision {machine_name(index)} -> {code}: {body[:500]!r}",
                                )
        if status != 200 or report_time is None:
            await asyncio.sleep(0.05)  # 204 or an error: do not spin


async def ping_loop(
    token: str,
    client: HttpxClient | StdlibClient,
    gate: asyncio.Semaphore,
    results: Results,
    pairs: int,
) -> None:
    for _ in range(pairs):
        async with gate:
            total = 0.0
            for _ in range(2):
                status, data, seconds = await call(
                    client, results, "GET", "/api/v1/agent/ping", token
                )
                if status != 200:
                    if status:
                        results.error(f"ping {status}", f"ping -> {status}: {data[:500]!r}")
                    break
                results.ping.add(seconds)
                total += seconds
            else:
                results.ping_pair.add(total)


async def run_phase(
    name: str, coros: list[Awaitable[None]], max_seconds: float
) -> tuple[float, bool]:
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(c) for c in coros]
    _, pending = await asyncio.wait(tasks, timeout=max_seconds)
    timed_out = bool(pending)
    for task in pending:
        task.cancel()
    if pending:
        log(f"{name}: hit --max-seconds={max_seconds:g} with {len(pending)} agents unfinished")
        await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.perf_counter() - started
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return elapsed, timed_out


# --------------------------------------------------------------------------------------------
# report


def format_report(info: dict[str, Any], results: Results, cpu: dict[str, dict[str, float]]) -> str:
    rt = results.round_trip.summary()
    nx = results.next.summary()
    st = results.status.summary()
    pp = results.ping_pair.summary()
    pg = results.ping.summary()
    rt_rate = rt["count"] / results.agent_seconds if results.agent_seconds else float("nan")
    pp_rate = pp["count"] / results.ping_seconds if results.ping_seconds else float("nan")
    out = [
        "",
        "metalflow fleet benchmark",
        "=" * 72,
        f"agents {info['agents']}  workflows/agent {info['workflows']}  actions/workflow "
        f"{info['actions']}  backend {info['backend']}  concurrency {info['concurrency']}  "
        f"client {info['client']}",
        f"server: {info['server']}  cpu pinning: {info['pinning']}",
        f"workflows SUCCESS: {info['success']}/{info['expected_workflows']}   "
        f"setup {info['setup_seconds']:.1f}s (not measured)",
        "",
        f"{'':28}{'count':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
    ]

    def row(label: str, s: dict[str, float]) -> str:
        return (
            f"{label:28}{int(s['count']):>9}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}"
            f"{s['max_ms']:>10.2f}"
        )

    out += [
        row("agent next", nx),
        row("agent status", st),
        row("agent round trip (n+s)", rt),
    ]
    if results.provision.values:
        out.append(row("re-provision (admin)", results.provision.summary()))
    out += [
        row("ping (single)", pg),
        row("ping pair", pp),
        "",
        f"agent phase: {rt['count']} round trips in {results.agent_seconds:.2f}s = "
        f"{rt_rate:,.0f} round trips/s ({rt_rate * 2:,.0f} req/s)"
        + ("  [HIT TIME LIMIT]" if results.agent_timed_out else ""),
        f"ping phase:  {pp['count']} ping pairs in {results.ping_seconds:.2f}s = "
        f"{pp_rate:,.0f} pairs/s ({pp_rate * 2:,.0f} req/s)"
        + ("  [HIT TIME LIMIT]" if results.ping_timed_out else ""),
        "",
        "control-plane overhead vs no-op endpoint:",
        f"  latency    round-trip p50 / ping-pair p50   = {rt['p50_ms'] / pp['p50_ms']:.2f}x",
        f"  throughput ping pairs/s / round trips/s     = {pp_rate / rt_rate:.2f}x",
        "",
        "CPU seconds used (share of one core over the phase):",
    ]
    for phase, used in cpu.items():
        seconds = results.agent_seconds if phase == "agent" else results.ping_seconds
        parts = [f"{k} {v:.1f}s ({v / seconds * 100:.0f}%)" for k, v in used.items() if seconds]
        out.append(f"  {phase:6} phase: " + ", ".join(parts))
    if results.empty_next:
        out.append(f"note: {results.empty_next} `next` calls answered 204 (nothing to do)")
    if results.errors:
        out.append("ERRORS: " + ", ".join(f"{k} x{v}" for k, v in results.errors.items()))
        out += [f"  e.g. {sample}" for sample in results.error_samples]
    else:
        out.append("errors: none")
    out.append("=" * 72)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (machines)")
    parser.add_argument("--actions", type=int, default=2, help="actions per workflow")
    parser.add_argument(
        "--workflows-per-agent",
        type=int,
        default=1,
        help="workflows each machine runs, one after the other",
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="max in-flight agent requests (default min(agents, 256))",
    )
    parser.add_argument("--url", help="use this running server instead of starting one")
    parser.add_argument("--token", help="admin token for --url")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="hard time limit of each measured phase (and of setup)",
    )
    parser.add_argument("--wait", type=float, default=0.0, help="`wait` of agent/next")
    parser.add_argument(
        "--client",
        choices=("httpx", "stdlib"),
        default="stdlib",
        help="load-generator HTTP client: stdlib (default; a minimal keep-alive client) or "
        "httpx (its pool cost ~15 ms CPU per request at 256 connections: it, not the server, "
        "becomes the bottleneck)",
    )
    parser.add_argument("--batch", type=int, default=500, help="machines per apply request")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the server's data dir and log")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.url and not args.token:
        parser.error("--url needs --token")
    if min(args.agents, args.actions, args.workflows_per_agent) < 1:
        parser.error("--agents, --actions and --workflows-per-agent must be >= 1")
    if args.concurrency is None:
        args.concurrency = min(args.agents, 256)
    return args


async def measure(
    args: argparse.Namespace, base_url: str, admin: str, meter_groups: dict[str, Any]
) -> tuple[Results, dict[str, Any], dict[str, dict[str, float]]]:
    client_type = StdlibClient if args.client == "stdlib" else HttpxClient
    setup_client = HttpxClient(base_url, 64, timeout=300)
    results = Results()
    cpu: dict[str, dict[str, float]] = {}
    try:
        started = time.perf_counter()
        tokens = await asyncio.wait_for(
            setup(setup_client, admin, args.agents, args.actions, args.batch), args.max_seconds
        )
        setup_seconds = time.perf_counter() - started
    finally:
        await setup_client.close()

    client = client_type(base_url, args.concurrency, timeout=60)
    try:
        gate = asyncio.Semaphore(args.concurrency)
        # warm the connection pool so neither phase pays for TCP connects
        await bounded_map(
            tokens[: args.concurrency],
            lambda t: client.request("GET", "/api/v1/agent/ping", t, None, ""),
            args.concurrency,
        )
        log(
            f"agent phase: {args.agents} agents x {args.workflows_per_agent} workflows x "
            f"{args.actions} actions, concurrency {args.concurrency}"
        )
        meter = CpuMeter(meter_groups)
        meter.start()
        results.agent_seconds, results.agent_timed_out = await run_phase(
            "agent phase",
            [
                agent_loop(
                    i, tok, admin, client, gate, results, args.workflows_per_agent, args.wait
                )
                for i, tok in enumerate(tokens)
            ],
            args.max_seconds,
        )
        meter.stop()
        cpu["agent"] = meter.used
        pairs = args.workflows_per_agent * args.actions
        log(f"ping phase: {args.agents * pairs} ping pairs, concurrency {args.concurrency}")
        meter = CpuMeter(meter_groups)
        meter.start()
        results.ping_seconds, results.ping_timed_out = await run_phase(
            "ping phase",
            [ping_loop(tok, client, gate, results, pairs) for tok in tokens],
            args.max_seconds,
        )
        meter.stop()
        cpu["ping"] = meter.used
    finally:
        await client.close()

    check_client = HttpxClient(base_url, 4, timeout=300)
    try:
        listing = await api(check_client, "GET", "/api/v1/workflows?state=SUCCESS", admin)
    finally:
        await check_client.close()
    info = {"setup_seconds": setup_seconds, "success": int(listing["count"])}
    return results, info, cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile(max(65536, args.agents * 2 + 1024))
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin and not args.url
    gen_cpus = {cpus[0]} if pin else None
    server_cpus = {cpus[1]} if pin else None
    pinning = f"load generator CPU {cpus[0]}, server (+PostgreSQL) CPU {cpus[1]}" if pin else "none"

    postgres: Postgres | None = None
    server: Server | None = None
    failed = True
    try:
        meter_groups: dict[str, Callable[[], list[int]]] = {
            "loadgen": lambda: [os.getpid()],
        }
        if args.url:
            base_url, admin, how = args.url.rstrip("/"), args.token, f"external {args.url}"
        else:
            database = None
            if args.database == "postgresql":
                postgres = Postgres(server_cpus)
                database = postgres.start()
            server = Server(database, server_cpus)
            admin = server.start()
            pid = server.proc.pid if server.proc else "?"
            base_url, how = server.url, f"{server.how} (pid {pid})"
            meter_groups["metalflow"] = server.pids
            if postgres:
                meter_groups["postgres"] = postgres.pids
        if gen_cpus:
            os.sched_setaffinity(0, gen_cpus)
        log(f"RLIMIT_NOFILE={nofile}; pinning: {pinning}")

        results, info, cpu = asyncio.run(measure(args, base_url, admin, meter_groups))
        expected = args.agents * args.workflows_per_agent
        backend = args.database
        if postgres:
            backend += f" {postgres.version()}"
        info.update(
            agents=args.agents,
            workflows=args.workflows_per_agent,
            actions=args.actions,
            backend=backend if not args.url else "external server",
            concurrency=args.concurrency,
            client=args.client,
            server=how,
            pinning=pinning,
            expected_workflows=expected,
        )
        print(format_report(info, results, cpu), flush=True)
        problems = server.log_problems() if server else []
        if problems:
            print(f"server log: {len(problems)} error lines, first ones:", flush=True)
            for line in problems[:10]:
                print("  " + line, flush=True)
        if args.json:
            payload = {
                **info,
                "next": results.next.summary(),
                "status": results.status.summary(),
                "round_trip": results.round_trip.summary(),
                "ping_pair": results.ping_pair.summary(),
                "ping": results.ping.summary(),
                "provision": results.provision.summary(),
                "agent_seconds": results.agent_seconds,
                "ping_seconds": results.ping_seconds,
                "errors": dict(results.errors),
                "cpu_seconds": cpu,
            }
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        if info["success"] != expected:
            print(
                f"FAIL: {info['success']} workflows are SUCCESS, expected {expected}",
                file=sys.stderr,
                flush=True,
            )
            return 1
        if results.agent_timed_out or results.ping_timed_out:
            print("FAIL: a phase hit --max-seconds", file=sys.stderr, flush=True)
            return 1
        failed = False
        return 0
    finally:
        if server:
            server.stop()
            server.cleanup(keep=args.keep or failed)
        if postgres:
            postgres.stop()


if __name__ == "__main__":
    sys.exit(main())
