#!/usr/bin/env python3
"""Power-state sync benchmark: `metalflow up` reading `--bmcs` emulated Redfish BMCs (default
1,000) every `--interval` seconds: CPU seconds per sync cycle, a cycle's wall time, HTTP
requests per BMC read, and the time from a power change at a BMC to its `power.changed` event.

The BMCs: bench/redfish_double.py, one asyncio process serving every BMC on its own loopback
port (one ComputerSystem each; sushy-tools' emulator costs ~400 MB per process, and its fake
driver changes power 1-11 s after being asked, so neither 1,000 emulators nor a known flip
instant are possible with it). Before the run, unless `--no-emulator-check`, the double's
answers are compared with a live sushy-emulator (sushy-tools, fake driver, one system, no auth
file): every field the double serves in the service root, the Systems collection and the
ComputerSystem must be in the emulator's answer with the same JSON type, and the same value
except identities (Id, UUID, @odata.id, action target); the status codes and error-body keys of
a session POST (404: no SessionService), Reset On (204), Reset Nmi (501), an unknown system
(404) and a Boot PATCH (204); and the requests metalflow's redfish driver makes for one
`power_state()` (service root, session POST → 404, Systems, the system), taken from each side's
request log. A difference fails the run (exit 1).

Setup (not measured): the double on CPU 0 (with this script), `python -m metalflow up` on CPU 1
(`--no-pin`: no pinning) with SQLite in a fresh data dir, `--http 127.0.0.1:PORT
--metadata-port 0 --power-sync-interval INTERVAL --power-workers WORKERS`, PYTHONPATH set to
this tree's src/; its idle CPU with no machines is measured for `--idle-seconds`; then the
machines (`spec.bmc: {driver: redfish, address: "http://127.0.0.1:PORT", ...}`, one BMC per
port) are applied with `POST /api/v1/apply` in batches. Sync cycles run all along; they are
found in the double's request log: a read is one BMC's requests from its service-root GET on,
and a cycle ends where a BMC is read a second time (metalflow awaits every read of a cycle
before the next starts). Cycles up to the first one that starts after the apply are warm-up
(they record every machine's first state); the next `--cycles` are measured.

Measured per cycle: metalflow's CPU (utime+stime from /proc/PID/stat, sampled every 20 ms,
interpolated at the start of this cycle and of the next, so a cycle's period includes the
sleep until the next one and the idle loop; "net" subtracts the idle rate), the double's CPU in
the same window, the wall time from the first request of the cycle to the last, requests and
TCP connections per read, power.changed events written, metalflow log lines, and the CPU of
every other process on the machine (busy time from /proc/stat less ours: the noise). During the
measured cycles, `--rounds` times, `--flips` BMCs not flipped before are flipped at once (Off →
On) through the double's control port at a random moment (seeded by `--seed`), up to
`--interval` s after the previous round was seen; per flipped BMC: the time until metalflow
read the new state (double's log) and until the event's own timestamp (from `GET
/api/v1/events?kind=power.changed`, polled only after the double saw every flipped BMC read).
Then, unless `--no-driver-phase`, metalflow is stopped and a child process on metalflow's CPU
reads every BMC `--driver-rounds` times through metalflow's own RedfishDriver with
`--workers` threads: with a new driver per read (what a power job does) and with one driver
kept per BMC (what the sync does), to show what a read costs without the DB. `--profile FILE`
records metalflow with py-spy `--gil` over the measured cycles.

There is no peer to compare with (the issue names none): the figures are set against the
interval (CPU share of one core). Only processes this script started are stopped (by PID),
also on SIGINT/SIGTERM; all traffic is on 127.0.0.1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dhcp import SetupError, log, pick_cpus, raise_on_sigterm  # bench/dhcp.py
from fleet import (  # bench/fleet.py
    cpu_seconds,
    free_port,
    pinner,
    raise_nofile,
    system_busy_seconds,
)

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
DOUBLE = Path(__file__).resolve().with_name("redfish_double.py")
USERNAME, PASSWORD = "admin", "password"
BATCH = 500
MAX_BMCS = 5000
"""All power.changed events of a run fit one events page (10,000)."""
SAMPLE_SECONDS = 0.02
DRIVER_MODES = ("new driver per read", "driver kept per BMC")
"""Driver phase: a new RedfishDriver per read, closed after (a power job), and one kept open
per BMC (the sync: only the ComputerSystem GET per read)."""
KINDS = ("root", "session_new", "systems", "system", "session_end", "not_found", "unauthorized")
"""Request kinds in the double's log that make up a read (connect counts TCP connections)."""


class WrongAnswer(RuntimeError):
    """The double and the emulator disagree, or metalflow missed a change: exit 1."""


def child_env() -> dict[str, str]:
    """The environment of metalflow and the driver child: this tree's sources first."""
    paths = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def machine_name(index: int) -> str:
    return f"pw{index:05d}"


def machine_yaml(index: int, port: int) -> str:
    return f"""\
apiVersion: metalflow/v1
kind: Machine
metadata: {{name: {machine_name(index)}}}
spec:
  bmc: {{driver: redfish, address: "http://127.0.0.1:{port}", username: {USERNAME},
        password: {PASSWORD}}}
"""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# processes, HTTP


class Processes:
    """The processes this script started; stopped by PID, newest first."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        log_path: Path,
        cpu: int | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                preexec_fn=pinner({cpu} if cpu is not None else None),
                start_new_session=True,  # Ctrl-C reaches this script only; it stops them
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


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:port; (status, body), status 0 when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def wait_for(
    check: Any, timeout: float, what: str, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SetupError(f"{what}: exited ({process.returncode}):\n{tail(log_path)}")
        if check():
            return
        time.sleep(0.1)
    raise SetupError(f"{what}: not ready after {timeout:g}s:\n{tail(log_path)}")


def tail(path: Path, chars: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


class Api:
    """metalflow's API on 127.0.0.1 with the admin token; a connection per call (a few calls
    a round, and no keep-alive timeout of the server's to race)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: str | None = None) -> Any:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/yaml"
        data = body.encode() if body is not None else None
        status, answer = request(self.port, method, path, data, headers, timeout=300)
        if status != 200:
            raise SetupError(f"{method} {path}: {status or 'no answer'} {answer[:500]!r}")
        return json.loads(answer)

    def power_events(self, after: int) -> list[dict[str, Any]]:
        """power.changed events after id `after` (0: the newest 10,000), oldest first."""
        query = f"kind=power.changed&limit=10000&after={after}"
        items: list[dict[str, Any]] = self.call("GET", f"/api/v1/events?{query}")["items"]
        return items


def event_time(event: dict[str, Any]) -> float:
    """An event's own timestamp as Unix time (naive ones are UTC)."""
    moment = dt.datetime.fromisoformat(event["time"])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


# --------------------------------------------------------------------------------------------
# the double: start, control, its request log


@dataclass
class DoubleInfo:
    process: subprocess.Popen[bytes]
    control: int
    ports: list[int]


def start_double(
    processes: Processes, workdir: Path, name: str, bmcs: int, auth: str, cpu: int | None
) -> DoubleInfo:
    ready = workdir / f"{name}.ready.json"
    log_path = workdir / f"{name}.log"
    argv = [sys.executable, str(DOUBLE), "--bmcs", str(bmcs), "--ready-file", str(ready)]
    argv += ["--username", USERNAME, "--password", PASSWORD, "--auth", auth]
    process = processes.start(argv, log_path, cpu)
    wait_for(ready.exists, 60 + bmcs / 100, f"Redfish double ({bmcs} BMCs)", process, log_path)
    info = json.loads(ready.read_text())
    if info["pid"] != process.pid:
        raise SetupError(f"the double's ready file names pid {info['pid']}, not {process.pid}")
    return DoubleInfo(process, int(info["control"]), [int(p) for p in info["ports"]])


class DoubleLog:
    """The double's request log, fetched incrementally from its control port."""

    def __init__(self, control: int) -> None:
        self.control = control
        self.entries: list[tuple[float, int, str, str | None]] = []

    def fetch(self) -> list[tuple[float, int, str, str | None]]:
        status, body = request(self.control, "GET", f"/log?after={len(self.entries)}")
        if status != 200:
            raise SetupError(f"the double's control port answered {status}")
        new = [(float(t), int(b), str(k), s) for t, b, k, s in json.loads(body)["entries"]]
        self.entries.extend(new)
        return new

    def flip(self, bmcs: list[int]) -> dict[str, Any]:
        payload = json.dumps({"bmcs": bmcs}).encode()
        status, body = request(self.control, "POST", "/flip", payload)
        if status != 200:
            raise SetupError(f"flip: {status} {body[:300]!r}")
        answer: dict[str, Any] = json.loads(body)
        return answer


@dataclass
class Read:
    bmc: int
    start: float
    end: float
    served: str | None = None
    system_at: float | None = None
    kinds: list[str] = field(default_factory=list)


@dataclass
class Cycle:
    start: float
    end: float
    reads: list[Read]


def reads_of(entries: Iterable[tuple[float, int, str, str | None]]) -> list[Read]:
    """Per BMC, each service-root GET starts a read (a new driver), and so does a system GET
    after the current read's own (a kept driver reads only the system); the other requests
    belong to the read they follow."""
    current: dict[int, Read] = {}
    done: list[Read] = []
    for at, bmc, kind, served in entries:
        if kind == "connect":
            continue
        open_read = current.get(bmc)
        if kind == "root" or (
            kind == "system" and (open_read is None or open_read.served is not None)
        ):
            if open_read is not None:
                done.append(open_read)
            current[bmc] = Read(bmc, at, at, kinds=[kind])
            if kind == "system":
                current[bmc].served, current[bmc].system_at = served, at
            continue
        read = current.get(bmc)
        if read is None:
            continue
        read.end = at
        read.kinds.append(kind)
        if kind == "system" and read.served is None:
            read.served, read.system_at = served, at
    done.extend(current.values())
    return sorted(done, key=lambda r: r.start)


def cycles_of(reads: list[Read]) -> list[Cycle]:
    """A new cycle starts where a BMC of the current one is read again."""
    cycles: list[Cycle] = []
    seen: set[int] = set()
    for read in reads:
        if not cycles or read.bmc in seen:
            cycles.append(Cycle(read.start, read.end, []))
            seen = set()
        seen.add(read.bmc)
        cycles[-1].reads.append(read)
        cycles[-1].end = max(cycles[-1].end, read.end)
    return cycles


# --------------------------------------------------------------------------------------------
# CPU sampling


class Sampler(threading.Thread):
    """CPU seconds of named processes, of this script and of the whole machine ("busy"), and
    the size of metalflow's log, every 20 ms."""

    def __init__(self, pids: dict[str, int], log_path: Path) -> None:
        super().__init__(daemon=True)
        self.pids = {**pids, "self": os.getpid()}
        self.log_path = log_path
        self.times: list[float] = []
        self.cpu: dict[str, list[float]] = {name: [] for name in [*self.pids, "busy"]}
        self.log_bytes: list[int] = []
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.monotonic()
            values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
            values["busy"] = system_busy_seconds()
            try:
                size = self.log_path.stat().st_size
            except OSError:
                size = 0
            with self.lock:
                self.times.append(now)
                for name, value in values.items():
                    series = self.cpu[name]
                    series.append(value if value is not None else (series[-1] if series else 0.0))
                self.log_bytes.append(size)
            self.done.wait(SAMPLE_SECONDS)

    def used(self, name: str, start: float, end: float) -> float:
        return self.at(name, end) - self.at(name, start)

    def others(self, start: float, end: float) -> float:
        """CPU seconds every other process on the machine used between `start` and `end`."""
        ours = sum(self.used(name, start, end) for name in self.pids)
        return max(0.0, self.used("busy", start, end) - ours)

    def at(self, name: str, moment: float) -> float:
        """CPU seconds of `name` at `moment`, linear between the two nearest samples."""
        with self.lock:
            times, series = list(self.times), list(self.cpu[name])
        if not times:
            return 0.0
        i = bisect.bisect_left(times, moment)
        if i <= 0:
            return series[0]
        if i >= len(times):
            return series[-1]
        t0, t1 = times[i - 1], times[i]
        share = (moment - t0) / (t1 - t0) if t1 > t0 else 0.0
        return series[i - 1] + share * (series[i] - series[i - 1])

    def log_offset(self, moment: float) -> int:
        with self.lock:
            i = bisect.bisect_right(self.times, moment) - 1
            return self.log_bytes[max(0, i)] if self.log_bytes else 0

    def stop(self) -> None:
        self.done.set()
        self.join(5)


# --------------------------------------------------------------------------------------------
# the double against sushy-tools' emulator


IDENTITIES = {"Id", "UUID", "@odata.id", "target"}


def compare_shapes(ours: Any, theirs: Any, where: str, problems: list[str]) -> int:
    """Every field of `ours` in `theirs`, same type, same value unless an identity; the number
    of leaf fields compared."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            problems.append(f"{where}: object here, {type(theirs).__name__} in the emulator")
            return 0
        count = 0
        for key, value in ours.items():
            if key not in theirs:
                problems.append(f"{where}.{key}: not in the emulator's answer")
            elif key in IDENTITIES:
                count += 1
                if type(value) is not type(theirs[key]):
                    problems.append(f"{where}.{key}: {type(value).__name__} vs emulator's")
            else:
                count += compare_shapes(value, theirs[key], f"{where}.{key}", problems)
        return count
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            problems.append(f"{where}: {ours!r} vs emulator's {theirs!r}")
            return 0
        return sum(
            compare_shapes(a, b, f"{where}[{i}]", problems)
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        )
    if ours != theirs:
        problems.append(f"{where}: {ours!r} vs emulator's {theirs!r}")
    return 1


EMULATOR_LINE = re.compile(r'"(GET|POST|PATCH|DELETE) (\S+) HTTP/1\.[01]" (\d+)')
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def emulator_kinds(text: str) -> list[str]:
    """The emulator's request log as the double's kinds."""
    kinds = []
    for line in ANSI.sub("", text).splitlines():
        match = EMULATOR_LINE.search(line)
        if match is None:
            continue
        method, path, status = match[1], match[2].rstrip("/"), int(match[3])
        if status == 404:
            kinds.append("not_found")
        elif path == "/redfish/v1":
            kinds.append("root")
        elif path == "/redfish/v1/Systems":
            kinds.append("systems")
        elif path.endswith("/ComputerSystem.Reset"):
            kinds.append("reset")
        elif method == "PATCH":
            kinds.append("patch")
        else:
            kinds.append("system")
    return kinds


def driver_read_once(port: int, workdir: Path) -> str:
    """One `power_state()` through metalflow's redfish driver, in a child process."""
    spec = {"mode": "once", "ports": [port], "log": str(workdir / "driver-once.log")}
    result = subprocess.run(
        [sys.executable, __file__, "--driver-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    if result.returncode:
        raise SetupError(f"metalflow's redfish driver failed: {result.stderr[-2000:]}")
    return str(json.loads(result.stdout)["state"])


def compare_with_emulator(processes: Processes, workdir: Path, auth: str) -> list[str]:
    """Serve one system from sushy-emulator and from the double; what was compared (lines)."""
    emulator = shutil.which("sushy-emulator") or str(
        Path(sys.executable).with_name("sushy-emulator")
    )
    if not Path(emulator).exists():
        raise SetupError(
            "sushy-emulator not found: pip install sushy-tools, or --no-emulator-check"
        )
    home = workdir / "emulator"
    (home / "state").mkdir(parents=True)
    port = free_port()
    uuid = "00000000-0000-0000-0000-000000000000"
    (home / "emulator.conf").write_text(
        f"""\
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = {str(home / "state")!r}
SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': {uuid!r}, 'name': 'node-0', 'power_state': 'Off',
    'external_notifier': False, 'nics': [{{'mac': '52:54:00:00:00:00', 'ip': '10.0.0.10'}}]}}]
"""
    )
    emulator_log = home / "emulator.log"
    process = processes.start(
        [emulator, "--config", str(home / "emulator.conf")], emulator_log, None, cwd=home
    )
    double: DoubleInfo | None = None
    try:
        wait_for(
            lambda: request(port, "GET", "/redfish/v1/", timeout=2)[0] == 200,
            30,
            "sushy-emulator",
            process,
            emulator_log,
        )
        double = start_double(processes, home, "double-1", 1, "basic", None)
        ours_port = double.ports[0]
        problems: list[str] = []
        compared = []
        basic = {"Authorization": _basic()}
        system_paths = []
        for name, path in (("service root", "/redfish/v1/"), ("Systems", "/redfish/v1/Systems")):
            documents = []
            for side in (ours_port, port):
                status, body = request(side, "GET", path, headers=basic)
                if status != 200:
                    problems.append(f"GET {path}: {status} from port {side}")
                documents.append(json.loads(body or b"{}"))
            count = compare_shapes(documents[0], documents[1], name, problems)
            compared.append(f"{name}: {count} fields")
            if name == "Systems":
                system_paths = [d["Members"][0]["@odata.id"] for d in documents]
        ours_doc, their_doc = (
            json.loads(request(side, "GET", path, headers=basic)[1] or b"{}")
            for side, path in zip((ours_port, port), system_paths, strict=True)
        )
        count = compare_shapes(ours_doc, their_doc, "ComputerSystem", problems)
        compared.append(f"ComputerSystem: {count} fields")
        json_headers = {**basic, "Content-Type": "application/json"}
        probes: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
            (
                "session POST",
                "POST",
                "/redfish/v1/SessionService/Sessions",
                {"UserName": USERNAME, "Password": PASSWORD},
                404,
            ),
            ("Reset On", "POST", "{system}/Actions/ComputerSystem.Reset", {"ResetType": "On"}, 204),
            (
                "Reset Nmi",
                "POST",
                "{system}/Actions/ComputerSystem.Reset",
                {"ResetType": "Nmi"},
                501,
            ),
            ("unknown system", "GET", "/redfish/v1/Systems/nope", None, 404),
            ("Boot PATCH", "PATCH", "{system}", {"Boot": {"BootSourceOverrideTarget": "Pxe"}}, 204),
        ]
        for label, method, template, payload, expected in probes:
            answers = []
            for side, system in zip((ours_port, port), system_paths, strict=True):
                data = json.dumps(payload).encode() if payload is not None else None
                answers.append(
                    request(side, method, template.format(system=system), data, json_headers)
                )
            (ours_status, ours_body), (their_status, their_body) = answers
            if (ours_status, their_status) != (expected, expected):
                problems.append(f"{label}: {ours_status} here, {their_status} from the emulator")
            elif expected >= 400:
                ours_keys = sorted(json.loads(ours_body).get("error", {}))
                their_keys = sorted(json.loads(their_body).get("error", {}))
                if ours_keys != their_keys:
                    problems.append(f"{label}: error keys {ours_keys} vs {their_keys}")
            compared.append(f"{label}: {expected}")
        # the requests of one power_state() read by metalflow's driver, on both sides
        before_ours = len(DoubleLog(double.control).fetch())
        emulator_before = len(emulator_kinds(emulator_log.read_text(errors="replace")))
        for side in (ours_port, port):
            driver_read_once(side, home)
        time.sleep(0.3)  # the emulator's log line is written after the answer
        ours_kinds = [
            k for _, _, k, _ in DoubleLog(double.control).fetch()[before_ours:] if k != "connect"
        ]
        their_kinds = emulator_kinds(emulator_log.read_text(errors="replace"))[emulator_before:]
        if ours_kinds != their_kinds:
            problems.append(f"driver read: {ours_kinds} here, {their_kinds} at the emulator")
        compared.append(f"driver power_state() requests: {' → '.join(ours_kinds)}")
        if problems:
            raise WrongAnswer("the double differs from sushy-emulator:\n  " + "\n  ".join(problems))
        if auth == "session":
            compared.append("(--auth session: the session answers have no emulator to match)")
        return compared
    finally:
        if double is not None:
            processes.stop(double.process)
        processes.stop(process)


def _basic() -> str:
    import base64

    return "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()


# --------------------------------------------------------------------------------------------
# metalflow


@dataclass
class Metalflow:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    api: Api


def start_metalflow(
    processes: Processes, workdir: Path, args: argparse.Namespace, cpu: int | None
) -> Metalflow:
    data = workdir / "metalflow-data"
    log_path = workdir / "metalflow.log"
    port = free_port()
    argv = [sys.executable, "-m", "metalflow", "up", "--data-dir", str(data)]
    argv += ["--http", f"127.0.0.1:{port}", "--metadata-port", "0"]
    argv += ["--power-sync-interval", f"{args.interval:g}", "--power-workers", str(args.workers)]
    process = processes.start(argv, log_path, cpu, env=child_env(), cwd=workdir)
    wait_for(
        lambda: request(port, "GET", "/healthz", timeout=2)[0] == 200,
        90,
        "metalflow /healthz",
        process,
        log_path,
    )
    token = (data / "admin-token").read_text().strip()
    return Metalflow(process, port, log_path, Api(port, token))


def apply_machines(metalflow: Metalflow, ports: list[int]) -> None:
    for first in range(0, len(ports), BATCH):
        last = min(len(ports), first + BATCH)
        manifest = "---\n".join(machine_yaml(i, ports[i]) for i in range(first, last))
        results = metalflow.api.call("POST", "/api/v1/apply", manifest).get("results", [])
        if len(results) != last - first:
            raise SetupError(f"apply of machines {first}-{last - 1}: {results[:3]}")


# --------------------------------------------------------------------------------------------
# the measurement


@dataclass
class Flip:
    round: int
    bmc: int
    at: float
    """monotonic"""
    wall: float
    state: str
    read_at: float | None = None
    event_wall: float | None = None
    seen_wall: float | None = None
    """When this script's poll of the events API returned the event."""

    @property
    def read_after(self) -> float | None:
        return self.read_at - self.at if self.read_at is not None else None

    @property
    def detected_after(self) -> float | None:
        return self.event_wall - self.wall if self.event_wall is not None else None


@dataclass
class CycleFigures:
    number: int
    role: str
    start: float
    wall: float
    period: float | None
    reads: int
    requests: dict[str, int]
    connections: int
    metalflow_cpu: float | None
    metalflow_net: float | None
    double_cpu: float | None
    others_cpu: float | None
    """Every other process on the machine (other jobs share the two cores)."""
    changes: int
    log_lines: int | None


def start_profiler(
    processes: Processes, pid: int, path: Path, workdir: Path, cpu: int | None
) -> subprocess.Popen[bytes]:
    """py-spy on `pid`, sampling only the thread holding the GIL (where its CPU goes)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SetupError("py-spy not found: pip install py-spy, or drop --profile")
    argv = [py_spy, "record", "-p", str(pid), "--gil", "--nonblocking", "-r", "100"]
    argv += ["--format", "raw", "-o", str(path)]
    return processes.start(argv, workdir / "py-spy.log", cpu)


def profile_summary(path: Path, top: int = 16) -> list[str]:
    """The functions with the largest inclusive share of the GIL samples."""
    inclusive: Counter[str] = Counter()
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            names = {frame.split(" (")[0] for frame in stack.split(";")}
            for name in names:
                inclusive[name] += int(count)
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples (py-spy --gil); inclusive share of the GIL-holding time:"]
    shown = [(n, c) for n, c in inclusive.most_common() if c / total < 0.9][:top]
    lines += [f"  {c / total * 100:5.1f}%  {n}" for n, c in shown]
    return lines


def measure(
    metalflow: Metalflow,
    double: DoubleInfo,
    sampler: Sampler,
    args: argparse.Namespace,
    apply_done: float,
    on_measuring: Any,
) -> tuple[list[Cycle], list[Flip], int]:
    """Run until `--cycles` cycles after warm-up are over and every flip round was seen;
    (all cycles, the flips, the index of the first measured cycle). `on_measuring()` is
    called when the first measured cycle has begun."""
    rng = random.Random(args.seed)
    dlog = DoubleLog(double.control)
    deadline = time.monotonic() + args.max_seconds
    pool = list(range(len(double.ports)))
    rng.shuffle(pool)
    flips: list[Flip] = []
    round_flips: list[Flip] = []
    rounds_done = 0
    next_flip: float | None = None
    last_event_id = 0
    first_measured: int | None = None
    cycles: list[Cycle] = []
    last_scan = 0.0
    while True:
        now = time.monotonic()
        if now > deadline:
            raise WrongAnswer(f"not done after --max-seconds {args.max_seconds:g}")
        if metalflow.process.poll() is not None:
            raise SetupError(f"metalflow exited:\n{tail(metalflow.log_path)}")
        new = dlog.fetch()
        for at, bmc, kind, served in new:
            for flip in round_flips:
                if (
                    flip.bmc == bmc
                    and kind == "system"
                    and served == flip.state
                    and flip.read_at is None
                    and at > flip.at
                ):
                    flip.read_at = at
        if now - last_scan >= 1.0:
            last_scan = now
            cycles = cycles_of(reads_of(dlog.entries))
            if first_measured is None:
                for i, cycle in enumerate(cycles):
                    if cycle.start > apply_done and i + 1 < len(cycles):
                        first_measured = i + 1
                        log(
                            f"warm-up over: cycle {i + 1} read {len(cycle.reads)} BMCs in "
                            f"{cycle.end - cycle.start:.2f}s; measuring {args.cycles} cycles"
                        )
                        newest = metalflow.api.power_events(0)
                        last_event_id = max((e["id"] for e in newest), default=0)
                        next_flip = time.monotonic() + rng.uniform(0, args.interval)
                        on_measuring()
                        break
        due = next_flip is not None and time.monotonic() >= next_flip
        if due and not round_flips and rounds_done < args.rounds:
            chosen, pool = pool[: args.flips], pool[args.flips :]
            answer = dlog.flip(chosen)
            round_flips = [
                Flip(rounds_done + 1, bmc, answer["monotonic"], answer["wall"], state)
                for bmc, state in zip(chosen, answer["states"], strict=True)
            ]
            flips += round_flips
            log(f"round {rounds_done + 1}: flipped {len(chosen)} BMCs to {answer['states'][0]}")
        if round_flips and all(f.read_at is not None for f in round_flips):
            by_name = {machine_name(f.bmc): f for f in round_flips}
            for event in metalflow.api.power_events(last_event_id):
                last_event_id = max(last_event_id, int(event["id"]))
                flipped = by_name.get(event.get("machine") or "")
                if flipped is not None and flipped.event_wall is None:
                    flipped.event_wall = event_time(event)
                    flipped.seen_wall = time.time()
            if all(f.event_wall is not None for f in round_flips):
                rounds_done += 1
                round_flips = []
                next_flip = time.monotonic() + rng.uniform(0, args.interval)
            elif time.monotonic() - max(f.read_at or 0 for f in round_flips) > 60:
                missing = [machine_name(f.bmc) for f in round_flips if f.event_wall is None]
                raise WrongAnswer(f"read the new state but no power.changed event: {missing}")
        if (
            first_measured is not None
            and len(cycles) > first_measured + args.cycles
            and rounds_done >= args.rounds
        ):
            return cycles, flips, first_measured
        time.sleep(0.25)


def figures_of(
    cycles: list[Cycle],
    first_measured: int,
    entries: list[tuple[float, int, str, str | None]],
    sampler: Sampler,
    events: list[dict[str, Any]],
    idle_rate: float,
    log_path: Path,
    clock_offset: float,
) -> list[CycleFigures]:
    """Each cycle's figures; the one after the last measured only closes its period."""
    times = [e[0] for e in entries]
    event_times = sorted(event_time(e) - clock_offset for e in events)
    log_text = log_path.read_bytes()
    out = []
    for i, cycle in enumerate(cycles[:-1]):
        role = "warm-up" if i < first_measured else "measured"
        following = cycles[i + 1].start
        lo = bisect.bisect_left(times, cycle.start - 0.01)
        hi = bisect.bisect_left(times, following - 0.01)
        kinds = Counter(entries[j][2] for j in range(lo, hi))
        cpu = sampler.used("metalflow", cycle.start, following)
        period = following - cycle.start
        start_byte, end_byte = sampler.log_offset(cycle.start), sampler.log_offset(following)
        changes = bisect.bisect_left(event_times, following) - bisect.bisect_left(
            event_times, cycle.start
        )
        out.append(
            CycleFigures(
                number=i + 1,
                role=role,
                start=cycle.start,
                wall=cycle.end - cycle.start,
                period=period,
                reads=len(cycle.reads),
                requests={k: kinds[k] for k in KINDS if kinds[k]},
                connections=kinds["connect"],
                metalflow_cpu=cpu,
                metalflow_net=cpu - idle_rate * period,
                double_cpu=sampler.used("double", cycle.start, following),
                others_cpu=sampler.others(cycle.start, following),
                changes=changes,
                log_lines=log_text[start_byte:end_byte].count(b"\n"),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# the driver alone (a child process)


def driver_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Reads through metalflow's RedfishDriver, minus the DB: a new driver per read (a power
    job) and one driver kept per BMC (PowerRunner._read_state)."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    from metalflow.power.driver import Bmc, PowerState
    from metalflow.power.redfish import RedfishDriver

    # the same logging as `metalflow up` (server.py), so sushy's per-read warnings cost alike
    logging.basicConfig(
        level=logging.INFO,
        filename=spec["log"],
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    bmcs = [
        Bmc(driver="redfish", host=f"http://127.0.0.1:{p}", username=USERNAME, password=PASSWORD)
        for p in spec["ports"]
    ]

    def fresh(bmc: Bmc) -> PowerState:
        driver = RedfishDriver(bmc)
        try:
            return driver.power_state()
        finally:
            driver.close()

    if spec["mode"] == "once":
        return {"state": str(fresh(bmcs[0]))}
    results: dict[str, Any] = {}
    with ThreadPoolExecutor(spec["workers"]) as pool:
        kept = [RedfishDriver(bmc) for bmc in bmcs]
        list(pool.map(lambda d: d.power_state(), kept))  # opened, system found: not measured
        modes: list[tuple[str, Any, list[Any]]] = [
            (DRIVER_MODES[0], fresh, bmcs),
            (DRIVER_MODES[1], lambda d: d.power_state(), kept),
        ]
        for mode, work, items in modes:
            started, cpu = time.monotonic(), time.process_time()
            for _ in range(spec["rounds"]):
                list(pool.map(work, items))
            results[mode] = {
                "reads": len(items) * spec["rounds"],
                "cpu": time.process_time() - cpu,
                "wall": time.monotonic() - started,
                "start": started,
                "end": time.monotonic(),
            }
        for driver in kept:
            driver.close()
    return results


def run_driver_phase(
    double: DoubleInfo, workdir: Path, args: argparse.Namespace, cpu: int | None
) -> dict[str, Any]:
    spec = {
        "mode": "rounds",
        "ports": double.ports,
        "workers": args.workers,
        "rounds": args.driver_rounds,
        "log": str(workdir / "driver-phase.log"),
    }
    dlog = DoubleLog(double.control)
    dlog.fetch()
    before = len(dlog.entries)
    result = subprocess.run(
        [sys.executable, __file__, "--driver-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=args.max_seconds,
        env=child_env(),
        preexec_fn=pinner({cpu} if cpu is not None else None),
    )
    if result.returncode:
        raise SetupError(f"driver phase failed: {result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout)
    dlog.fetch()
    for mode in figures.values():
        kinds = Counter(
            k for t, _, k, _ in dlog.entries[before:] if mode["start"] <= t <= mode["end"]
        )
        mode["requests"] = sum(kinds[k] for k in KINDS)
        mode["connections"] = kinds["connect"]
    return figures


# --------------------------------------------------------------------------------------------
# report


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(
    info: dict[str, Any],
    rows: list[CycleFigures],
    flips: list[Flip],
    driver: dict[str, Any] | None,
    args: argparse.Namespace,
) -> tuple[str, dict[str, Any]]:
    measured = [r for r in rows if r.role == "measured"]
    out = [
        "",
        f"power-state sync: {args.bmcs:,} Redfish BMCs (redfish_double.py, auth {args.auth}), "
        f"--power-sync-interval {args.interval:g} --power-workers {args.workers}, SQLite",
        "=" * 121,
        f"{'cycle':>5} {'role':9}{'reads':>6}{'req/read':>9}{'conn/read':>10}{'wall s':>8}"
        f"{'period s':>9}{'mf CPU s':>9}{'net s':>7}{'core %':>7}{'double s':>9}"
        f"{'others s':>9}{'changes':>8}{'log lines':>10}",
    ]
    for r in rows:
        requests = sum(r.requests.values())
        share = (r.metalflow_net or 0) / r.period * 100 if r.period else None
        lines = "-" if r.log_lines is None else str(r.log_lines)
        out.append(
            f"{r.number:>5} {r.role:9}{r.reads:>6}{requests / max(1, r.reads):>9.2f}"
            f"{r.connections / max(1, r.reads):>10.2f}{r.wall:>8.2f}{fmt(r.period):>9}"
            f"{fmt(r.metalflow_cpu):>9}{fmt(r.metalflow_net):>7}{fmt(share, '.1f'):>7}"
            f"{fmt(r.double_cpu):>9}{fmt(r.others_cpu):>9}{r.changes:>8}{lines:>10}"
        )
    cpu = median([r.metalflow_cpu or 0 for r in measured])
    net = median([r.metalflow_net or 0 for r in measured])
    wall = median([r.wall for r in measured])
    period = median([r.period or 0 for r in measured])
    reads = sum(r.reads for r in measured)
    kinds: Counter[str] = Counter()
    for r in measured:
        kinds.update(r.requests)
    per_read = {k: v / max(1, reads) for k, v in kinds.items()}
    double_cpu = median([r.double_cpu or 0 for r in measured])
    others = median([(r.others_cpu or 0) / (r.period or 1) for r in measured])
    detected = sorted(f.detected_after for f in flips if f.detected_after is not None)
    read_after = sorted(f.read_after for f in flips if f.read_after is not None)
    recorded = sorted(
        f.detected_after - f.read_after
        for f in flips
        if f.detected_after is not None and f.read_after is not None
    )
    # a change just after its BMC was read waits for the next cycle to reach that BMC again:
    # at most one period (start to start: the interval, or the cycle when it is longer) plus
    # one cycle's spread of read times
    longest = max((r.period or 0 for r in measured), default=args.interval)
    bound = max(args.interval, longest) + max((r.wall for r in measured), default=0.0)
    summary: dict[str, Any] = {
        "cpu_per_cycle": cpu,
        "net_cpu_per_cycle": net,
        "idle_cpu_per_second": info["idle_rate"],
        "core_share_at_interval": net / args.interval,
        "cycle_wall": wall,
        "period": period,
        "requests_per_read": sum(per_read.values()),
        "requests_per_read_by_kind": per_read,
        "connections_per_read": sum(r.connections for r in measured) / max(1, reads),
        "cpu_per_read_ms": net / args.bmcs * 1000,
        "double_cpu_per_cycle": double_cpu,
        "others_cpu_share": others,
        "detect_median": median(detected),
        "detect_max": max(detected, default=float("nan")),
        "read_median": median(read_after),
        "read_max": max(read_after, default=float("nan")),
        "record_median": median(recorded),
        "record_max": max(recorded, default=float("nan")),
        "bound": bound,
        "flips": len(flips),
    }
    out += [
        "",
        f"measured cycles: {len(measured)} (medians)   idle metalflow (no machines): "
        f"{info['idle_rate'] * 100:.1f}% of a core",
        f"  CPU per cycle: {cpu:.2f} s metalflow ({net:.2f} s above idle = "
        f"{summary['cpu_per_read_ms']:.2f} ms per BMC read); the double {double_cpu:.2f} s;"
        f" other processes on the machine {others * 100:.0f}% of a core",
        f"  a cycle of {args.bmcs:,} BMCs costs {net:.2f} CPU-seconds: "
        f"{summary['core_share_at_interval'] * 100:.1f}% of one core at a {args.interval:g} s "
        f"interval; wall {wall:.2f} s (period {period:.2f} s)",
        f"  requests per read: {summary['requests_per_read']:.2f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_read.items(), key=lambda kv: -kv[1]))
        + f"), TCP connections per read {summary['connections_per_read']:.2f}",
        f"  change detection ({len(detected)} flips in {args.rounds} rounds of {args.flips}): "
        f"flip → power.changed median {summary['detect_median']:.2f} s, max "
        f"{summary['detect_max']:.2f} s (bound: period + cycle = {bound:.2f} s)",
        f"    flip → metalflow read the new state: median {summary['read_median']:.2f} s, max "
        f"{summary['read_max']:.2f} s; read → event: median {summary['record_median'] * 1000:.0f}"
        f" ms, max {summary['record_max'] * 1000:.0f} ms",
        "  no peer: the issue names none, so the figures are set against the interval",
    ]
    if driver:
        out += [
            "",
            f"metalflow's RedfishDriver alone (child process, {args.workers} threads, "
            f"{args.driver_rounds} rounds over every BMC, no DB):",
        ]
        for mode, f in driver.items():
            out.append(
                f"  {mode:24} {f['cpu'] / f['reads'] * 1000:6.2f} ms CPU/read  "
                f"{f['reads'] / f['wall']:7.0f} reads/s  {f['requests'] / f['reads']:.2f} req/read"
                f"  {f['connections'] / f['reads']:.2f} conn/read"
            )
        runner = driver.get(DRIVER_MODES[1])
        if runner and net > 0:
            share = runner["cpu"] / runner["reads"] * args.bmcs / net
            out.append(
                f"  reading as the sync does is {share * 100:.0f}% of a cycle's net CPU in"
                " metalflow (the rest: DB, asyncio, threads, events)"
            )
            summary["driver_share_of_cycle"] = share
        summary["driver"] = driver
    out.append("=" * 121)
    return "\n".join(out), summary


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--bmcs", type=int, default=1000, help="emulated BMCs (= machines)")
    parser.add_argument("--interval", type=float, default=10.0, help="--power-sync-interval")
    parser.add_argument("--workers", type=int, default=32, help="--power-workers")
    parser.add_argument("--cycles", type=int, default=5, help="measured sync cycles")
    parser.add_argument("--flips", type=int, default=10, help="BMCs flipped per round")
    parser.add_argument("--rounds", type=int, default=None, help="flip rounds (default: cycles)")
    parser.add_argument("--seed", type=int, default=1, help="which BMCs and when to flip")
    parser.add_argument(
        "--auth",
        choices=("basic", "session"),
        default="basic",
        help="basic: no SessionService, as sushy-emulator; session: Redfish sessions",
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU baseline")
    parser.add_argument("--driver-rounds", type=int, default=2, help="0: no driver phase")
    parser.add_argument("--no-driver-phase", action="store_true")
    parser.add_argument("--no-emulator-check", action="store_true")
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--max-seconds", type=float, default=900, help="limit of each phase")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy (--gil) of metalflow over the measured cycles: raw"
        " collapsed stacks to this file, the top functions printed",
    )
    parser.add_argument("--driver-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver_child is not None:
        return args
    if not 1 <= args.bmcs <= MAX_BMCS:
        parser.error(f"--bmcs must be 1..{MAX_BMCS}")
    if args.interval <= 0 or args.workers < 1 or args.cycles < 1:
        parser.error("--interval must be > 0, --workers and --cycles >= 1")
    args.rounds = args.cycles if args.rounds is None else args.rounds
    if args.flips * args.rounds > args.bmcs:
        parser.error("--flips x --rounds must not exceed --bmcs (each BMC is flipped once)")
    if args.driver_rounds < 1:
        args.no_driver_phase = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.driver_child is not None:
        print(json.dumps(driver_child(json.loads(args.driver_child))))
        return 0
    raise_on_sigterm()
    raise_nofile(4 * args.bmcs + 1024)
    gen_cpu, server_cpu = pick_cpus(args.no_pin)
    if gen_cpu is not None:
        os.sched_setaffinity(0, {gen_cpu})
    workdir = Path(tempfile.mkdtemp(prefix="metalflow-bench-power."))
    processes = Processes()
    failed = True
    try:
        log(f"work dir {workdir}")
        compared: list[str] = []
        if not args.no_emulator_check:
            compared = compare_with_emulator(processes, workdir, args.auth)
            log("double matches sushy-emulator: " + "; ".join(compared))
        double = start_double(processes, workdir, "double", args.bmcs, args.auth, gen_cpu)
        log(
            f"double pid {double.process.pid}: {args.bmcs} BMCs on ports "
            f"{min(double.ports)}-{max(double.ports)}, control {double.control}"
        )
        metalflow = start_metalflow(processes, workdir, args, server_cpu)
        log(f"metalflow pid {metalflow.process.pid} on 127.0.0.1:{metalflow.port}")
        clock_offset = time.time() - time.monotonic()
        sampler = Sampler(
            {"metalflow": metalflow.process.pid, "double": double.process.pid},
            metalflow.log_path,
        )
        sampler.start()
        idle_start = time.monotonic()
        time.sleep(args.idle_seconds)
        idle_rate = (
            sampler.at("metalflow", time.monotonic()) - sampler.at("metalflow", idle_start)
        ) / (time.monotonic() - idle_start)
        started = time.monotonic()
        apply_machines(metalflow, double.ports)
        apply_done = time.monotonic()
        log(
            f"applied {args.bmcs} machines in {apply_done - started:.1f}s; idle CPU "
            f"{idle_rate * 100:.1f}%"
        )
        profiler: list[subprocess.Popen[bytes]] = []

        def on_measuring() -> None:
            if args.profile:
                pid = metalflow.process.pid
                profiler.append(start_profiler(processes, pid, args.profile, workdir, gen_cpu))

        cycles, flips, first_measured = measure(
            metalflow, double, sampler, args, apply_done, on_measuring
        )
        for process in profiler:
            processes.stop(process, signal.SIGINT)
        events = metalflow.api.power_events(0)
        entries = DoubleLog(double.control)
        entries.fetch()
        cycles = cycles_of(reads_of(entries.entries))[: first_measured + args.cycles + 1]
        rows = figures_of(
            cycles,
            first_measured,
            entries.entries,
            sampler,
            events,
            idle_rate,
            metalflow.log_path,
            clock_offset,
        )
        sampler.stop()
        rss = {"metalflow": rss_mb(metalflow.process.pid), "double": rss_mb(double.process.pid)}
        short = [r for r in rows if r.role == "measured" and r.reads != args.bmcs]
        processes.stop(metalflow.process, signal.SIGINT)
        driver = None
        if not args.no_driver_phase:
            log("driver phase: metalflow's RedfishDriver alone")
            driver = run_driver_phase(double, workdir, args, server_cpu)
        info = {"idle_rate": idle_rate, "rss_mb": rss, "compared": compared}
        text, summary = report(info, rows, flips, driver, args)
        print(
            f"machine: {os.cpu_count()} CPUs, pinning: "
            + (
                f"double + this script CPU {gen_cpu}, metalflow CPU {server_cpu}"
                if server_cpu is not None
                else "none"
            )
            + f"; RSS at the end: metalflow {fmt(rss['metalflow'], '.0f')} MB, double "
            f"{fmt(rss['double'], '.0f')} MB"
        )
        if compared:
            print("double vs sushy-emulator: " + "; ".join(compared))
        print(text)
        if args.profile:
            print(f"profile of metalflow over the measured cycles ({args.profile}):")
            print("\n".join(profile_summary(args.profile)))
        sys.stdout.flush()
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "options": {k: v for k, v in vars(args).items() if k != "json"},
                        "info": info,
                        "summary": summary,
                        "cycles": [asdict(r) for r in rows],
                        "flips": [
                            {**asdict(f), "read_after": f.read_after, "detected": f.detected_after}
                            for f in flips
                        ],
                    },
                    indent=2,
                    default=str,
                )
            )
        if short:
            print(f"measured cycles that missed BMCs: {[r.number for r in short]}", file=sys.stderr)
        failed = bool(short)
        return 1 if failed else 0
    except WrongAnswer as exc:
        print(f"wrong answer: {exc}", file=sys.stderr)
        return 1
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"interrupted ({str(exc) or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        if args.keep or failed:
            log(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
