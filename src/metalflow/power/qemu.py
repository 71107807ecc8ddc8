"""A QEMU VM as a BMC: power, boot order and a CD drive over QMP, QEMU's JSON monitor.

The VM is started with `-qmp unix:PATH,server=on,wait=off -no-shutdown` (add `-S` to start it
powered off); `host`, or the option `qmp`, is PATH. metalflow never starts or ends QEMU: it does
not own the command line, so "off" has to leave the process running.

Power model (QEMU's run states, from `query-status`):
- on: the vCPUs run guest code (`running`), or the guest sleeps in ACPI S3 (`suspended`).
- off: every other state. `prelaunch` is what `-S` and metalflow's off leave; `shutdown` is a guest
  that powered itself off (only with `-no-shutdown`: without it QEMU exits); `paused`,
  `guest-panicked`, `internal-error`, `io-error`, `watchdog`, `debug` and the migration states
  run no guest code either, and "on" makes them run.
- no process (the socket is absent or refuses): off. Asking for on, cycle or reset then fails,
  saying that QEMU has to be started first.
Actions: on = `cont` (after `system_reset` where QEMU demands one, `system_wakeup` from S3);
off = `stop` + `system_reset`, so the vCPUs wait at the reset vector as after a power cut and a
later on is a cold boot, not a resume; soft-off = `system_powerdown` (the ACPI power button: the
guest decides); cycle = off then on; reset = `system_reset` + `cont`.

Boot device: QEMU takes the boot order from the devices' `bootindex` and rebuilds the firmware's
`bootorder` file at every reset (SeaBIOS and OVMF read it at POST), and `bootindex` can be set at
run time with `qom-set`. So PXE, disk and CD reorder the `-device`s that have a `bootindex`
property (a NIC has `mac`, a disk `drive`, a CD a removable medium), effective at the next
reset; a VM that is off at the reset vector (`prelaunch`) is reset once more on the spot, as
`cont` alone would boot the order of its last reset. QEMU has no one-time override: a one-time
request stays until the next request (metalflow asks for the disk once a machine is
provisioned). UEFI versus legacy is the firmware QEMU was started with, and the firmware's setup
screen cannot be chosen: BIOS is Unsupported.

Virtual media: `blockdev-change-medium` on the first drive with a removable medium
(`-drive if=none,id=cd0,media=cdrom -device ide-cd,drive=cd0`); local paths and file:// URLs,
http(s):// ones only where QEMU has its curl block driver (Debian: qemu-block-extra).

The QMP client is written here. qemu.qmp (the QEMU project's library) was the candidate: it is
asyncio, and its only synchronous API, qemu.qmp.legacy, is GPLv2-only, documented as kept for
scripts inside the QEMU tree, and installs an event loop on the calling thread, which here is a
power-job worker; the package is also still 0.0.x "alpha". The `qmp` package on PyPI is a
third-party client last released in 2023. What this driver needs (greeting, capabilities, one
command at a time, events in between) is a line-framed JSON exchange over a unix socket.

QEMU serves one QMP client at a time on a `-qmp` socket, so each driver call connects, asks and
disconnects: a driver never keeps the monitor from an operator's qmp-shell.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from metalflow.power.driver import (
    Bmc,
    BootDevice,
    BootRequest,
    FieldDoc,
    PowerAction,
    PowerError,
    PowerState,
    Probe,
    Unsupported,
    seconds_option,
)

DEFAULT_TIMEOUT = 5.0
"""Seconds for one QMP exchange; QEMU answers in about a millisecond unless it is wedged."""

MAX_MESSAGE = 1 << 20
"""A QMP line longer than this is not QMP (the largest replies used here are a few KiB)."""

MAX_UNIX_PATH = 107
"""Linux's sun_path holds 108 bytes, the last one a NUL."""

ON_STATES = frozenset({"running", "suspended"})
NEEDS_RESET = frozenset({"shutdown", "guest-panicked", "internal-error"})
"""Run states from which QEMU refuses `cont` ("Resetting the Virtual Machine is required")."""

Message = dict[str, Any]
T = TypeVar("T")


class QmpError(Exception):
    """QEMU refused a command; `error_class` and `desc` are its own words."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpProtocolError(Exception):
    """The peer does not speak QMP (never worth a retry)."""


class QmpClosed(ConnectionError):
    """QEMU closed the monitor mid-exchange (it exited, or another client holds it)."""


def encode_command(command: str, arguments: Mapping[str, object] | None, ident: str) -> bytes:
    message: dict[str, object] = {"execute": command, "id": ident}
    if arguments:
        message["arguments"] = dict(arguments)
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode_message(line: bytes) -> Message:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QmpProtocolError(f"not JSON: {line[:80]!r}") from exc
    if not isinstance(message, dict):
        raise QmpProtocolError(f"not a JSON object: {line[:80]!r}")
    return message


class QmpFramer:
    """QMP's stream split into messages: one JSON object per line (`-qmp` is never pretty)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if line.strip():
                messages.append(decode_message(line))
        if len(self._buffer) > MAX_MESSAGE:
            raise QmpProtocolError(f"a line longer than {MAX_MESSAGE} bytes")
        return messages


class QmpClient:
    """One QMP session: greeting and capabilities on `handshake`, then a command at a time;
    events that arrive meanwhile are kept in `events` for `wait_event`."""

    def __init__(self, sock: socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._sock = sock
        self._timeout = timeout
        self._framer = QmpFramer()
        self._pending: list[Message] = []
        self._ids = itertools.count(1)
        self.events: list[Message] = []

    @classmethod
    def connect(cls, path: str, timeout: float = DEFAULT_TIMEOUT) -> QmpClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, timeout)

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def handshake(self) -> Message:
        """QEMU's greeting (its version), after leaving capabilities negotiation mode.

        QMP's specification puts the greeting first, yet a client that connects right after
        another one can read events ahead of it (seen: a STOP from the previous shutdown, queued
        for the client that was hanging up). They are skipped: they tell of a session that is
        over, and `wait_event` must not take one for an event of this session.
        """
        deadline = time.monotonic() + self._timeout
        greeting = self._read(deadline)
        while "event" in greeting:
            greeting = self._read(deadline)
        if not isinstance(greeting.get("QMP"), dict):
            raise QmpProtocolError(f"no QMP greeting: {str(greeting)[:80]}")
        self.execute("qmp_capabilities")
        return greeting

    def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        """The command's `return` value; QmpError with QEMU's reason when it refuses."""
        ident = f"metalflow-{next(self._ids)}"
        deadline = time.monotonic() + self._timeout
        self._sock.settimeout(self._timeout)
        self._sock.sendall(encode_command(command, arguments, ident))
        while True:
            message = self._read(deadline)
            if "event" in message:
                self.events.append(message)
                continue
            if message.get("id", ident) != ident:
                raise QmpProtocolError(f"{command}: answer to another command: {message}")
            if "return" in message:
                return message["return"]
            error = message.get("error")
            if isinstance(error, dict):
                raise QmpError(command, str(error.get("class")), str(error.get("desc")))
            raise QmpProtocolError(f"{command}: neither return nor error: {str(message)[:80]}")

    def wait_event(self, name: str) -> Message:
        """The first event `name` seen since `events` was last cleared, reading on if needed."""
        deadline = time.monotonic() + self._timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("event") == name:
                    return self.events.pop(index)
            message = self._read(deadline)
            if "event" in message:
                self.events.append(message)

    def _read(self, deadline: float) -> Message:
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("QEMU did not answer in time")
            self._sock.settimeout(remaining)
            data = self._sock.recv(65536)
            if not data:
                raise QmpClosed("QEMU closed the monitor")
            self._pending.extend(self._framer.feed(data))
        return self._pending.pop(0)


def power_state_of(status: str) -> PowerState:
    return PowerState.ON if status in ON_STATES else PowerState.OFF


def _off_plan(status: str) -> tuple[str, ...]:
    if status == "prelaunch":
        return ()
    if status in NEEDS_RESET:
        return ("system_reset",)
    return ("stop", "system_reset")


def _on_plan(status: str) -> tuple[str, ...]:
    if status == "running":
        return ()
    if status == "suspended":
        return ("system_wakeup",)
    if status in NEEDS_RESET:
        return ("system_reset", "cont")
    return ("cont",)


def power_plan(status: str, action: PowerAction) -> tuple[str, ...]:
    """The QMP commands that take a VM in run state `status` through `action`."""
    if action is PowerAction.ON:
        return _on_plan(status)
    if action is PowerAction.OFF:
        return _off_plan(status)
    if action is PowerAction.SOFT_OFF:
        return ("system_powerdown",) if status in ON_STATES else ()
    if action is PowerAction.CYCLE:
        return (*_off_plan(status), "cont")
    return ("system_reset", "cont")


class BootKind(enum.StrEnum):
    NIC = "nic"
    DISK = "disk"
    CDROM = "cdrom"


BOOT_KIND: Mapping[BootDevice, BootKind] = {
    BootDevice.PXE: BootKind.NIC,
    BootDevice.DISK: BootKind.DISK,
    BootDevice.CDROM: BootKind.CDROM,
}


@dataclass(frozen=True, slots=True)
class BootCandidate:
    """A `-device` with a `bootindex` property; -1 means it is not in the boot order."""

    path: str
    kind: BootKind
    bootindex: int


def boot_order(devices: Sequence[BootCandidate], first: BootKind) -> dict[str, int]:
    """New bootindex per device path: the `first` kind ahead, each group in its old order;
    devices of other kinds that were not in the order stay out (-1)."""

    def rank(device: BootCandidate) -> tuple[bool, int, str]:
        return (device.bootindex < 0, device.bootindex, device.path)

    chosen = sorted((d for d in devices if d.kind is first), key=rank)
    rest = sorted((d for d in devices if d.kind is not first and d.bootindex >= 0), key=rank)
    order = {device.path: index for index, device in enumerate([*chosen, *rest], start=1)}
    return {device.path: order.get(device.path, -1) for device in devices}


def qdev_path(qdev: str) -> str:
    """`query-block`'s qdev (a bare id or a QOM path, virtio's ending in /virtio-backend) as the
    device's QOM path."""
    path = qdev if qdev.startswith("/") else f"/machine/peripheral/{qdev}"
    return path.removesuffix("/virtio-backend")


DEVICE_ROOTS = ("/machine/peripheral", "/machine/peripheral-anon")
"""Where QEMU puts `-device`s: with an id, and without one."""


@dataclass(frozen=True, slots=True)
class _Drive:
    qdev: str
    inserted: bool


class _Gone(Exception):
    """No QEMU listens on the socket."""


def _socket_path(bmc: Bmc) -> str:
    return bmc.options.get("qmp") or bmc.host


def media_filename(url: str) -> str:
    """What QEMU opens for `url`: a local path for file:// and absolute paths, else the URL."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return unquote(parts.path)
    if parts.scheme in ("http", "https", "ftp", "ftps") or (not parts.scheme and url[:1] == "/"):
        return url
    raise ValueError(
        f"{url!r}: QEMU opens an absolute path, a file:// URL or http(s)://, ftp(s)://"
    )


class QemuDriver:
    name: ClassVar[str] = "qemu"
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = 30.0
    fields: ClassVar[tuple[FieldDoc, ...]] = (
        FieldDoc(
            "host",
            "absolute path of the VM's QMP socket, as in `-qmp unix:PATH,server=on,wait=off`",
            required=True,
        ),
        FieldDoc("options.qmp", "the QMP socket path, when `host` names something else"),
        FieldDoc(
            "options.timeout", f"seconds to wait for QEMU's answer (default {DEFAULT_TIMEOUT})"
        ),
    )

    def __init__(self, bmc: Bmc) -> None:
        self.validate(bmc)
        self._path = _socket_path(bmc)
        self._timeout = seconds_option(bmc, "timeout", DEFAULT_TIMEOUT)

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        path = _socket_path(bmc)
        field = "options.qmp" if bmc.options.get("qmp") else "host"
        if not os.path.isabs(path):
            raise ValueError(f"{field}: {path!r} is not an absolute path to the VM's QMP socket")
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ValueError(
                f"{field}: {path!r} is longer than {MAX_UNIX_PATH} bytes, the limit of a unix"
                " socket path: use a shorter directory"
            )
        seconds_option(bmc, "timeout", DEFAULT_TIMEOUT)

    def _error(self, action: str, message: str, *, transient: bool = False) -> PowerError:
        return PowerError(self.name, self._path, action, message, transient=transient)

    def _session(self, action: str, work: Callable[[QmpClient], T]) -> T:
        """`work` on a fresh QMP session, its errors as PowerErrors; _Gone without a QEMU."""
        try:
            client = QmpClient.connect(self._path, self._timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise _Gone from exc
        except TimeoutError as exc:
            raise self._error(action, "the QMP socket did not accept", transient=True) from exc
        except OSError as exc:
            raise self._error(action, f"cannot open the QMP socket: {exc}") from exc
        try:
            with client:
                client.handshake()
                return work(client)
        except QmpError as exc:
            raise self._error(action, f"QEMU refused {exc.command}: {exc.desc}") from exc
        except QmpProtocolError as exc:
            raise self._error(action, f"not a QMP socket: {exc}") from exc
        except TimeoutError as exc:
            raise self._error(
                action,
                f"no answer within {self._timeout} s (QEMU serves one QMP client at a time:"
                " is another one connected?)",
                transient=True,
            ) from exc
        except OSError as exc:
            raise self._error(action, f"QMP connection lost: {exc}", transient=True) from exc

    def _gone(self, action: str) -> PowerError:
        return self._error(
            action,
            "no QEMU listens on this QMP socket: metalflow powers a running QEMU process but"
            " cannot start one (start it with -qmp unix:PATH,server=on,wait=off -no-shutdown)",
        )

    def power_state(self) -> PowerState:
        try:
            return power_state_of(self._session("status", _status))
        except _Gone:
            return PowerState.OFF

    def set_power(self, action: PowerAction) -> None:
        def run(client: QmpClient) -> None:
            for command in power_plan(_status(client), action):
                if command == "system_reset":
                    _reset(client)
                else:
                    client.execute(command)

        try:
            self._session(f"power {action}", run)
        except _Gone:
            if action not in (PowerAction.OFF, PowerAction.SOFT_OFF):
                raise self._gone(f"power {action}") from None

    def set_boot_device(self, request: BootRequest) -> None:
        action = f"boot-device {request.device}"
        kind = BOOT_KIND.get(request.device)
        if kind is None:
            raise Unsupported(
                self.name, self._path, action, "QEMU's firmware setup cannot be chosen over QMP"
            )

        def run(client: QmpClient) -> None:
            devices = _boot_candidates(client)
            if not any(device.kind is kind for device in devices):
                raise Unsupported(
                    self.name,
                    self._path,
                    action,
                    f"the VM has no {kind} -device with a bootindex property",
                )
            current = {device.path: device.bootindex for device in devices}
            changed = {
                path: index
                for path, index in boot_order(devices, kind).items()
                if current[path] != index
            }
            # bootindex values must stay unique: take the moving devices out, then put them back.
            for path in changed:
                if current[path] >= 0:
                    _set_bootindex(client, path, -1)
            for path, index in changed.items():
                if index >= 0:
                    _set_bootindex(client, path, index)
            if changed and _status(client) == "prelaunch":
                # Off at the reset vector: reset again so the next `cont` boots the new order.
                _reset(client)

        self._required_session(action, run)

    def insert_media(self, url: str) -> None:
        try:
            filename = media_filename(url)
        except ValueError as exc:
            raise self._error("insert-media", str(exc)) from exc

        def run(client: QmpClient) -> None:
            drive = self._cd_drive(client, "insert-media")
            try:
                client.execute(
                    "blockdev-change-medium",
                    {
                        "id": drive.qdev,
                        "filename": filename,
                        "format": "raw",
                        "read-only-mode": "read-only",
                    },
                )
            except QmpError as exc:
                if "Unknown protocol" not in exc.desc:
                    raise
                hint = f"{exc.desc} (QEMU opens URLs with its curl block driver: qemu-block-extra)"
                raise QmpError(exc.command, exc.error_class, hint) from exc

        self._required_session("insert-media", run)

    def eject_media(self) -> None:
        def run(client: QmpClient) -> None:
            drive = self._cd_drive(client, "eject-media")
            if drive.inserted:
                client.execute("eject", {"id": drive.qdev, "force": True})

        self._required_session("eject-media", run)

    def probe(self) -> Probe:
        def run(client: QmpClient) -> Probe:
            version = client.execute("query-version")
            devices = _boot_candidates(client)
            drives = _removable_drives(client)
            details = {
                "qemu": _version_text(version),
                "status": _status(client),
                "boot-order": " ".join(
                    f"{d.kind}:{d.path}={d.bootindex}"
                    for d in sorted(devices, key=lambda d: (d.bootindex < 0, d.bootindex))
                ),
                "boot-once": "no: a one-time boot device stays until the next request",
            }
            if drives:
                details["cdrom"] = drives[0].qdev
            return Probe(
                driver=self.name,
                power=True,
                boot_device=bool(devices),
                virtual_media=bool(drives),
                details=details,
            )

        return self._required_session("probe", run)

    def close(self) -> None:
        """Nothing to end: every call has its own QMP session."""

    def _required_session(self, action: str, work: Callable[[QmpClient], T]) -> T:
        try:
            return self._session(action, work)
        except _Gone:
            raise self._gone(action) from None

    def _cd_drive(self, client: QmpClient, action: str) -> _Drive:
        drives = _removable_drives(client)
        if not drives:
            raise Unsupported(
                self.name,
                self._path,
                action,
                "the VM has no CD drive (start QEMU with -drive if=none,id=cd0,media=cdrom"
                " -device ide-cd,drive=cd0)",
            )
        return drives[0]


def _status(client: QmpClient) -> str:
    reply = client.execute("query-status")
    status = reply.get("status") if isinstance(reply, dict) else None
    if not isinstance(status, str):
        raise QmpProtocolError(f"query-status without a status: {str(reply)[:80]}")
    return status


def _reset(client: QmpClient) -> None:
    """system_reset, done: QEMU resets in its main loop and says so with a RESET event."""
    client.events.clear()
    client.execute("system_reset")
    client.wait_event("RESET")


def _version_text(version: object) -> str:
    if not isinstance(version, dict) or not isinstance(version.get("qemu"), dict):
        return "unknown"
    numbers = version["qemu"]
    text = f"{numbers.get('major')}.{numbers.get('minor')}.{numbers.get('micro')}"
    package = str(version.get("package") or "").strip()
    return f"{text} ({package})" if package else text


def _removable_drives(client: QmpClient) -> list[_Drive]:
    reply = client.execute("query-block")
    if not isinstance(reply, list):
        raise QmpProtocolError("query-block did not return a list")
    return [
        _Drive(qdev=str(block["qdev"]), inserted="inserted" in block)
        for block in reply
        if isinstance(block, dict) and block.get("removable") and block.get("qdev")
    ]


def _children(client: QmpClient, path: str) -> list[Message]:
    reply = client.execute("qom-list", {"path": path})
    if not isinstance(reply, list):
        raise QmpProtocolError(f"qom-list {path} did not return a list")
    return [item for item in reply if isinstance(item, dict)]


def _boot_candidates(client: QmpClient) -> list[BootCandidate]:
    cdroms = {qdev_path(drive.qdev) for drive in _removable_drives(client)}
    found = []
    for root in DEVICE_ROOTS:
        for child in _children(client, root):
            if not str(child.get("type", "")).startswith("child<"):
                continue
            path = f"{root}/{child['name']}"
            properties = {str(item.get("name")) for item in _children(client, path)}
            if "bootindex" not in properties:
                continue
            if "mac" in properties:
                kind = BootKind.NIC
            elif path in cdroms:
                kind = BootKind.CDROM
            elif "drive" in properties:
                kind = BootKind.DISK
            else:
                continue
            index = client.execute("qom-get", {"path": path, "property": "bootindex"})
            found.append(BootCandidate(path, kind, index if isinstance(index, int) else -1))
    return found


def _set_bootindex(client: QmpClient, path: str, index: int) -> None:
    client.execute("qom-set", {"path": path, "property": "bootindex", "value": index})
