#!/usr/bin/env python3
"""A Redfish test double: `--bmcs` emulated BMCs in one asyncio process, one BMC per loopback
port, each with one ComputerSystem, plus a control port to flip power states and read the log.

Why not sushy-tools: its emulator is a Flask dev server of ~400 MB per process (bmc-lab.md), so
1,000 BMCs on their own ports cannot run on the CI machine, and its fake driver applies a power
change after a random 1-11 s, so a flip's instant would be unknown. This double serves the same
protocol from plain asyncio protocols (a few kB per BMC) and flips a state at the instant it
answers the control request.

What it serves, per BMC (JSON shapes as sushy-tools 2.2.0's fake driver answers, for the
fields sushy 5.x and metalflow's redfish driver read; bench/power_sync.py compares them with a
live sushy-emulator before every run unless told not to, see `compare_with_emulator` there):
- `GET /redfish/v1/`: service root (Id, Name, RedfishVersion, UUID, Systems link); no
  SessionService, so sushy's SessionOrBasicAuth POSTs to the standard
  `/redfish/v1/SessionService/Sessions`, gets 404 (as from the emulator) and falls back to
  Basic auth. With `--auth session` the root links a SessionService (DSP0266 `Links.Sessions`),
  a POST there answers 201 with `X-Auth-Token` and `Location`, and DELETE ends the session: what
  most real BMCs do (the emulator has no sessions, so this mode is compared with nothing).
- `GET /redfish/v1/Systems`: the collection with its one member.
- `GET|PATCH /redfish/v1/Systems/{uuid}`: the ComputerSystem (PowerState, Boot with its
  allowable targets and mode, the `#ComputerSystem.Reset` action with its allowable
  ResetTypes); PATCH sets Boot fields (204).
- `POST .../Actions/ComputerSystem.Reset`: 204 and the state changes at once (the emulator's
  fake driver: 204 and a change 1-11 s later); Nmi or an unknown type: 501, as the emulator.
- anything else: 404 with the emulator's error body. Everything but the root needs the
  configured Basic credentials (or a session token): 401 otherwise.

HTTP/1.1 with keep-alive, though sushy asks for `Connection: close`, so each of its requests
comes on a TCP connection of its own (counted as `connect` in the log).

Control port (HTTP, 127.0.0.1): `POST /flip {"bmcs": [i, ...]}` toggles On/Off of those BMCs'
systems and answers the instant (`monotonic`, `wall`); `GET /log?after=N` returns request log
entries `[monotonic, bmc, kind, power_state_served]` from index N (kinds: connect, root,
session_new, session_end, systems, system, reset, patch, not_found, unauthorized, bad_method).
When every port listens, the ports are written to `--ready-file` as JSON (written whole, then
renamed). SIGTERM or SIGINT closes every socket and exits 0. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
ROOT = "/redfish/v1"
SESSIONS = f"{ROOT}/SessionService/Sessions"
RESET_TYPES = (
    "On",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "Nmi",
    "ForceOn",
)
"""The ResetTypes the emulator's fake driver offers (it refuses Nmi, so does this double)."""
RESET_TO = {
    "On": "On",
    "ForceOn": "On",
    "GracefulRestart": "On",
    "ForceRestart": "On",
    "ForceOff": "Off",
    "GracefulShutdown": "Off",
}
BOOT_TARGETS = ("Pxe", "Cd", "Hdd", "UefiHttp")
MAX_HEAD = 65536
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    501: "Not Implemented",
}
COPYRIGHT = (
    "Copyright 2014-2016 Distributed Management Task Force, Inc. (DMTF). For the full DMTF"
    " copyright policy, see http://www.dmtf.org/about/policies/copyright."
)

Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[str, str, dict[str, str], bytes], Answer]


def error(status: int, message: str) -> Answer:
    """An error answer shaped like the emulator's (Base.1.0.GeneralError)."""
    body = {
        "error": {
            "code": "Base.1.0.GeneralError",
            "message": message,
            "@Message.ExtendedInfo": [
                {
                    "@odata.type": "/redfish/v1/$metadata#Message.1.0.0.Message",
                    "MessageId": "Base.1.0.GeneralError",
                }
            ],
        }
    }
    return status, {}, json.dumps(body).encode()


def ok(document: Mapping[str, object], status: int = 200, **headers: str) -> Answer:
    return status, headers, json.dumps(document).encode()


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 server side: Content-Length bodies, keep-alive, pipelining."""

    def __init__(self, handler: Handler, on_connect: Callable[[], None]) -> None:
        self.handler = handler
        self.on_connect = on_connect
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.on_connect()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self.transport.close()
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            status, extra, payload = self.handler(method, target, headers, body)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
            if status != 204:
                head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
            head += [f"{name}: {value}" for name, value in extra.items()]
            if not keep:
                head.append("Connection: close")
            self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            if not keep:
                self.transport.close()


@dataclass
class System:
    index: int
    power: str = "Off"
    boot_target: str = "Hdd"
    boot_enabled: str = "Continuous"
    boot_mode: str = "UEFI"

    @property
    def uuid(self) -> str:
        return f"00000000-0000-0000-0000-{self.index:012d}"

    @property
    def path(self) -> str:
        return f"{ROOT}/Systems/{self.uuid}"


class Double:
    """All BMCs, their systems, sessions and the request log."""

    def __init__(self, count: int, username: str, password: str, sessions: bool) -> None:
        self.systems = [System(i) for i in range(count)]
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.username, self.password = username, password
        self.sessions = sessions
        self.tokens: dict[str, tuple[int, str]] = {}
        """X-Auth-Token → (bmc, session id)."""
        self.log: list[tuple[float, int, str, str | None]] = []

    def note(self, bmc: int, kind: str, served: str | None = None) -> None:
        self.log.append((time.monotonic(), bmc, kind, served))

    def root(self, bmc: int) -> dict[str, object]:
        document: dict[str, object] = {
            "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
            "Id": "RedvirtService",
            "Name": "Redvirt Service",
            "RedfishVersion": "1.5.0",
            "UUID": f"85775665-c110-4b85-8989-{bmc:012d}",
            "Systems": {"@odata.id": f"{ROOT}/Systems"},
            "@odata.id": f"{ROOT}/",
            "@Redfish.Copyright": COPYRIGHT,
        }
        if self.sessions:
            document["SessionService"] = {"@odata.id": f"{ROOT}/SessionService"}
            document["Links"] = {"Sessions": {"@odata.id": SESSIONS}}
        return document

    def collection(self, system: System) -> dict[str, object]:
        return {
            "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
            "Name": "Computer System Collection",
            "Members@odata.count": 1,
            "Members": [{"@odata.id": system.path}],
            "@odata.context": "/redfish/v1/$metadata#ComputerSystemCollection."
            "ComputerSystemCollection",
            "@odata.id": f"{ROOT}/Systems",
            "@Redfish.Copyright": COPYRIGHT,
        }

    def computer_system(self, system: System) -> dict[str, object]:
        healthy = {"State": "Enabled", "Health": "OK", "HealthRollUp": "OK"}
        return {
            "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
            "Id": system.uuid,
            "Name": f"node-{system.index}",
            "UUID": system.uuid,
            "Manufacturer": "Sushy Emulator",
            "Status": healthy,
            "PowerState": system.power,
            "Boot": {
                "BootSourceOverrideEnabled": system.boot_enabled,
                "BootSourceOverrideTarget": system.boot_target,
                "BootSourceOverrideTarget@Redfish.AllowableValues": list(BOOT_TARGETS),
                "BootSourceOverrideMode": system.boot_mode,
            },
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": f"{system.path}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": list(RESET_TYPES),
                }
            },
            "@odata.context": "/redfish/v1/$metadata#ComputerSystem.ComputerSystem",
            "@odata.id": system.path,
            "@Redfish.Copyright": COPYRIGHT,
        }

    def authorized(self, bmc: int, headers: dict[str, str]) -> bool:
        token = headers.get("x-auth-token")
        if token is not None:
            return self.tokens.get(token, (-1, ""))[0] == bmc
        return headers.get("authorization") == self.basic

    def handler(self, bmc: int) -> Handler:
        system = self.systems[bmc]

        def handle(method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
            path = urlsplit(target).path.rstrip("/") or "/"
            if path == ROOT:
                if method != "GET":
                    self.note(bmc, "bad_method")
                    return error(405, "405 Method Not Allowed")
                self.note(bmc, "root")
                return ok(self.root(bmc))
            if self.sessions and path == SESSIONS and method == "POST":
                return self._new_session(bmc, body)
            if self.sessions and path.startswith(SESSIONS + "/") and method == "DELETE":
                return self._end_session(bmc, path, headers)
            known = {f"{ROOT}/Systems", system.path, f"{system.path}/Actions/ComputerSystem.Reset"}
            if path not in known:
                self.note(bmc, "not_found")
                if path.startswith(f"{ROOT}/Systems/"):
                    return error(404, f"Fake system {path.rsplit('/', 1)[-1]} was not found")
                return error(404, "404 Not Found: The requested URL was not found on the server.")
            if not self.authorized(bmc, headers):
                self.note(bmc, "unauthorized")
                return error(401, "401 Unauthorized: wrong credentials")
            if path == f"{ROOT}/Systems" and method == "GET":
                self.note(bmc, "systems")
                return ok(self.collection(system))
            if path == system.path and method == "GET":
                self.note(bmc, "system", system.power)
                return ok(self.computer_system(system))
            if path == system.path and method == "PATCH":
                return self._patch(bmc, system, body)
            if path.endswith("/ComputerSystem.Reset") and method == "POST":
                return self._reset(bmc, system, body)
            self.note(bmc, "bad_method")
            return error(405, "405 Method Not Allowed")

        return handle

    def _json(self, body: bytes) -> dict[str, object]:
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _new_session(self, bmc: int, body: bytes) -> Answer:
        data = self._json(body)
        if (data.get("UserName"), data.get("Password")) != (self.username, self.password):
            self.note(bmc, "unauthorized")
            return error(401, "401 Unauthorized: wrong credentials")
        self.note(bmc, "session_new")
        token, session_id = secrets.token_hex(16), secrets.token_hex(8)
        self.tokens[token] = (bmc, session_id)
        location = f"{SESSIONS}/{session_id}"
        document = {
            "@odata.type": "#Session.v1_0_0.Session",
            "@odata.id": location,
            "Id": session_id,
            "Name": "User Session",
            "UserName": self.username,
        }
        return ok(document, 201, **{"X-Auth-Token": token, "Location": location})

    def _end_session(self, bmc: int, path: str, headers: dict[str, str]) -> Answer:
        session_id = path.rsplit("/", 1)[-1]
        token = headers.get("x-auth-token", "")
        if self.tokens.get(token) != (bmc, session_id):
            self.note(bmc, "unauthorized")
            return error(401, "401 Unauthorized: no such session")
        del self.tokens[token]
        self.note(bmc, "session_end")
        return 204, {}, b""

    def _patch(self, bmc: int, system: System, body: bytes) -> Answer:
        boot = self._json(body).get("Boot")
        if not isinstance(boot, dict):
            return error(400, "PATCH needs a Boot object")
        target = boot.get("BootSourceOverrideTarget", system.boot_target)
        if target not in BOOT_TARGETS:
            return error(400, f"Boot source {target} is not allowed")
        system.boot_target = str(target)
        system.boot_enabled = str(boot.get("BootSourceOverrideEnabled", system.boot_enabled))
        system.boot_mode = str(boot.get("BootSourceOverrideMode", system.boot_mode))
        self.note(bmc, "patch")
        return 204, {}, b""

    def _reset(self, bmc: int, system: System, body: bytes) -> Answer:
        reset_type = self._json(body).get("ResetType")
        self.note(bmc, "reset")
        if reset_type not in RESET_TO:
            return error(501, f"Power state {reset_type} is not supported")
        system.power = RESET_TO[str(reset_type)]
        return 204, {}, b""

    def control(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """The bench's side channel: flip states, read the log (never counted in the log)."""
        parts = urlsplit(target)
        if parts.path == "/log" and method == "GET":
            after = int(parse_qs(parts.query).get("after", ["0"])[0])
            return ok({"next": len(self.log), "entries": self.log[after:]})
        if parts.path == "/flip" and method == "POST":
            chosen = self._json(body).get("bmcs")
            if not isinstance(chosen, list) or not all(
                isinstance(i, int) and 0 <= i < len(self.systems) for i in chosen
            ):
                return error(400, 'flip needs {"bmcs": [index, ...]}')
            for i in chosen:
                system = self.systems[i]
                system.power = "Off" if system.power == "On" else "On"
            return ok(
                {
                    "monotonic": time.monotonic(),
                    "wall": time.time(),
                    "states": [self.systems[i].power for i in chosen],
                }
            )
        return error(404, "control: GET /log?after=N or POST /flip")


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    double = Double(args.bmcs, args.username, args.password, args.auth == "session")
    servers: list[asyncio.base_events.Server] = []

    def factory(bmc: int) -> Callable[[], HttpProtocol]:
        handle = double.handler(bmc)
        return lambda: HttpProtocol(handle, lambda: double.note(bmc, "connect"))

    try:
        for bmc in range(args.bmcs):
            servers.append(await loop.create_server(factory(bmc), HOST, 0, backlog=128))
        control = await loop.create_server(
            lambda: HttpProtocol(double.control, lambda: None), HOST, args.control_port
        )
        servers.append(control)
        ports = [server.sockets[0].getsockname()[1] for server in servers[:-1]]
        ready = {
            "pid": os.getpid(),
            "control": control.sockets[0].getsockname()[1],
            "ports": ports,
            "auth": args.auth,
        }
        partial = args.ready_file.with_suffix(".partial")
        partial.write_text(json.dumps(ready))
        partial.rename(args.ready_file)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        for server in servers:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--bmcs", type=int, default=1000, help="BMCs, one loopback port each")
    parser.add_argument("--ready-file", type=Path, required=True, help="ports written here")
    parser.add_argument("--control-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="password")
    parser.add_argument("--auth", choices=("basic", "session"), default="basic")
    args = parser.parse_args(argv)
    if not 1 <= args.bmcs <= 20_000:
        parser.error("--bmcs must be 1..20000")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
