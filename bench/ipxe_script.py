#!/usr/bin/env python3
"""iPXE script endpoint benchmark: `GET /boot/{mac}.ipxe` of metalflow vs nginx serving the
same bytes as a static file.

The script a booting machine fetches is the one dynamic HTTP request of every boot: metalflow
looks the MAC up in its in-memory boot index, chooses the script for the machine's active
workflow and records a boot event. nginx serving the identical script as a static file (one
worker, keep-alive) is the ceiling for such a small response on this machine. Both are loaded
with `wrk -t1 -c64` (64 keep-alive connections) on loopback; the server runs on CPU 1, wrk on
CPU 0.

Setup (not measured): `metalflow up` on a free loopback port with a fresh data dir and dummy
install kernel/initrd files, a Machine and a Template applied through the API and a workflow
created with `POST /api/v1/machines/NAME/provision`. nginx comes from Debian: the installed
binary if there is one, else `apt-get download nginx nginx-common` unpacked with `dpkg-deb -x`
into `--peers-dir` (not installed, so no service starts on port 80), run with a config written
here (`daemon off`, temporary prefix). Only processes this script started are stopped (by PID).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from dhcp import (  # bench/dhcp.py (same directory)
    METALFLOW,
    SetupError,
    log,
    need,
    pick_cpus,
    raise_on_sigterm,
    sh,
    unpack_debs,
    wait_until,
)
from fleet import children_of, cpu_seconds, free_port

MAC = "52:54:00:be:0c:01"
MACHINE = "bench-ipxe"
TEMPLATE = "bench-ipxe"
DEFAULT_PEERS_DIR = Path(tempfile.gettempdir()) / "metalflow-bench-nginx"

MANIFEST = f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {MACHINE}}}
spec:
  interfaces: [{{mac: "{MAC}", ip: 127.0.0.1, netmask: 255.0.0.0}}]
---
apiVersion: metalflow/v1
kind: Template
metadata: {{name: {TEMPLATE}}}
spec:
  data: |
    version: "0.1"
    name: {TEMPLATE}
    global_timeout: 3600
    tasks:
      - name: install
        worker: "{{{{.device_1}}}}"
        actions:
          - {{name: step-0, image: example/step-0:v1, timeout: 60}}
          - {{name: step-1, image: example/step-1:v1, timeout: 60}}
"""


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    return (["taskset", "-c", str(cpu)] if cpu is not None else []) + command


class Processes:
    """What this script started; stopped by PID, in reverse order."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, command: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_metalflow(
    procs: Processes, workdir: Path, cpu: int | None
) -> tuple[subprocess.Popen[bytes], str, bytes, Path]:
    """metalflow up with a provisioned machine; returns (process, url, the script, log)."""
    data = workdir / "metalflow-data"
    kernel, initrd = workdir / "vmlinuz", workdir / "initrd.img"
    kernel.write_bytes(b"not a kernel" * 1000)
    initrd.write_bytes(b"\0" * 4096)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "metalflow.log"
    command = [METALFLOW, "up", "--data-dir", str(data), "--http", f"127.0.0.1:{port}"]
    command += ["--kernel", str(kernel), "--initrd", str(initrd)]
    process = procs.start(pinned(cpu, command), log_path, workdir)
    wait_until(lambda: healthy(f"{url}/healthz"), 90, "metalflow /healthz", process, log_path)
    token = (data / "admin-token").read_text().strip()
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        response = api.post(
            "/api/v1/apply",
            content=MANIFEST.encode(),
            headers={"Content-Type": "application/yaml"},
        )
        if response.status_code != 200:
            raise SetupError(f"apply: {response.status_code} {response.text[:500]}")
        response = api.post(f"/api/v1/machines/{MACHINE}/provision", json={"template": TEMPLATE})
        if response.status_code != 201:
            raise SetupError(f"provision: {response.status_code} {response.text[:500]}")
    response = httpx.get(f"{url}/boot/{MAC}.ipxe", timeout=10)
    if response.status_code != 200 or not response.content.startswith(b"#!ipxe"):
        raise SetupError(f"/boot/{MAC}.ipxe: {response.status_code} {response.text[:300]}")
    if b"kernel" not in response.content:
        raise SetupError(f"/boot/{MAC}.ipxe is not the install script:\n{response.text[:500]}")
    return process, url, response.content, log_path


def nginx_binary(peers_dir: Path) -> Path:
    """The installed nginx, or one unpacked from Debian's packages (never installed)."""
    installed = shutil.which("nginx")
    if installed:
        return Path(installed)
    unpacked = peers_dir / "root/usr/sbin/nginx"
    if unpacked.exists():
        return unpacked
    unpack_debs(("nginx", "nginx-common"), peers_dir)
    if not unpacked.exists():
        raise SetupError(f"no usr/sbin/nginx in the unpacked packages under {peers_dir}")
    return unpacked


def start_nginx(
    procs: Processes, workdir: Path, cpu: int | None, script: bytes, binary: Path
) -> tuple[subprocess.Popen[bytes], str, Path]:
    prefix = workdir / "nginx"
    root = prefix / "html"
    (root / "boot").mkdir(parents=True)
    for path in (workdir, prefix, root, root / "boot"):
        path.chmod(0o755)  # the worker runs as nobody
    (root / "boot" / f"{MAC}.ipxe").write_bytes(script)
    (root / "boot" / f"{MAC}.ipxe").chmod(0o644)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ add_header Cache-Control no-store; }}
    }}
}}
"""
    )
    log_path = workdir / "nginx.log"
    command = [str(binary), "-p", str(prefix), "-c", str(conf), "-e", f"{prefix}/error.log"]
    process = procs.start(pinned(cpu, command), log_path, workdir)
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: healthy(f"{url}/boot/{MAC}.ipxe"),
        30,
        "nginx",
        process,
        prefix / "error.log",
    )
    body = httpx.get(f"{url}/boot/{MAC}.ipxe", timeout=5).content
    if body != script:
        raise SetupError("nginx does not serve the same bytes as metalflow")
    return process, url, log_path


@dataclass
class WrkResult:
    server: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str
    server_cpu: float
    """CPU seconds the server used per second of the run."""
    log_lines: int | None = None
    """Lines the server logged during the measured run (metalflow)."""


def count_lines(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    name: str,
    url: str,
    pids: list[int],
    args: argparse.Namespace,
    cpu: int | None,
    log_path: Path | None = None,
) -> WrkResult:
    target = f"{url}/boot/{MAC}.ipxe"
    wrk = need("wrk", "wrk")
    if args.warmup > 0:
        subprocess.run(
            pinned(cpu, [wrk, "-t1", f"-c{args.connections}", f"-d{args.warmup:g}s", target]),
            capture_output=True,
            timeout=args.warmup + 60,
        )
    lines_before = count_lines(log_path)
    before = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    started = time.monotonic()
    result = subprocess.run(
        pinned(
            cpu,
            [wrk, "-t1", f"-c{args.connections}", f"-d{args.duration:g}s", "--latency", target],
        ),
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
    )
    elapsed = time.monotonic() - started
    used = sum(cpu_seconds(pid) or 0.0 for pid in pids) - before
    time.sleep(0.5)  # let the server's log handler catch up
    lines = count_lines(log_path) - lines_before if log_path else None
    text = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if result.returncode or not (rate and total and p50 and p99):
        raise SetupError(
            f"wrk against {name} failed (rc {result.returncode}):\n{text}\n{result.stderr}"
        )
    errors = []
    for pattern in (r"Non-2xx or 3xx responses: \d+", r"Socket errors: [^\n]+"):
        found = re.search(pattern, text)
        if found:
            errors.append(found[0])
    return WrkResult(
        server=name,
        requests_per_second=float(rate[1]),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        requests=int(total[1]),
        errors="; ".join(errors),
        server_cpu=used / elapsed,
        log_lines=lines,
    )


def report(results: list[WrkResult], script: bytes, args: argparse.Namespace) -> str:
    out = [
        "",
        f"iPXE script endpoint: GET /boot/{{mac}}.ipxe, {len(script)}-byte script, "
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s",
        "=" * 86,
        f"{'server':12}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'requests':>11}"
        f"{'srv cpu':>9}  errors",
    ]
    for r in results:
        out.append(
            f"{r.server:12}{r.requests_per_second:>10,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
            f"{r.requests:>11,}{r.server_cpu * 100:>8.0f}%  {r.errors or 'none'}"
        )
    by_name = {r.server: r for r in results}
    if "metalflow" in by_name and "nginx" in by_name:
        mine, peer = by_name["metalflow"], by_name["nginx"]
        throughput = mine.requests_per_second / peer.requests_per_second
        out += [
            "",
            f"ratio metalflow / nginx: throughput {throughput:.3f}x, "
            f"p99 latency {mine.p99_ms / peer.p99_ms:.1f}x",
        ]
    out.append("=" * 86)
    return "\n".join(out)


def add_wrk_options(parser: argparse.ArgumentParser) -> None:
    """The options of a wrk-against-nginx benchmark (this one and bench/metadata.py)."""
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured wrk run first")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=DEFAULT_PEERS_DIR,
        help="where nginx is downloaded and unpacked when it is not installed",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")


def check_wrk_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration and --connections must be positive")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_wrk_options(parser)
    args = parser.parse_args(argv)
    check_wrk_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    gen_cpu, server_cpu = pick_cpus(args.no_pin)
    pin = server_cpu is not None
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-ipxe."))
    procs = Processes()
    failed = True
    try:
        need("wrk", "wrk")
        if pin:
            need("taskset", "util-linux")
        binary = nginx_binary(args.peers_dir)
        version = sh(str(binary), "-v").stderr.strip().rpartition("/")[2]
        process, url, script, mf_log = start_metalflow(procs, workdir, server_cpu)
        log(f"metalflow pid {process.pid} at {url}; script {len(script)} bytes")
        results = [run_wrk("metalflow", url, [process.pid], args, gen_cpu, mf_log)]
        procs.stop(process, signal.SIGINT)
        nginx, nginx_url, _ = start_nginx(procs, workdir, server_cpu, script, binary)
        log(f"nginx {version} pid {nginx.pid} at {nginx_url}")
        worker_pids = [nginx.pid, *children_of(nginx.pid)]
        results.append(run_wrk("nginx", nginx_url, worker_pids, args, gen_cpu))
        procs.stop(nginx, signal.SIGQUIT)
        print(
            f"machine: {os.cpu_count()} CPUs, pinning: "
            + (f"wrk CPU {gen_cpu}, server CPU {server_cpu}" if pin else "none")
            + f"; nginx {version}, 1 worker"
        )
        print(report(results, script, args))
        lines, requests = results[0].log_lines or 0, results[0].requests
        print(
            f"metalflow log: {lines:,} lines during the {requests:,} measured requests "
            f"({lines / max(1, requests):.2f} per request)",
            flush=True,
        )
        failed = bool(results[0].errors)
        return 1 if failed else 0
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep or failed:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
