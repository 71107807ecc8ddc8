#!/usr/bin/env python3
"""DHCPv4 benchmark: the highest DORA rate metalflow, Kea and dnsmasq answer with < 1 % drops.

ISC perfdhcp acts as a relay agent (giaddr 198.18.0.2) in a client network namespace and sends
DISCOVER/REQUEST at a fixed rate to the server in a second namespace, over one veth pair that
this script creates (192.0.2.0/24 and 198.18.0.0/15, both documentation/benchmark ranges; no
real interface is touched). For each server a short search (double until drops, then bisect)
finds the highest rate with < 1 % drops; every trial starts the server afresh with empty leases,
so each rate is measured under the same conditions. The figure reported is leases/s: DHCPACKs
received by perfdhcp per second of the test period. Servers:

- metalflow on SQLite and on PostgreSQL (a throwaway cluster in the server namespace, default
  durability: fsync and synchronous_commit on), `metalflow up --interface eth0 --boot-config`;
- Kea 2.x `kea-dhcp4` with the memfile lease backend (writes every lease to a CSV file);
- dnsmasq `--no-ping --quiet-dhcp` (rewrites its lease file on every change).

The server (and PostgreSQL) runs on CPU 1, perfdhcp on CPU 0 (taskset). Only processes this
script started are stopped (by PID) and only namespaces it created are deleted, also on
SIGINT/SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet import Postgres, cpu_seconds  # bench/fleet.py (same directory)

METALFLOW = str(Path(sys.executable).with_name("metalflow"))
SERVER_IP = "192.0.2.1"
CLIENT_IP = "192.0.2.2"
RELAY_IP = "198.18.0.2"
BENCH_SERVER_IP = "198.18.0.1"
POOL_START, POOL_END = "198.18.1.0", "198.19.255.250"  # 130,811 addresses: room for 100k clients
DROP_LIMIT = 0.01
SERVERS = ("metalflow-sqlite", "metalflow-postgresql", "kea", "dnsmasq")
LABELS = {
    "metalflow-sqlite": "metalflow (SQLite)",
    "metalflow-postgresql": "metalflow (PostgreSQL)",
    "kea": "Kea memfile",
    "dnsmasq": "dnsmasq",
}


class SetupError(RuntimeError):
    """Something the benchmark needs is missing or would not start: exit 2 with the message."""


def log(message: str) -> None:
    print(f"[{Path(sys.argv[0]).stem} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise SetupError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SetupError(f"{tool} not found: apt-get install {package}")
    return path


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` (processes, namespaces) runs."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------------------------
# network namespaces and processes


class NetnsLab:
    """Two namespaces (`server`, `client`) joined by one veth pair, both ends named eth0.

    server 192.0.2.1/24 + 198.18.0.1/15, client 192.0.2.2/24 + 198.18.0.2/15. Names carry this
    process's PID, so parallel runs and other users' namespaces never collide; close() deletes
    exactly the namespaces created here (which removes the veth pair with them).
    """

    def __init__(self, prefix: str) -> None:
        tag = f"{prefix}{os.getpid()}"
        self.server = f"{tag}s"
        self.client = f"{tag}c"
        self.created: list[str] = []
        self.processes: list[subprocess.Popen[Any]] = []
        try:
            for namespace in (self.server, self.client):
                sh("ip", "netns", "add", namespace)
                self.created.append(namespace)
                sh("ip", "-n", namespace, "link", "set", "lo", "up")
            left, right = f"{tag}a"[-15:], f"{tag}b"[-15:]
            sh("ip", "link", "add", left, "type", "veth", "peer", "name", right)
            sh("ip", "link", "set", left, "netns", self.server)
            sh("ip", "link", "set", right, "netns", self.client)
            for namespace, link, addresses in (
                (self.server, left, (f"{SERVER_IP}/24", f"{BENCH_SERVER_IP}/15")),
                (self.client, right, (f"{CLIENT_IP}/24", f"{RELAY_IP}/15")),
            ):
                sh("ip", "-n", namespace, "link", "set", link, "name", "eth0")
                for cidr in addresses:
                    sh("ip", "-n", namespace, "addr", "add", cidr, "dev", "eth0")
                sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def argv(namespace: str, cpu: int | None, command: Sequence[str]) -> list[str]:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return ["ip", "netns", "exec", namespace, *pin, *command]

    def start(
        self,
        namespace: str,
        cpu: int | None,
        command: Sequence[str],
        log_file: Path,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[Any]:
        """Start `command` in `namespace` (ip netns exec and taskset exec into it: the PID is
        the command's own), output to `log_file`."""
        with log_file.open("ab") as out:
            process = subprocess.Popen(
                self.argv(namespace, cpu, command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches this script only; it stops them
            )
        self.processes.append(process)
        return process

    def run(
        self,
        namespace: str,
        cpu: int | None,
        command: Sequence[str],
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(namespace, cpu, command), capture_output=True, text=True, timeout=timeout
        )

    def stop(self, process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
        """Stop one process this lab started, by its PID: `sig`, then SIGKILL after 15 s."""
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process in self.processes:
            self.processes.remove(process)

    def udp_listening(self, namespace: str, port: int) -> bool:
        result = sh("ip", "netns", "exec", namespace, "ss", "-Hlun", f"sport = :{port}")
        return bool(result.stdout.strip())

    def udp_errors(self, namespace: str) -> dict[str, int]:
        """The namespace's UDP counters (/proc/net/snmp): RcvbufErrors = datagrams the kernel
        dropped because the receiving socket's buffer was full."""
        text = sh("ip", "netns", "exec", namespace, "cat", "/proc/net/snmp").stdout
        rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
        return {k: int(v) for k, v in zip(rows[0], rows[1], strict=False)} if len(rows) > 1 else {}

    def stop_all(self) -> None:
        for process in reversed(list(self.processes)):
            self.stop(process)

    def close(self) -> None:
        """Stop what is left, then delete the namespaces this lab created."""
        self.stop_all()
        for namespace in reversed(self.created):
            sh("ip", "netns", "del", namespace, check=False)
        self.created.clear()


def unpack_debs(packages: Sequence[str], peers_dir: Path) -> Path:
    """`apt-get download` + `dpkg-deb -x` of `packages` into peers_dir/root (never installed:
    the peers conflict as Debian packages, and a benchmark must not start services)."""
    need("apt-get", "apt")
    need("dpkg-deb", "dpkg")
    root = peers_dir / "root"
    peers_dir.mkdir(parents=True, exist_ok=True)
    log(f"fetching {' '.join(packages)} into {peers_dir} (apt-get download, not installed)")
    result = subprocess.run(
        ["apt-get", "download", *packages],
        cwd=peers_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise SetupError(
            "apt-get download failed (try `apt-get update` first):\n" + result.stderr.strip()
        )
    for deb in sorted(peers_dir.glob("*.deb")):
        sh("dpkg-deb", "-x", str(deb), str(root))
    return root


def pick_cpus(no_pin: bool) -> tuple[int | None, int | None]:
    """(load generator CPU, server CPU): the first two CPUs, or no pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and not no_pin:
        return cpus[0], cpus[1]
    return None, None


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen[Any] | None,
    log_path: Path | None = None,
) -> None:
    """Poll `predicate` until true; SetupError (with the log's tail) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            problem = f"the process exited ({process.returncode})"
            break
        if predicate():
            return
        time.sleep(0.1)
    else:
        problem = f"not ready after {timeout:g}s"
    detail = f"\n--- {log_path}:\n{tail(log_path)}" if log_path else ""
    raise SetupError(f"{what}: {problem}{detail}")


def tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


# --------------------------------------------------------------------------------------------
# servers under test


class DhcpUnderTest(abc.ABC):
    """One DHCP server implementation: started afresh (empty leases) for every trial."""

    name = ""

    def __init__(self, lab: NetnsLab, cpu: int | None, workdir: Path) -> None:
        self.lab = lab
        self.cpu = cpu
        self.workdir = workdir
        self.process: subprocess.Popen[Any] | None = None
        self.log_path = workdir / f"{self.name}.log"
        self.trial = 0

    def version(self) -> str:
        return ""

    @abc.abstractmethod
    def command(self, trial_dir: Path) -> tuple[list[str], dict[str, str]]:
        """The server's command line and extra environment for one trial."""

    def start(self) -> None:
        self.trial += 1
        trial_dir = self.workdir / f"{self.name}-{self.trial}"
        trial_dir.mkdir()
        command, env = self.command(trial_dir)
        with self.log_path.open("a") as out:
            out.write(f"\n=== trial {self.trial}: {' '.join(command)}\n")
        self.process = self.lab.start(self.lab.server, self.cpu, command, self.log_path, env)
        try:
            wait_until(
                lambda: self.lab.udp_listening(self.lab.server, 67),
                60,
                f"{self.name} listening on UDP port 67",
                self.process,
                self.log_path,
            )
            self.ready()
        except BaseException:
            self.stop()
            raise

    def ready(self) -> None:
        time.sleep(0.3)

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process and self.process.poll() is None else []

    def counters(self) -> dict[str, Any]:
        """The server's own view of the trial (metalflow: its /metrics), before stopping."""
        return {}

    def stop(self) -> None:
        if self.process is not None:
            self.lab.stop(self.process)
            self.process = None


class Metalflow(DhcpUnderTest):
    name = "metalflow"

    def __init__(
        self, lab: NetnsLab, cpu: int | None, workdir: Path, postgres: Postgres | None
    ) -> None:
        self.name = "metalflow-postgresql" if postgres else "metalflow-sqlite"
        super().__init__(lab, cpu, workdir)
        self.postgres = postgres
        self.port = 7080
        self.data_dir: Path | None = None
        self.config = workdir / "boot.yaml"
        self.config.write_text(
            "networks:\n"
            "  - subnet: 192.0.2.0/24\n"
            "  - subnet: 198.18.0.0/15\n"
            f"    gateway: {RELAY_IP}\n"
            f"    nameservers: [{RELAY_IP}]\n"
            f"    pool: {{start: {POOL_START}, end: {POOL_END}}}\n"
            "    lease_time: 3600\n"
        )

    def version(self) -> str:
        result = sh(sys.executable, "-c", "import metalflow; print(metalflow.__version__)")
        backend = f"PostgreSQL {self.postgres.version()}" if self.postgres else "SQLite"
        return f"metalflow {result.stdout.strip()} on {backend}"

    def command(self, trial_dir: Path) -> tuple[list[str], dict[str, str]]:
        self.data_dir = trial_dir / "data"
        argv = [METALFLOW, "up", "--interface", "eth0", "--boot-config", str(self.config)]
        argv += ["--data-dir", str(self.data_dir), "--http", f"127.0.0.1:{self.port}"]
        if self.postgres:
            assert self.postgres.port is not None
            database = f"metalflow_t{self.trial}"
            self.postgres._run(  # a fresh, empty database per trial
                str(self.postgres.bin / "createdb"),
                "-h",
                str(self.postgres.tmp),
                "-p",
                str(self.postgres.port),
                "-U",
                "metalflow",
                database,
            )
            argv += [
                "--database",
                f"postgresql://metalflow@127.0.0.1:{self.postgres.port}/{database}",
            ]
        return argv, {}

    def ready(self) -> None:
        wait_until(self._healthy, 60, f"{self.name} /healthz", self.process, self.log_path)

    def _get(self, path: str, token: str | None = None) -> tuple[int, str]:
        command = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5"]
        if token:
            command += ["-H", f"Authorization: Bearer {token}"]
        result = self.lab.run(
            self.lab.server, None, [*command, f"http://127.0.0.1:{self.port}{path}"], 10
        )
        body, _, code = result.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def _healthy(self) -> bool:
        return self._get("/healthz")[0] == 200

    def pids(self) -> list[int]:
        return super().pids() + (self.postgres.pids() if self.postgres else [])

    def counters(self) -> dict[str, Any]:
        assert self.data_dir is not None
        token = (self.data_dir / "admin-token").read_text().strip()
        _, body = self._get("/metrics", token)
        found: dict[str, Any] = {}
        for line in body.splitlines():
            match = re.match(r'metalflow_dhcp_(replies|dropped)_total\{\w+="([^"]+)"\} (\S+)', line)
            if match:
                found[f"{match[1]}:{match[2]}"] = int(float(match[3]))
        errors = sum(1 for line in tail(self.log_path, 10**7).splitlines() if "Traceback" in line)
        if errors:
            found["tracebacks_in_log"] = errors
        return found

    def stop(self) -> None:
        if self.process is not None:
            self.lab.stop(self.process, signal.SIGINT)
            self.process = None


class Kea(DhcpUnderTest):
    name = "kea"

    def version(self) -> str:
        return "Kea " + sh(need("kea-dhcp4", "kea-dhcp4-server"), "-v").stdout.strip()

    def command(self, trial_dir: Path) -> tuple[list[str], dict[str, str]]:
        config = {
            "Dhcp4": {
                "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "udp"},
                "lease-database": {
                    "type": "memfile",
                    "persist": True,
                    "name": str(trial_dir / "leases4.csv"),
                    "lfc-interval": 3600,
                },
                "valid-lifetime": 3600,
                "subnet4": [
                    {
                        "id": 1,
                        "subnet": "198.18.0.0/15",
                        "pools": [{"pool": f"{POOL_START} - {POOL_END}"}],
                        "option-data": [
                            {"name": "routers", "data": RELAY_IP},
                            {"name": "domain-name-servers", "data": RELAY_IP},
                        ],
                    },
                    {"id": 2, "subnet": f"{SERVER_IP}/24"},
                ],
                "loggers": [
                    {
                        "name": "kea-dhcp4",
                        "output_options": [{"output": str(trial_dir / "kea.log")}],
                        "severity": "WARN",
                    }
                ],
            }
        }
        path = trial_dir / "kea-dhcp4.json"
        path.write_text(json.dumps(config, indent=2))
        env = {"KEA_PIDFILE_DIR": str(trial_dir), "KEA_LOCKFILE_DIR": str(trial_dir)}
        return [need("kea-dhcp4", "kea-dhcp4-server"), "-c", str(path)], env


class Dnsmasq(DhcpUnderTest):
    name = "dnsmasq"

    def version(self) -> str:
        first = sh(need("dnsmasq", "dnsmasq-base"), "--version").stdout.split("\n", 1)[0]
        return " ".join(first.split()[:3])

    def command(self, trial_dir: Path) -> tuple[list[str], dict[str, str]]:
        return [
            need("dnsmasq", "dnsmasq-base"),
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--no-ping",
            "--quiet-dhcp",
            "--interface=eth0",
            f"--dhcp-range={POOL_START},{POOL_END},255.254.0.0,1h",
            "--dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,1h",
            f"--dhcp-option=3,{RELAY_IP}",
            f"--dhcp-option=6,{RELAY_IP}",
            "--dhcp-lease-max=200000",
            f"--dhcp-leasefile={trial_dir / 'dnsmasq.leases'}",
            f"--log-facility={trial_dir / 'dnsmasq.log'}",
        ], {}


# --------------------------------------------------------------------------------------------
# perfdhcp and the rate search


@dataclass
class Trial:
    server: str
    rate: int
    period: float
    discovers: int = 0
    offers: int = 0
    requests: int = 0
    acks: int = 0
    offer_delay_ms: float = float("nan")
    ack_delay_ms: float = float("nan")
    server_cpu: float = float("nan")
    """CPU seconds the server (and PostgreSQL) used per second of the trial."""
    rcvbuf_errors: int = 0
    """UDP datagrams the server namespace's kernel dropped for a full socket buffer."""
    counters: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def leases_per_second(self) -> float:
        return self.acks / self.period

    @property
    def drops(self) -> float:
        return 1 - self.acks / self.discovers if self.discovers else 1.0

    @property
    def generator_kept_up(self) -> bool:
        """perfdhcp sent (nearly) the DISCOVERs it was asked to: else it, not the server, was
        the limit of this trial."""
        return self.discovers >= 0.97 * self.rate * self.period

    @property
    def passed(self) -> bool:
        return not self.error and self.drops < DROP_LIMIT


SECTION = re.compile(
    r"\*\*\*Statistics for: (DISCOVER-OFFER|REQUEST-ACK)\*\*\*(.*?)(?=\*\*\*|\Z)", re.S
)


def parse_perfdhcp(text: str, trial: Trial) -> None:
    for name, body in SECTION.findall(text):

        def number(key: str, body: str = body) -> float:
            match = re.search(rf"^{key}: ([\d.]+)", body, re.M)
            return float(match[1]) if match else float("nan")

        sent, received, delay = (
            number("sent packets"),
            number("received packets"),
            number("avg delay"),
        )
        if math.isnan(sent) or math.isnan(received):
            continue
        if name == "DISCOVER-OFFER":
            trial.discovers, trial.offers, trial.offer_delay_ms = int(sent), int(received), delay
        else:
            trial.requests, trial.acks, trial.ack_delay_ms = int(sent), int(received), delay


def run_trial(
    lab: NetnsLab,
    server: DhcpUnderTest,
    rate: int,
    args: argparse.Namespace,
    gen_cpu: int | None,
) -> Trial:
    trial = Trial(server.name, rate, args.period)
    server.start()
    try:
        udp_before = lab.udp_errors(lab.server).get("RcvbufErrors", 0)
        cpu_before = sum(filter(None, map(cpu_seconds, server.pids())))
        started = time.monotonic()
        command = [need("perfdhcp", "kea-admin"), "-4", "-l", RELAY_IP, "-r", str(rate)]
        command += ["-R", str(args.clients), "-p", f"{args.period:g}", "-W", "1000000"]
        command += ["-g", "single", SERVER_IP]
        try:
            result = lab.run(lab.client, gen_cpu, command, timeout=args.period + 30)
        except subprocess.TimeoutExpired:
            trial.error = "perfdhcp did not finish"
            return trial
        elapsed = time.monotonic() - started
        cpu_after = sum(filter(None, map(cpu_seconds, server.pids())))
        trial.server_cpu = (cpu_after - cpu_before) / elapsed
        trial.rcvbuf_errors = lab.udp_errors(lab.server).get("RcvbufErrors", 0) - udp_before
        parse_perfdhcp(result.stdout, trial)
        if not trial.discovers:
            trial.error = (
                f"perfdhcp: no statistics (rc {result.returncode}): "
                + (result.stderr or result.stdout).strip()[-500:]
            )
        if server.process is None or server.process.poll() is not None:
            trial.error = f"{server.name} exited during the trial:\n{tail(server.log_path)}"
        else:
            trial.counters = server.counters()
    finally:
        server.stop()
    return trial


def nice(rate: float) -> int:
    """Two significant digits: rates people can read and repeat."""
    if rate < 10:
        return max(1, round(rate))
    digits = 10 ** (int(math.log10(rate)) - 1)
    return int(round(rate / digits) * digits)


def search(
    measure: Callable[[int], Trial], start: int, max_rate: int, max_trials: int, precision: float
) -> tuple[Trial | None, list[Trial]]:
    """Double the rate until a trial drops >= 1 %, halve (guided by what the overloaded server
    did complete) until one passes, then bisect geometrically; at most `max_trials` trials.
    Returns the passing trial with the highest rate, and all trials."""
    trials: list[Trial] = []
    best: Trial | None = None
    lowest_fail: int | None = None
    rate = start
    while len(trials) < max_trials:
        trial = measure(rate)
        trials.append(trial)
        if trial.error and not trial.discovers:
            log(f"  trial failed: {trial.error}")
        if trial.passed:
            if best is None or trial.rate > best.rate:
                best = trial
            if not trial.generator_kept_up:
                break  # perfdhcp's own ceiling: no higher rate can be offered
        else:
            lowest_fail = rate if lowest_fail is None else min(lowest_fail, rate)
        if lowest_fail is None:
            if rate >= max_rate:
                break
            rate = min(max_rate, rate * 2)
        elif best is None:
            guess = 0.9 * trial.leases_per_second if trial.acks else rate / 4
            rate = nice(min(rate / 2, max(rate / 8, guess)))
            if rate < 10:
                break
        else:
            if lowest_fail / best.rate <= precision:
                break
            rate = nice(math.sqrt(best.rate * lowest_fail))
            if rate in (best.rate, lowest_fail):
                break
    return best, trials


# --------------------------------------------------------------------------------------------
# report


def trial_line(trial: Trial) -> str:
    flags = []
    if not trial.generator_kept_up and trial.discovers:
        flags.append("perfdhcp short of rate")
    if trial.rcvbuf_errors:
        flags.append(f"{trial.rcvbuf_errors} rcvbuf drops")
    if trial.error:
        flags.append(trial.error.splitlines()[0][:60])
    return (
        f"  {trial.rate:>7,}/s  disc {trial.discovers:>7,}  acks {trial.acks:>7,}  "
        f"drops {trial.drops * 100:6.2f}%  {trial.leases_per_second:>8,.0f} leases/s  "
        f"ack {trial.ack_delay_ms:7.2f} ms  cpu {trial.server_cpu * 100:4.0f}%  "
        f"{'PASS' if trial.passed else 'fail'}" + (f"  ({'; '.join(flags)})" if flags else "")
    )


def report(results: dict[str, tuple[Trial | None, list[Trial]]], versions: dict[str, str]) -> str:
    out = ["", "DHCPv4 DORA benchmark (perfdhcp as relay, < 1 % drops)", "=" * 96]
    out.append(
        f"{'server':26}{'leases/s':>10}{'at rate':>9}{'drops':>8}{'ack ms':>8}"
        f"{'srv cpu':>9}{'lowest fail':>13}  version"
    )
    best_rate: dict[str, float] = {}
    ceiling: dict[str, bool] = {}
    for name, (best, trials) in results.items():
        fails = [t.rate for t in trials if not t.passed]
        low = f"{min(fails):,}" if fails else "-"
        if best is None:
            out.append(
                f"{LABELS[name]:26}{'none':>10}{'':>9}{'':>8}{'':>8}{'':>9}{low:>13}  "
                f"{versions.get(name, '')}"
            )
            continue
        best_rate[name] = best.leases_per_second
        ceiling[name] = not best.generator_kept_up or not fails
        mark = "≥" if ceiling[name] else " "
        out.append(
            f"{LABELS[name]:26}{mark}{best.leases_per_second:>9,.0f}{best.rate:>9,}"
            f"{best.drops * 100:>7.2f}%{best.ack_delay_ms:>8.2f}{best.server_cpu * 100:>8.0f}%"
            f"{low:>13}  {versions.get(name, '')}"
        )
    if any(ceiling.values()):
        out.append("(≥: no failing rate found — the load generator or --max-rate was the limit)")
    out.append("")
    for mine in ("metalflow-sqlite", "metalflow-postgresql"):
        for peer in ("kea", "dnsmasq"):
            if mine in best_rate and peer in best_rate:
                ratio = best_rate[mine] / best_rate[peer]
                bound = ""
                if ceiling.get(peer) and not ceiling.get(mine):
                    bound = "  (peer is a lower bound: ratio ≤ this)"
                elif ceiling.get(mine) and not ceiling.get(peer):
                    bound = "  (metalflow is a lower bound: ratio ≥ this)"
                out.append(f"ratio {LABELS[mine]} / {LABELS[peer]:12} = {ratio:6.2f}x{bound}")
    out.append("")
    out.append("trials:")
    for name, (_, trials) in results.items():
        out.append(f" {LABELS[name]}")
        out += [trial_line(t) for t in trials]
    problems = [
        (name, t.counters)
        for name, (_, trials) in results.items()
        for t in trials
        if t.counters.get("tracebacks_in_log") or any(k.startswith("dropped:") for k in t.counters)
    ]
    for name, counters in problems:
        out.append(f"server-side drops/errors ({name}): {counters}")
    out.append("=" * 96)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated subset of {','.join(SERVERS)}",
    )
    parser.add_argument("--period", type=float, default=5.0, help="seconds per trial (perfdhcp -p)")
    parser.add_argument("--max-trials", type=int, default=5, help="trials per server")
    parser.add_argument("--start-rate", type=int, default=2000, help="first rate tried (DORA/s)")
    parser.add_argument("--max-rate", type=int, default=32000, help="highest rate tried")
    parser.add_argument(
        "--precision",
        type=float,
        default=1.2,
        help="stop bisecting when lowest failing / highest passing rate is at most this",
    )
    parser.add_argument("--clients", type=int, default=100000, help="simulated clients (-R)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, leases)")
    parser.add_argument("--json", type=Path, help="also write every trial as JSON")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown --servers {','.join(sorted(unknown))}; choose from {SERVERS}")
    if args.period <= 0 or args.max_trials < 1 or args.start_rate < 1:
        parser.error("--period, --max-trials and --start-rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (network namespaces, port 67)", file=sys.stderr)
        return 2
    raise_on_sigterm()
    gen_cpu, server_cpu = pick_cpus(args.no_pin)
    pin = server_cpu is not None
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-dhcp."))
    lab: NetnsLab | None = None
    postgres: Postgres | None = None
    failed = True
    try:
        for tool, package in (("ip", "iproute2"), ("ss", "iproute2"), ("curl", "curl")):
            need(tool, package)
        need("perfdhcp", "kea-admin")
        lab = NetnsLab("mfbd")
        log(f"namespaces {lab.server} (server) / {lab.client} (client); work dir {workdir}")
        servers: list[DhcpUnderTest] = []
        for name in args.servers:
            if name == "metalflow-sqlite":
                servers.append(Metalflow(lab, server_cpu, workdir, None))
            elif name == "metalflow-postgresql":
                try:
                    postgres = Postgres({server_cpu} if server_cpu is not None else None)
                except SystemExit as exc:
                    raise SetupError(str(exc)) from None
                # the cluster lives in the server namespace, on its 127.0.0.1
                postgres.run_as = ["ip", "netns", "exec", lab.server, *postgres.run_as]
                try:
                    postgres.start()
                except SystemExit as exc:
                    raise SetupError(str(exc)) from None
                servers.append(Metalflow(lab, server_cpu, workdir, postgres))
            elif name == "kea":
                servers.append(Kea(lab, server_cpu, workdir))
            else:
                servers.append(Dnsmasq(lab, server_cpu, workdir))
        versions = {server.name: server.version() for server in servers}
        results: dict[str, tuple[Trial | None, list[Trial]]] = {}
        for server in servers:
            log(f"{server.name}: searching (period {args.period:g}s, <= {args.max_trials} trials)")

            def measure(rate: int, server: DhcpUnderTest = server) -> Trial:
                trial = run_trial(lab, server, rate, args, gen_cpu)  # type: ignore[arg-type]
                log(trial_line(trial).strip())
                return trial

            results[server.name] = search(
                measure, args.start_rate, args.max_rate, args.max_trials, args.precision
            )
        print(
            f"machine: {os.cpu_count()} CPUs, pinning: "
            + (f"perfdhcp CPU {gen_cpu}, server (+PostgreSQL) CPU {server_cpu}" if pin else "none")
            + f"; period {args.period:g}s, clients {args.clients:,}"
        )
        print(report(results, versions), flush=True)
        if args.json:
            payload = {
                name: [asdict(t) | {"leases_per_second": t.leases_per_second} for t in trials]
                for name, (_, trials) in results.items()
            }
            args.json.write_text(json.dumps({"versions": versions, "trials": payload}, indent=2))
        failed = any(best is None for best, _ in results.values())
        return 1 if failed else 0
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        if lab is not None:
            lab.stop_all()
        if postgres is not None:
            postgres.stop()  # pg_ctl runs in the server namespace: before it goes
        if lab is not None:
            lab.close()
        if args.keep or failed:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
