#!/usr/bin/env python3
"""TFTP benchmark: time to fetch one large file from metalflow, atftpd and tftpd-hpa.

A 30 MiB file (random bytes) is fetched over a veth pair between two network namespaces this
script creates (server 192.0.2.1, client 192.0.2.2), with blksize 1468 (one full Ethernet frame)
and, where the client supports it, windowsize 8 (RFC 7440: eight blocks per ACK). Clients: curl
(`--tftp-blksize`, no windowsize) and atftp (`--option "blksize 1468"`, `--option "windowsize 8"`).
Servers:

- metalflow: `metalflow up --interface eth0 --dhcp-mode off --boot-dir DIR` (TFTP on port 69);
- atftpd and tftpd-hpa: their Debian packages conflict (both ship in.tftpd), so they are fetched
  with `apt-get download` and unpacked with `dpkg-deb -x` into `--peers-dir` (with libwrap0,
  which both link), never installed, and run from there.

Each (server, client) pair is timed `--repeat` times and the median reported; the first fetch of
each pair is checked byte for byte. The server runs on CPU 1, the client on CPU 0. Only
processes this script started are stopped (by PID), only its namespaces are deleted. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dhcp import (  # bench/dhcp.py (same directory): the namespace lab and helpers
    METALFLOW,
    SERVER_IP,
    NetnsLab,
    SetupError,
    log,
    need,
    pick_cpus,
    raise_on_sigterm,
    sh,
    unpack_debs,
    wait_until,
)
from fleet import cpu_seconds

FILE_NAME = "bench.bin"
BLKSIZE = 1468
PEER_PACKAGES = ("atftpd", "tftpd-hpa", "libwrap0")
CLIENTS = {
    "curl": "curl --tftp-blksize 1468",
    "atftp": 'atftp --option "blksize 1468"',
    "atftp-w8": 'atftp --option "blksize 1468" --option "windowsize 8"',
}
DEFAULT_PEERS_DIR = Path(tempfile.gettempdir()) / "metalflow-bench-tftp-peers"


def fetch_peers(peers_dir: Path) -> Path:
    """The unpacked root of atftpd + tftpd-hpa (+ libwrap0), downloaded once into peers_dir."""
    root = peers_dir / "root"
    if (root / "usr/sbin/atftpd").exists() and (root / "usr/sbin/in.tftpd").exists():
        return root
    return unpack_debs(PEER_PACKAGES, peers_dir)


@dataclass
class Server:
    name: str
    port: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    signal: int = signal.SIGTERM
    version: str = ""


@dataclass
class Timing:
    server: str
    client: str
    seconds: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def client_command(client: str, port: int, out: Path) -> list[str]:
    if client == "curl":
        url = f"tftp://{SERVER_IP}:{port}/{FILE_NAME}"
        return [
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--tftp-blksize",
            str(BLKSIZE),
            "-o",
            str(out),
            url,
        ]
    options = ["--option", f"blksize {BLKSIZE}"]
    if client == "atftp-w8":
        options += ["--option", "windowsize 8"]
    return ["atftp", "--get", "-r", FILE_NAME, "-l", str(out), *options, SERVER_IP, str(port)]


def fetch_once(
    lab: NetnsLab,
    server: Server,
    process: subprocess.Popen[bytes],
    timing: Timing,
    args: argparse.Namespace,
    out: Path,
    digest: str | None,
    gen_cpu: int | None,
) -> None:
    """One timed fetch; failures end up in `timing.error` (and end that pair's fetches)."""
    out.unlink(missing_ok=True)
    cpu_before = cpu_seconds(process.pid) or 0.0
    started = time.perf_counter()
    try:
        result = lab.run(lab.client, gen_cpu, client_command(timing.client, server.port, out), 90)
    except subprocess.TimeoutExpired:
        timing.error = "client timed out"
        return
    elapsed = time.perf_counter() - started
    cpu_used = (cpu_seconds(process.pid) or 0.0) - cpu_before
    size = out.stat().st_size if out.exists() else -1
    if result.returncode or size != args.size_mib * 2**20:
        detail = (result.stderr or result.stdout).strip()[-200:]
        timing.error = f"rc {result.returncode}, {size} bytes: {detail}"
    elif digest is not None and hashlib.sha256(out.read_bytes()).hexdigest() != digest:
        timing.error = "content differs from the served file"
    else:
        timing.seconds.append(elapsed)
        timing.server_cpu.append(cpu_used)
    out.unlink(missing_ok=True)


def measure(
    lab: NetnsLab,
    servers: list[Server],
    clients: list[str],
    args: argparse.Namespace,
    workdir: Path,
    digest: str,
    cpus: tuple[int | None, int | None],
) -> list[Timing]:
    """All servers run at once (each on its own port, idle unless fetched from); the fetches
    are interleaved round by round (every server and client once per round), so the noise of
    a shared machine spreads over all of them instead of favouring whoever ran in a quiet
    minute."""
    gen_cpu, server_cpu = cpus
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for server in servers:
            log_path = workdir / f"{server.name}.log"
            process = lab.start(lab.server, server_cpu, server.command, log_path, server.env)
            processes[server.name] = process
            wait_until(
                functools.partial(lab.udp_listening, lab.server, server.port),
                60,
                f"{server.name} on UDP port {server.port}",
                process,
                log_path,
            )
        time.sleep(0.3)
        timings = {(s.name, c): Timing(s.name, c) for s in servers for c in clients}
        for round_ in range(args.repeat):
            for client in clients:
                for server in servers:
                    timing = timings[(server.name, client)]
                    if timing.error:
                        continue
                    process = processes[server.name]
                    out = workdir / f"out-{server.name}-{client}"
                    check = digest if round_ == 0 else None
                    fetch_once(lab, server, process, timing, args, out, check, gen_cpu)
                    if process.poll() is not None:
                        raise SetupError(f"{server.name} exited during the run")
            log(
                f"round {round_ + 1}/{args.repeat}: "
                + ", ".join(
                    f"{t.server}/{t.client} {t.seconds[-1]:.3f}s"
                    if t.seconds
                    else f"{t.server}/{t.client} FAILED"
                    for t in timings.values()
                )
            )
        return list(timings.values())
    finally:
        for server in servers:
            if server.name in processes:
                lab.stop(processes[server.name], server.signal)


def report(timings: list[Timing], servers: list[Server], args: argparse.Namespace) -> str:
    mib = args.size_mib
    out = [
        "",
        f"TFTP benchmark: {mib} MiB file, blksize {BLKSIZE}, median of {args.repeat}",
        "=" * 90,
        f"{'server':12}{'client':12}{'median s':>10}{'min s':>8}{'max s':>8}{'MiB/s':>9}"
        f"{'srv cpu s':>11}  client command",
    ]
    by_key = {(t.server, t.client): t for t in timings}
    for t in timings:
        if not t.seconds:
            out.append(f"{t.server:12}{t.client:12}  FAILED: {t.error}")
            continue
        out.append(
            f"{t.server:12}{t.client:12}{t.median:>10.3f}{min(t.seconds):>8.3f}"
            f"{max(t.seconds):>8.3f}{mib / t.median:>9.1f}"
            f"{_cpu(t):>11}  {CLIENTS[t.client]}"
        )
    out.append("")
    out.append("time ratios metalflow / peer (below 1: metalflow is faster):")
    for client in args.clients:
        mine = by_key.get(("metalflow", client))
        for peer in (s.name for s in servers if s.name != "metalflow"):
            theirs = by_key.get((peer, client))
            if mine and theirs and mine.seconds and theirs.seconds:
                out.append(
                    f"  {client:9} metalflow / {peer:10} = {mine.median / theirs.median:5.2f}x"
                    f"   ({mine.median:.3f}s vs {theirs.median:.3f}s)"
                )
    out.append("versions: " + "; ".join(f"{s.name} {s.version}" for s in servers))
    out.append("=" * 90)
    return "\n".join(out)


def _cpu(timing: Timing) -> str:
    """Median server CPU seconds per fetch; "-" for a server that forks per transfer (the
    children's time is not visible in the parent's counters while it runs)."""
    if timing.server == "tftpd-hpa":
        return "-"
    return f"{statistics.median(timing.server_cpu):.3f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size-mib", type=int, default=30, help="size of the served file")
    parser.add_argument("--repeat", type=int, default=5, help="fetches per (server, client)")
    parser.add_argument(
        "--servers", default="metalflow,atftpd,tftpd-hpa", help="comma-separated subset"
    )
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=DEFAULT_PEERS_DIR,
        help="where atftpd/tftpd-hpa are downloaded and unpacked (kept for the next run)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.clients = [c for c in args.clients.split(",") if c]
    if set(args.servers) - {"metalflow", "atftpd", "tftpd-hpa"}:
        parser.error("--servers: choose from metalflow, atftpd, tftpd-hpa")
    if set(args.clients) - set(CLIENTS):
        parser.error(f"--clients: choose from {', '.join(CLIENTS)}")
    if args.repeat < 1 or args.size_mib < 1:
        parser.error("--repeat and --size-mib must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (network namespaces, port 69)", file=sys.stderr)
        return 2
    raise_on_sigterm()
    gen_cpu, server_cpu = pick_cpus(args.no_pin)
    pin = server_cpu is not None
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-tftp."))
    workdir.chmod(0o755)  # tftpd-hpa and atftpd serve as nobody
    lab: NetnsLab | None = None
    failed = True
    try:
        for tool, package in (("ip", "iproute2"), ("ss", "iproute2"), ("curl", "curl")):
            need(tool, package)
        if any(c.startswith("atftp") for c in args.clients):
            need("atftp", "atftp")
        served = workdir / "boot"
        served.mkdir(mode=0o755)
        data = os.urandom(args.size_mib * 2**20)
        (served / FILE_NAME).write_bytes(data)
        (served / FILE_NAME).chmod(0o644)
        digest = hashlib.sha256(data).hexdigest()
        del data

        servers: list[Server] = []
        for name in args.servers:
            if name == "metalflow":
                command = [METALFLOW, "up", "--interface", "eth0", "--dhcp-mode", "off"]
                command += ["--boot-dir", str(served), "--data-dir", str(workdir / "data")]
                command += ["--http", "127.0.0.1:7080"]
                version = sh(sys.executable, "-c", "import metalflow; print(metalflow.__version__)")
                servers.append(Server(name, 69, command, {}, signal.SIGINT, version.stdout.strip()))
                continue
            root = fetch_peers(args.peers_dir)
            env = {
                "LD_LIBRARY_PATH": f"{root}/usr/lib/x86_64-linux-gnu:{root}/lib/x86_64-linux-gnu"
            }
            if name == "atftpd":
                command = [str(root / "usr/sbin/atftpd"), "--daemon", "--no-fork", "--port", "6969"]
                command += ["--bind-address", SERVER_IP, "--logfile", "-", str(served)]
                deb = next(args.peers_dir.glob("atftpd_*.deb"), None)
                servers.append(Server(name, 6969, command, env, version=_deb_version(deb)))
            else:
                command = [str(root / "usr/sbin/in.tftpd"), "-L", "-a", f"{SERVER_IP}:6970"]
                command += ["-s", str(served)]
                deb = next(args.peers_dir.glob("tftpd-hpa_*.deb"), None)
                servers.append(Server(name, 6970, command, env, version=_deb_version(deb)))

        lab = NetnsLab("mfbt")
        log(f"namespaces {lab.server} (server) / {lab.client} (client); work dir {workdir}")
        timings = measure(lab, servers, args.clients, args, workdir, digest, (gen_cpu, server_cpu))
        print(
            f"machine: {os.cpu_count()} CPUs, pinning: "
            + (f"client CPU {gen_cpu}, server CPU {server_cpu}" if pin else "none")
        )
        print(report(timings, servers, args), flush=True)
        failed = any(not t.seconds for t in timings if t.server == "metalflow")
        return 1 if failed else 0
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


def _deb_version(deb: Path | None) -> str:
    if deb is None:
        return ""
    return sh("dpkg-deb", "-f", str(deb), "Version").stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
