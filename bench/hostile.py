#!/usr/bin/env python3
"""Hostile-input benchmark: what three attacks cost `metalflow up`, before and after a change.

For each checkout given (`--before DIR`, `--after DIR`; each with its own `.venv`), and for each
attack, starts a fresh `metalflow up` (SQLite, throwaway data dir, loopback, pinned to CPU 1,
under an address-space limit), then runs the attack while one thread samples the server's
VmRSS/VmHWM from /proc every 50 ms and another asks `GET /healthz` every 50 ms:

- `bomb`: a 640-byte apply whose `spec.metadata` nests YAML aliases 9 deep (9**9 leaves);
- `body`: a 400 MB POST to `/api/v1/agent/hello` without a token, streamed from a generator;
- `fleet`: one apply of 20,000 Machine documents.

Prints per side and attack the outcome (HTTP status, or the server killed at its memory limit,
or the attack cut at `--attack-seconds`), the peak RSS and the `/healthz` latency p50/max, and
the ratios after/before. Only loopback traffic; only processes this script started are stopped
(by PID). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleet import (  # bench/fleet.py (same directory)
    free_port,
    machine_yaml,
    percentile,
    stop_server,
)

REPO = Path(__file__).resolve().parent.parent
ATTACKS = ("bomb", "body", "fleet")
SAMPLE_SECONDS = 0.05
PROBE_TIMEOUT = 10.0
BOMB_DEPTH = 9
BODY_BYTES = 400 * 10**6
BODY_CHUNK = 64 * 1024
FLEET_MACHINES = 20_000


def log(message: str) -> None:
    print(f"[hostile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the attacks' payloads


def alias_bomb(depth: int = BOMB_DEPTH) -> bytes:
    """A Machine whose spec.metadata is a billion-laughs tree: each level lists the previous
    one 9 times, so `depth` levels expand to 9**depth strings."""
    levels = [f"    l0: &l0 [{','.join(['lol'] * 9)}]"]
    for level in range(1, depth):
        levels.append(f"    l{level}: &l{level} [{','.join([f'*l{level - 1}'] * 9)}]")
    return (
        "apiVersion: metalflow/v1\nkind: Machine\nmetadata: {name: bomb}\nspec:\n"
        '  interfaces: [{mac: "02:00:00:00:0b:0b"}]\n  metadata:\n' + "\n".join(levels) + "\n"
    ).encode()


def fleet_yaml(count: int = FLEET_MACHINES) -> bytes:
    return "".join(f"---\n{machine_yaml(i)}" for i in range(count)).encode()


def zeros(total: int, chunk: int = BODY_CHUNK) -> Iterator[bytes]:
    """`total` bytes of JSON-ish filler, one reused chunk at a time (never held whole)."""
    block = b" " * chunk
    sent = 0
    while sent < total:
        piece = block if total - sent >= chunk else block[: total - sent]
        sent += len(piece)
        yield piece


# --------------------------------------------------------------------------------------------
# the server under attack


class Server:
    """`metalflow up` of one checkout, on its own loopback port and data dir."""

    def __init__(self, checkout: Path, memory_limit: int, cpus: set[int] | None) -> None:
        self.binary = checkout / ".venv" / "bin" / "metalflow"
        if not self.binary.exists():
            raise SystemExit(
                f"{self.binary} is missing: run scripts/test.sh (or create .venv and "
                f"pip install -e .) in {checkout} first"
            )
        self.checkout = checkout
        self.memory_limit = memory_limit
        self.cpus = cpus
        self.data_dir = Path(tempfile.mkdtemp(prefix="metalflow-bench-hostile."))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def _limits(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_limit, self.memory_limit))

    def start(self, timeout: float = 90.0) -> None:
        argv = [
            str(self.binary),
            "up",
            "--data-dir",
            str(self.data_dir),
            "--http",
            f"127.0.0.1:{self.port}",
            "--metadata-port",
            str(free_port()),
        ]
        with (self.data_dir / "server.log").open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                preexec_fn=self._limits,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if probe(self.port, 2.0)[0] == 200:
                self.token = (self.data_dir / "admin-token").read_text().strip()
                return
            time.sleep(0.2)
        tail = self.log()[-3000:]
        self.stop()
        raise SystemExit(f"metalflow from {self.checkout} did not become healthy:\n{tail}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "server.log").read_text(errors="replace")
        return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)

    def cleanup(self, keep: bool) -> None:
        if keep:
            log(f"kept data dir and server log: {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def probe(port: int, timeout: float) -> tuple[int, float]:
    """`GET /healthz` on a new connection: (status or 0 for no answer, seconds)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        conn.close()
    return status, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# measuring during an attack


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB, from /proc; empty once it is gone."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


@dataclass
class Watch:
    """The samplers' findings over one attack."""

    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    healthz_seconds: list[float] = field(default_factory=list)
    healthz_failures: int = 0


class Watcher:
    """Two threads: one samples the server's memory, one probes /healthz, every 50 ms."""

    def __init__(self, server: Server) -> None:
        assert server.proc is not None
        self.server = server
        self.pid = server.proc.pid
        self.watch = Watch(rss_start_kib=status_kib(self.pid).get("VmRSS", 0))
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._memory, daemon=True),
            threading.Thread(target=self._health, daemon=True),
        ]

    def __enter__(self) -> Watch:
        for thread in self.threads:
            thread.start()
        return self.watch

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _memory(self) -> None:
        while not self.stopping.is_set():
            sample = status_kib(self.pid)
            peak = max(sample.get("VmHWM", 0), sample.get("VmRSS", 0))
            self.watch.rss_peak_kib = max(self.watch.rss_peak_kib, peak)
            self.stopping.wait(SAMPLE_SECONDS)

    def _health(self) -> None:
        while not self.stopping.is_set() and self.server.alive:
            status, seconds = probe(self.server.port, PROBE_TIMEOUT)
            if status == 200:
                self.watch.healthz_seconds.append(seconds)
            elif self.server.alive:
                self.watch.healthz_failures += 1
                self.watch.healthz_seconds.append(seconds)
            self.stopping.wait(max(0.0, SAMPLE_SECONDS - seconds))


# --------------------------------------------------------------------------------------------
# the attacks


def post(
    server: Server,
    path: str,
    body: Iterator[bytes],
    length: int,
    *,
    token: str | None,
    content_type: str,
    deadline: float,
) -> tuple[int, str]:
    """POST a body of `length` bytes from `body` on a raw socket; stops sending as soon as the
    server answers (or closes). Returns (status or 0, a short note)."""
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Connection: close",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    sent = 0
    note = ""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in body:
            if time.monotonic() > deadline or not server.alive:
                break
            if select.select([sock], [], [], 0)[0]:
                note = f"answered after {sent / 1e6:.0f} MB of {length / 1e6:.0f} MB"
                break
            _, writable, _ = select.select([], [sock], [], max(0.0, deadline - time.monotonic()))
            if not writable:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                note = f"connection closed after {sent / 1e6:.0f} MB of {length / 1e6:.0f} MB"
                break
            sent += len(chunk)
        reply = b""
        while b"\r\n" not in reply and time.monotonic() < deadline and server.alive:
            readable, _, _ = select.select([sock], [], [], 0.2)
            if not readable:
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            reply += data
    status_line = reply.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return status, note


def attack(server: Server, name: str, seconds: float) -> tuple[int, str]:
    deadline = time.monotonic() + seconds
    if name == "bomb":
        bomb = alias_bomb()
        return post(
            server,
            "/api/v1/apply",
            iter([bomb]),
            len(bomb),
            token=server.token,
            content_type="application/yaml",
            deadline=deadline,
        )
    if name == "body":
        return post(
            server,
            "/api/v1/agent/hello",
            zeros(BODY_BYTES),
            BODY_BYTES,
            token=None,
            content_type="application/json",
            deadline=deadline,
        )
    fleet = fleet_yaml()
    status, note = post(
        server,
        "/api/v1/apply",
        iter([fleet]),
        len(fleet),
        token=server.token,
        content_type="application/yaml",
        deadline=deadline,
    )
    return status, note or f"{len(fleet) / 1e6:.1f} MB of YAML"


@dataclass
class Outcome:
    side: str
    attack: str
    outcome: str
    seconds: float
    rss_start_mb: float
    rss_peak_mb: float
    healthz_p50_ms: float
    healthz_max_ms: float
    healthz_probes: int
    healthz_failures: int
    healthz_after: str


def run_attack(
    side: str, checkout: Path, name: str, args: argparse.Namespace, cpus: set[int] | None
) -> Outcome:
    server = Server(checkout, int(args.memory_limit_gib * 2**30), cpus)
    failed = True
    try:
        server.start()
        log(f"{side}: {name} against metalflow from {checkout} (pid {server.proc.pid})")  # type: ignore[union-attr]
        started = time.monotonic()
        with Watcher(server) as watch:
            status, note = attack(server, name, args.attack_seconds)
            elapsed = time.monotonic() - started
        assert server.proc is not None
        at_limit = "MemoryError" in server.log()
        if not server.alive:
            outcome = f"{'killed at limit' if at_limit else 'died'} (exit {server.proc.returncode})"
        elif elapsed >= args.attack_seconds:
            outcome = f"cut at {args.attack_seconds:g} s"
        else:
            outcome = f"HTTP {status}" if status else "no answer"
        if at_limit and server.alive:
            outcome += ", MemoryError at the limit"
        if note:
            outcome += f", {note}"
        after = probe(server.port, PROBE_TIMEOUT) if server.alive else (0, 0.0)
        failed = False
        latencies = sorted(watch.healthz_seconds)
        return Outcome(
            side=side,
            attack=name,
            outcome=outcome,
            seconds=elapsed,
            rss_start_mb=watch.rss_start_kib / 1024,
            rss_peak_mb=watch.rss_peak_kib / 1024,
            healthz_p50_ms=percentile(latencies, 0.5) * 1000,
            healthz_max_ms=(latencies[-1] * 1000) if latencies else float("nan"),
            healthz_probes=len(latencies),
            healthz_failures=watch.healthz_failures,
            healthz_after=f"{after[0]} in {after[1] * 1000:.0f} ms" if after[0] else "no answer",
        )
    finally:
        server.stop()
        server.cleanup(keep=args.keep or failed)


# --------------------------------------------------------------------------------------------
# report


def ratio(after: float, before: float) -> float:
    return after / before if before else float("nan")


def format_report(outcomes: list[Outcome], sides: dict[str, Path], args: argparse.Namespace) -> str:
    out = [
        "",
        "metalflow hostile-input benchmark",
        "=" * 100,
        f"memory limit {args.memory_limit_gib:g} GiB (RLIMIT_AS), attack cap "
        f"{args.attack_seconds:g} s, samples every {SAMPLE_SECONDS * 1000:.0f} ms",
    ]
    out += [f"{side}: {path}" for side, path in sides.items()]
    out += [
        "",
        f"{'side':7}{'attack':7}{'peak RSS MB':>12}{'start MB':>10}{'healthz p50':>12}"
        f"{'max ms':>10}{'probes':>8}{'failed':>8}{'seconds':>9}  outcome; /healthz after",
    ]
    for o in outcomes:
        out.append(
            f"{o.side:7}{o.attack:7}{o.rss_peak_mb:>12.0f}{o.rss_start_mb:>10.0f}"
            f"{o.healthz_p50_ms:>12.1f}{o.healthz_max_ms:>10.0f}{o.healthz_probes:>8}"
            f"{o.healthz_failures:>8}{o.seconds:>9.1f}  {o.outcome}; {o.healthz_after}"
        )
    if {"before", "after"} <= sides.keys():
        out += ["", "after / before:"]
        by = {(o.side, o.attack): o for o in outcomes}
        for name in args.attacks:
            before, after = by.get(("before", name)), by.get(("after", name))
            if before and after:
                out.append(
                    f"  {name:6} peak RSS {ratio(after.rss_peak_mb, before.rss_peak_mb):.2f}x, "
                    f"healthz p50 {ratio(after.healthz_p50_ms, before.healthz_p50_ms):.2f}x, "
                    f"max {ratio(after.healthz_max_ms, before.healthz_max_ms):.2f}x"
                )
    out.append("=" * 100)
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--before", type=Path, help="checkout of the code before the change")
    parser.add_argument(
        "--after", type=Path, help=f"checkout of the code after the change (default {REPO})"
    )
    parser.add_argument(
        "--attacks",
        nargs="+",
        choices=ATTACKS,
        default=list(ATTACKS),
        help="which attacks to run (default all)",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=3.0,
        help="address-space limit of each server (RLIMIT_AS), so a bomb cannot take the machine",
    )
    parser.add_argument(
        "--attack-seconds", type=float, default=180.0, help="wall-clock cap of each attack"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data dirs and logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.after is None and args.before is None:
        args.after = REPO
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides = {
        side: path.resolve()
        for side, path in (("before", args.before), ("after", args.after))
        if path is not None
    }
    cpus = sorted(os.sched_getaffinity(0))
    pin = len(cpus) >= 2 and not args.no_pin
    server_cpus = {cpus[1]} if pin else None
    if pin:
        os.sched_setaffinity(0, {cpus[0]})
    log(f"pinning: bench CPU {cpus[0]}, server CPU {cpus[1]}" if pin else "pinning: none")
    outcomes = []
    for name in args.attacks:
        for side, checkout in sides.items():
            outcomes.append(run_attack(side, checkout, name, args, server_cpus))
            log(f"{side}: {name}: {outcomes[-1].outcome}")
    print(format_report(outcomes, sides, args), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
