#!/usr/bin/env python3
"""Metadata service benchmark: `GET /latest/meta-data/hostname` and `GET /metadata` of metalflow
for 1,000 distinct machines vs nginx serving static files of the same size.

The metadata service knows its caller only by address: every request is a lookup of the caller
in the in-memory boot index and an answer built from that machine's fields (the EC2 tree, or the
Equinix-style JSON document). wrk cannot bind source addresses, so the 1,000 callers come the
way they do behind a load balancer: wrk's address is a trusted proxy
(`--metadata-trusted-proxy 192.0.2.2/32`) and a generated wrk Lua script sends each request
with `X-Forwarded-For` set to the next of the 1,000 machine addresses (round-robin, requests
built once in `init`). nginx gets the same requests (it ignores the header) and serves one
machine's real answers as static files, so the bodies are the same size. Both are loaded with
`wrk -t1 -c64 --latency` (after an unmeasured warm-up) per endpoint.

Topology: two network namespaces this script creates (`mfbm<PID>s` server, `mfbm<PID>c`
client) joined by one veth pair (server 192.0.2.1/24 + 198.18.0.1/15, client 192.0.2.2/24 +
198.18.0.2/15); both servers listen on port 50061 in the server namespace, one after the other;
the server runs on CPU 1, wrk on CPU 0. The machines' addresses are 198.18.10.100 onwards
(interface addresses in the inventory only: they are never on the wire, only in the header).

Setup (not measured): `metalflow up --http 0.0.0.0:7080 --metadata-port 50061
--metadata-trusted-proxy 192.0.2.2/32` (SQLite, fresh data dir), the machines applied with
`POST /api/v1/apply` in batches; then, before any load, two machines' answers are checked for
their own hostname, id and address, and an unknown address and a caller without the header are
checked to get 404. nginx is the one bench/ipxe_script.py uses (installed, else Debian's package
unpacked into `--peers-dir`). Every non-2xx answer during a measured run counts as a failure.
Only processes this script started are stopped (by PID), only its namespaces are deleted, also
on SIGINT/SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dhcp import (  # bench/dhcp.py (same directory): the namespace lab and helpers
    CLIENT_IP,
    METALFLOW,
    SERVER_IP,
    NetnsLab,
    SetupError,
    log,
    need,
    pick_cpus,
    raise_on_sigterm,
    sh,
    wait_until,
)
from fleet import children_of, cpu_seconds, system_busy_seconds
from ipxe_script import add_wrk_options, check_wrk_options, count_lines, nginx_binary

API_PORT = 7080
METADATA_PORT = 50061
HOST = f"{SERVER_IP}:{METADATA_PORT}"
ENDPOINTS = ("/latest/meta-data/hostname", "/metadata")
GOAL = 0.3
BATCH = 500
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetalflowBenchKey ops@example"
MAX_MACHINES = 10_000


class WrongAnswer(RuntimeError):
    """metalflow answered a check with another machine's data, or not at all: exit 1."""


def address(index: int) -> str:
    """Machine `index`'s address: 198.18.10.100 onwards, all of the same length (so every
    machine's answers have the same size)."""
    return f"198.18.{10 + index // 100}.{100 + index % 100}"


def hostname(index: int) -> str:
    return f"md{index:05d}.bench"


def machine_yaml(index: int) -> str:
    name = f"md{index:05d}"
    mac = f"02:00:00:6d:{index >> 8 & 255:02x}:{index & 255:02x}"
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {name}}}
spec:
  hostname: {hostname(index)}
  interfaces:
    - {{mac: "{mac}", ip: {address(index)}, netmask: 255.254.0.0, gateway: 198.18.0.1,
       nameservers: [198.18.0.1]}}
  metadata:
    instance:
      id: id-{name}
      ssh_keys: ["{KEY}"]
      tags: ["role=bench", "index={index:05d}"]
    facility: {{facility_code: lab1, plan_slug: vm.small}}
"""


def curl(
    lab: NetnsLab, namespace: str, url: str, *options: str, timeout: float = 10
) -> tuple[int, str]:
    """(status, body) of one request made with curl inside `namespace` (0: no answer)."""
    command = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    result = lab.run(namespace, None, [*command, *options, url], timeout + 5)
    body, _, code = result.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def wire_size(lab: NetnsLab, path: str, forwarded: str) -> int:
    """Bytes of one whole response (status line, headers, body) as the client receives it."""
    command = ["curl", "-s", "-i", "-H", f"X-Forwarded-For: {forwarded}", f"http://{HOST}{path}"]
    return len(lab.run(lab.client, None, command, 15).stdout.encode())


def start_metalflow(
    lab: NetnsLab, workdir: Path, cpu: int | None, machines: int
) -> tuple[subprocess.Popen[bytes], Path]:
    """metalflow up in the server namespace with `machines` machines; (process, its log)."""
    data = workdir / "metalflow-data"
    log_path = workdir / "metalflow.log"
    command = [METALFLOW, "up", "--data-dir", str(data), "--http", f"0.0.0.0:{API_PORT}"]
    command += ["--metadata-port", str(METADATA_PORT)]
    command += ["--metadata-trusted-proxy", f"{CLIENT_IP}/32"]
    process = lab.start(lab.server, cpu, command, log_path)
    api = f"http://127.0.0.1:{API_PORT}"
    wait_until(
        lambda: curl(lab, lab.server, f"{api}/healthz", timeout=2)[0] == 200,
        90,
        "metalflow /healthz",
        process,
        log_path,
    )
    token = (data / "admin-token").read_text().strip()
    started = time.monotonic()
    for first in range(0, machines, BATCH):
        last = min(machines, first + BATCH)
        manifest = workdir / "apply.yaml"
        manifest.write_text("---\n".join(machine_yaml(i) for i in range(first, last)))
        code, body = curl(
            lab,
            lab.server,
            f"{api}/api/v1/apply",
            "-X",
            "POST",
            "-H",
            f"Authorization: Bearer {token}",
            "-H",
            "Content-Type: application/yaml",
            "--data-binary",
            f"@{manifest}",
            timeout=300,
        )
        results = json.loads(body).get("results", []) if code == 200 else []
        if len(results) != last - first:
            raise SetupError(f"apply of machines {first}-{last - 1}: {code} {body[:500]}")
    # The boot index picks the machines up from their events: wait for the last one.
    newest = ("-H", f"X-Forwarded-For: {address(machines - 1)}")
    url = f"http://{HOST}{ENDPOINTS[0]}"
    wait_until(
        lambda: curl(lab, lab.client, url, *newest)[0] == 200,
        60,
        f"machine {address(machines - 1)} in the metadata service",
        process,
        log_path,
    )
    log(f"applied {machines} machines in {time.monotonic() - started:.1f}s")
    return process, log_path


def check_answers(lab: NetnsLab, machines: int) -> dict[str, str]:
    """Each of two machines gets its own data, strangers get 404; returns the first machine's
    answer per endpoint (what nginx serves)."""
    answers: dict[str, str] = {}
    for index in (0, machines - 1) if machines > 1 else (0,):
        forwarded = ("-H", f"X-Forwarded-For: {address(index)}")
        code, name = curl(lab, lab.client, f"http://{HOST}/latest/meta-data/hostname", *forwarded)
        if (code, name) != (200, hostname(index)):
            raise WrongAnswer(f"hostname for {address(index)}: {code} {name[:200]!r}")
        code, body = curl(lab, lab.client, f"http://{HOST}/metadata", *forwarded)
        document = json.loads(body) if code == 200 else {}
        seen = (
            document.get("id"),
            document.get("hostname"),
            [a.get("address") for a in document.get("network", {}).get("addresses", [])],
        )
        expected = (f"id-md{index:05d}", hostname(index), [address(index)])
        if seen != expected:
            raise WrongAnswer(f"/metadata for {address(index)}: {code} {seen} != {expected}")
        if index == 0:
            answers = {ENDPOINTS[0]: name, ENDPOINTS[1]: body}
        elif len(body) != len(answers[ENDPOINTS[1]]):
            raise WrongAnswer("machines' /metadata documents differ in size")
    stranger = address(machines)
    for options in (("-H", f"X-Forwarded-For: {stranger}"), ()):
        code, _ = curl(lab, lab.client, f"http://{HOST}{ENDPOINTS[0]}", *options)
        if code != 404:
            raise WrongAnswer(f"a caller that is no machine ({options or 'no XFF'}) got {code}")
    return answers


def start_nginx(
    lab: NetnsLab, workdir: Path, cpu: int | None, answers: dict[str, str], binary: Path
) -> subprocess.Popen[bytes]:
    """nginx in the server namespace on port 50061, `answers` as static files."""
    prefix = workdir / "nginx"
    root = prefix / "html"
    (root / "latest/meta-data").mkdir(parents=True)
    for path in (workdir, prefix, root, root / "latest", root / "latest/meta-data"):
        path.chmod(0o755)  # the worker runs as nobody
    for endpoint, body in answers.items():
        file = root / endpoint.lstrip("/")
        file.write_text(body)
        file.chmod(0o644)
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
        listen {METADATA_PORT};
        root {root};
        location = /metadata {{ default_type application/json; }}
    }}
}}
"""
    )
    log_path = prefix / "error.log"
    command = [str(binary), "-p", str(prefix), "-c", str(conf), "-e", str(log_path)]
    process = lab.start(lab.server, cpu, command, workdir / "nginx.log")
    url = f"http://{HOST}{ENDPOINTS[0]}"
    wait_until(lambda: curl(lab, lab.client, url)[0] == 200, 30, "nginx", process, log_path)
    for endpoint, body in answers.items():
        if curl(lab, lab.client, f"http://{HOST}{endpoint}") != (200, body):
            raise SetupError(f"nginx does not serve metalflow's bytes at {endpoint}")
    return process


def wrk_script(path: Path, machines: int) -> None:
    """A wrk Lua script: every request names the next machine in X-Forwarded-For."""
    addresses = ",\n".join(f'  "{address(i)}"' for i in range(machines))
    path.write_text(
        f"""\
-- written by bench/metadata.py: X-Forwarded-For round-robin over {machines} machine addresses
local addresses = {{
{addresses}
}}
local requests = {{}}
local next_request = 0

function init(args)
  for i, address in ipairs(addresses) do
    requests[i] = wrk.format(nil, nil, {{["Host"] = "{HOST}", ["X-Forwarded-For"] = address}})
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end
"""
    )


@dataclass
class WrkResult:
    server: str
    endpoint: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str
    server_cpu: float
    """CPU seconds the server used per second of the run (also the columns below)."""
    wrk_cpu: float
    other_cpu: float
    """Everything else on the machine (other jobs compete for the same two cores)."""
    response_bytes: int
    log_lines: int | None = None


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    lab: NetnsLab,
    server: str,
    endpoint: str,
    pids: list[int],
    args: argparse.Namespace,
    cpu: int | None,
    log_path: Path | None = None,
) -> WrkResult:
    wrk = need("wrk", "wrk")
    target = f"http://{HOST}{endpoint}"
    base = [wrk, "-t1", f"-c{args.connections}", "-s", str(args.script)]
    if args.warmup > 0:
        lab.run(lab.client, cpu, [*base, f"-d{args.warmup:g}s", target], args.warmup + 60)
    lines_before = count_lines(log_path)
    server_before = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    busy_before = system_busy_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = lab.run(
        lab.client,
        cpu,
        [*base, f"-d{args.duration:g}s", "--latency", target],
        args.duration + 60,
    )
    elapsed = time.monotonic() - started
    server_used = sum(cpu_seconds(pid) or 0.0 for pid in pids) - server_before
    busy = system_busy_seconds() - busy_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_used = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    time.sleep(0.5)  # let the server's log handler catch up
    text = result.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if result.returncode or not (rate and total and p50 and p99):
        raise SetupError(
            f"wrk against {server} {endpoint} failed (rc {result.returncode}):\n"
            f"{text}\n{result.stderr}"
        )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: ([^\n]+)", text)
    return WrkResult(
        server=server,
        endpoint=endpoint,
        requests_per_second=float(rate[1]),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        requests=int(total[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sockets[1] if sockets else "",
        server_cpu=server_used / elapsed,
        wrk_cpu=wrk_used / elapsed,
        other_cpu=max(0.0, busy - server_used - wrk_used) / elapsed,
        response_bytes=wire_size(lab, endpoint, address(0)),
        log_lines=count_lines(log_path) - lines_before if log_path else None,
    )


def report(results: list[WrkResult], args: argparse.Namespace) -> str:
    """The table, a ratio line per endpoint and the overall ratio (geometric mean)."""
    out = [
        "",
        f"metadata service: {args.machines:,} machines, each request from the next one "
        f"(X-Forwarded-For via trusted proxy {CLIENT_IP}), wrk -t1 -c{args.connections} "
        f"-d{args.duration:g}s",
        "=" * 104,
        f"{'endpoint':28}{'server':11}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'requests':>10}"
        f"{'resp B':>8}{'srv cpu':>8}{'wrk cpu':>8}{'other':>7}  non-2xx",
    ]
    ratios = []
    for endpoint in ENDPOINTS:
        rows = {r.server: r for r in results if r.endpoint == endpoint}
        for r in rows.values():
            errors = f"{r.non_2xx:,}"
            if r.socket_errors:
                errors += f"; socket errors: {r.socket_errors}"
            out.append(
                f"{endpoint:28}{r.server:11}{r.requests_per_second:>9,.0f}{r.p50_ms:>8.2f}"
                f"{r.p99_ms:>8.2f}{r.requests:>10,}{r.response_bytes:>8}"
                f"{r.server_cpu * 100:>7.0f}%{r.wrk_cpu * 100:>7.0f}%{r.other_cpu * 100:>6.0f}%"
                f"  {errors}"
            )
        mine, peer = rows["metalflow"], rows["nginx"]
        ratio = mine.requests_per_second / peer.requests_per_second
        ratios.append(ratio)
        out.append(
            f"{'':28}ratio (metalflow / nginx): {ratio:.2f}x  "
            f"(p99 latency {mine.p99_ms / peer.p99_ms:.1f}x)"
        )
    overall = math.prod(ratios) ** (1 / len(ratios))
    out += [
        "",
        f"overall ratio (metalflow / nginx, geometric mean of {len(ratios)} endpoints): "
        f"{overall:.2f}x; goal >= {GOAL}x: {'met' if overall >= GOAL else 'NOT met'}",
        "=" * 104,
    ]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--machines", type=int, default=1000, help="distinct callers")
    add_wrk_options(parser)
    args = parser.parse_args(argv)
    check_wrk_options(parser, args)
    if not 1 <= args.machines <= MAX_MACHINES:
        parser.error(f"--machines must be 1..{MAX_MACHINES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (network namespaces)", file=sys.stderr)
        return 2
    raise_on_sigterm()
    gen_cpu, server_cpu = pick_cpus(args.no_pin)
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-metadata."))
    args.script = workdir / "xff.lua"
    lab: NetnsLab | None = None
    failed = True
    try:
        for tool, package in (("ip", "iproute2"), ("curl", "curl"), ("wrk", "wrk")):
            need(tool, package)
        if server_cpu is not None:
            need("taskset", "util-linux")
        binary = nginx_binary(args.peers_dir)
        version = sh(str(binary), "-v").stderr.strip().rpartition("/")[2]
        wrk_script(args.script, args.machines)
        lab = NetnsLab("mfbm")
        log(f"namespaces {lab.server} (server) / {lab.client} (client); work dir {workdir}")
        process, mf_log = start_metalflow(lab, workdir, server_cpu, args.machines)
        answers = check_answers(lab, args.machines)
        log(
            f"metalflow pid {process.pid}: answers checked; bodies "
            + ", ".join(f"{e} {len(b.encode())} B" for e, b in answers.items())
        )
        results = [
            run_wrk(lab, "metalflow", endpoint, [process.pid], args, gen_cpu, mf_log)
            for endpoint in ENDPOINTS
        ]
        lab.stop(process, signal.SIGINT)
        nginx = start_nginx(lab, workdir, server_cpu, answers, binary)
        log(f"nginx {version} pid {nginx.pid}")
        pids = [nginx.pid, *children_of(nginx.pid)]
        results += [run_wrk(lab, "nginx", endpoint, pids, args, gen_cpu) for endpoint in ENDPOINTS]
        lab.stop(nginx, signal.SIGQUIT)
        print(
            f"machine: {os.cpu_count()} CPUs, pinning: "
            + (f"wrk CPU {gen_cpu}, server CPU {server_cpu}" if server_cpu is not None else "none")
            + f"; nginx {version}, 1 worker"
        )
        print(report(results, args))
        for r in results:
            if r.log_lines is not None:
                print(
                    f"metalflow log during {r.endpoint}: {r.log_lines:,} lines in "
                    f"{r.requests:,} requests"
                )
        sys.stdout.flush()
        failed = any(r.non_2xx or r.socket_errors for r in results)
        return 1 if failed else 0
    except WrongAnswer as exc:
        print(f"wrong answer: {exc}", file=sys.stderr)
        return 1
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        if lab is not None:
            lab.close()
        if args.keep or failed:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
