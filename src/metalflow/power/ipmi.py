"""The `ipmi` driver: IPMI 2.0 over the LAN (RMCP+, ipmitool's "lanplus") through pyghmi.

pyghmi keeps one UDP session per BMC and user in a process-wide table served by its own I/O
thread, and shares it between every `Command` made with the same credentials. This driver logs
in on first use, logs in again when that shared session was ended (by another driver's `close`
or by pyghmi giving up on the BMC), and runs every pyghmi call in a worker thread it waits for at
most `options.timeout` seconds: pyghmi gives up on its own after ~5 s at login, but only after
~30 s on a session whose BMC stops answering.

Two pyghmi 1.6.19 faults are worked around here (both measured against ipmi_sim):
- credentials are passed as bytes: given str, pyghmi files the new session under the str key and
  later removes it under the encoded one, so the next `Command` for the same BMC and user in the
  process picks up the stale entry and spins forever;
- a reply that pyghmi's I/O thread queued before the caller started waiting is only noticed
  when the retransmit timer fires (0.5-1 s), which made most calls on a busy host take ~1 s
  instead of ~1 ms; `wake_on_queued_reply` returns from that wait at once.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from time import monotonic
from typing import Any, ClassVar, TypeVar

from pyghmi import exceptions as pyghmi_errors
from pyghmi.ipmi import command as pyghmi_command
from pyghmi.ipmi.private import session as pyghmi_session

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
    check_host,
)

T = TypeVar("T")

DEFAULT_PORT = 623
DEFAULT_TIMEOUT = 20.0
MAX_TIMEOUT = 300.0
MAX_IDLE = 15.0
"""Seconds a session may sit unused before it is ended and a new one made: BMCs drop idle
sessions (ipmi_sim after 20-35 s), pyghmi sends keepalives only while some call runs, and
finding a dropped session costs pyghmi ~20 s of retries where a new login costs ~3 ms."""
MAX_USERNAME_BYTES = 16
"""IPMI user names are at most 16 bytes (IPMI 2.0, RAKP message 1)."""
MAX_PASSWORD_BYTES = 20
"""IPMI 2.0 passwords are at most 20 bytes."""

GET_POWER_STATE_MAP: Mapping[str, PowerState] = {"on": PowerState.ON, "off": PowerState.OFF}
"""pyghmi's `get_power()['powerstate']` → ours."""

SET_POWER_MAP: Mapping[PowerAction, str] = {
    PowerAction.ON: "on",
    PowerAction.OFF: "off",
    PowerAction.SOFT_OFF: "shutdown",
    PowerAction.RESET: "reset",
    PowerAction.CYCLE: "cycle",
}
"""Ours → pyghmi's `set_power` words; "cycle" has none there and is sent as chassis control 2."""

BOOT_DEVICE_MAP: Mapping[BootDevice, str] = {
    BootDevice.PXE: "network",
    BootDevice.DISK: "hd",
    BootDevice.CDROM: "optical",
    BootDevice.BIOS: "setup",
}
"""Ours → pyghmi's `set_bootdev` words."""

PRIVILEGES: Mapping[str, int] = {"administrator": 4, "operator": 3}
"""`options.privilege` → IPMI privilege level; power control needs operator at least."""
PRIVILEGE_NAMES: Mapping[int, str] = {level: name for name, level in PRIVILEGES.items()}

CIPHER_SUITES: Mapping[int, str] = {256: "17", 1: "3"}
"""pyghmi's negotiated hash (`Session.integrityalgo`) → IPMI cipher suite: pyghmi offers only
17 (HMAC-SHA256, AES-128) and, when the BMC refuses that, 3 (HMAC-SHA1, AES-128)."""

OPTIONS = ("cipher_suite", "privilege", "timeout")

NETFN_CHASSIS, CHASSIS_CONTROL, POWER_CYCLE = 0x00, 0x02, 0x02
NETFN_APP, GET_DEVICE_ID = 0x06, 0x01

MANUFACTURERS: Mapping[int, str] = {
    2: "IBM",
    11: "Hewlett-Packard",
    343: "Intel",
    674: "Dell",
    10876: "Supermicro",
    19046: "Lenovo",
}
"""IANA enterprise numbers of common BMC makers, for `probe`; others show only the number."""

BAD_CREDENTIALS = ("Incorrect password provided", "Unauthorized name")
"""pyghmi's words when the BMC does not know the user or the password does not match."""
NO_ANSWER = ("None", "timeout", "Session no longer connected")
"""pyghmi's words when the BMC stopped answering (IpmiException(None) at login)."""
BUSY = (
    "Insufficient resources to create",
    "Node Busy",
    "Timeout while processing command",
    "Command response could not be provided",
    "BMC initialization in progress",
    "SDR repository in update mode",
    "Device in firmware update mode",
)
"""BMC answers worth retrying: it is busy, not refusing."""
NO_PRIVILEGE = ("Unauthorized role or privilege level", "Insufficient privilege level")
NO_MEDIA = "IPMI has no virtual media; use the BMC's redfish driver"


def wake_on_queued_reply(
    wait: Callable[..., None], queued: Callable[[object], bool]
) -> Callable[..., None]:
    """pyghmi's `_io_wait`, returning at once when a reply for `myaddr` is already `queued`.

    pyghmi's `awaitresponse` waits first and reads its session's packet queue after; when the
    I/O thread queued the reply before the wait began, nothing wakes the caller until its
    retransmit deadline. Waits with an event queue (`evq`: for another call on the session to
    finish) are left alone.
    """

    @functools.wraps(wait)
    def io_wait(timeout: float, myaddr: object = None, evq: object = None) -> None:
        if evq is None and myaddr is not None and queued(myaddr):
            return
        wait(timeout, myaddr, evq)

    return io_wait


def _reply_queued(address: object) -> bool:
    sessions = list(pyghmi_session.Session.bmc_handlers.get(address, {}).values())
    return any(getattr(session, "pktqueue", None) for session in sessions)


def _install_wake_on_queued_reply() -> None:
    """Once per process, and only where pyghmi still has the parts it wraps."""
    wait = getattr(pyghmi_session, "_io_wait", None)
    session = getattr(pyghmi_session, "Session", None)
    if wait is None or hasattr(wait, "__wrapped__") or not hasattr(session, "bmc_handlers"):
        return
    pyghmi_session._io_wait = wake_on_queued_reply(wait, _reply_queued)


_install_wake_on_queued_reply()


def power_request(action: PowerAction, state: PowerState) -> str | None:
    """What to send for `action` when the machine is in `state`; None when it is already there.

    CYCLE and RESET of a machine that is off power it on (the Protocol's "on when it was off"):
    BMCs answer a reset or cycle of an off machine with an error or ignore it.
    """
    if state is PowerState.OFF:
        if action in (PowerAction.OFF, PowerAction.SOFT_OFF):
            return None
        if action in (PowerAction.CYCLE, PowerAction.RESET):
            return SET_POWER_MAP[PowerAction.ON]
    elif action is PowerAction.ON:
        return None
    return SET_POWER_MAP[action]


def device_id_details(data: bytes) -> dict[str, str]:
    """The facts of a Get Device ID response (IPMI 2.0 §20.1) that help an operator."""
    if len(data) < 11:
        return {"device_id": data.hex()}
    manufacturer = int.from_bytes(data[6:9], "little") & 0x0FFFFF
    details = {
        "device_id": str(data[0]),
        "device_revision": str(data[1] & 0x0F),
        "firmware": f"{data[2] & 0x7F}.{data[3]:02x}",
        "ipmi_version": f"{data[4] & 0x0F}.{data[4] >> 4}",
        "manufacturer_id": str(manufacturer),
        "product_id": str(struct.unpack_from("<H", data, 9)[0]),
    }
    if manufacturer in MANUFACTURERS:
        details["manufacturer"] = MANUFACTURERS[manufacturer]
    return details


def scrub(text: str, secret: str | None) -> str:
    """`text` without `secret`: library words are not trusted to leave the password out."""
    return text.replace(secret, "***") if secret else text


def classify(error: BaseException, endpoint: str, secret: str | None) -> tuple[str, bool]:
    """A user's message for a pyghmi or socket error, and whether a retry may help."""
    if isinstance(error, socket.gaierror):
        return f"cannot resolve {endpoint}: {error.strerror}", error.errno == socket.EAI_AGAIN
    text = scrub(str(error), secret)
    if isinstance(error, OSError):
        return f"cannot reach {endpoint}: {text}", True
    if not isinstance(error, pyghmi_errors.PyghmiException):
        return f"{type(error).__name__}: {text}", False
    if text.startswith(BAD_CREDENTIALS):
        return f"wrong username or password (BMC: {text})", False
    if text in NO_ANSWER:
        return f"no answer from {endpoint}", True
    if text.startswith(BUSY):
        return f"BMC busy: {text}", True
    if text.startswith(NO_PRIVILEGE):
        return f"{text}: the user needs operator or administrator privilege", False
    code = getattr(error, "ipmicode", 0)
    return (f"{text} (completion code 0x{code:02x})" if code else text), False


class IpmiDriver:
    """One BMC over IPMI 2.0; made per BMC, used by one job at a time."""

    name: ClassVar[str] = "ipmi"
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = None
    fields: ClassVar[tuple[FieldDoc, ...]] = (
        FieldDoc("host", "BMC address: IP or DNS name", required=True),
        FieldDoc("port", f"UDP port of the BMC's RMCP+ service (default {DEFAULT_PORT})"),
        FieldDoc("username", f"IPMI user, at most {MAX_USERNAME_BYTES} bytes", required=True),
        FieldDoc("password", f"IPMI password, at most {MAX_PASSWORD_BYTES} bytes", required=True),
        FieldDoc(
            "options.cipher_suite",
            "17 to refuse BMCs that only offer SHA-1; 3 (default) takes 17 or 3, whichever"
            " the BMC accepts first",
        ),
        FieldDoc(
            "options.privilege",
            "administrator or operator (default: administrator, operator when refused)",
        ),
        FieldDoc(
            "options.timeout",
            f"seconds one call may take, login included (default {DEFAULT_TIMEOUT:g},"
            f" at most {MAX_TIMEOUT:g})",
        ),
    )

    def __init__(self, bmc: Bmc) -> None:
        self.validate(bmc)
        self._bmc = bmc
        self._port = bmc.port or DEFAULT_PORT
        self._endpoint = f"{bmc.host}:{self._port}"
        self._timeout = float(bmc.options.get("timeout", DEFAULT_TIMEOUT))
        self._require_sha256 = bmc.options.get("cipher_suite", "3") == "17"
        privilege = bmc.options.get("privilege")
        self._privilege = PRIVILEGES[privilege] if privilege else None
        self._command: Any = None
        self._used = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"IpmiDriver({self._endpoint}, username={self._bmc.username!r})"

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        if not bmc.host or not bmc.host.strip():
            raise ValueError("host: required (the BMC's IP address or DNS name)")
        check_host(bmc.host)
        if bmc.port is not None and not 1 <= bmc.port <= 65535:
            raise ValueError(f"port: must be 1..65535 (IPMI's is {DEFAULT_PORT}), got {bmc.port}")
        if not bmc.username:
            raise ValueError("username: required (an IPMI user on the BMC)")
        if len(bmc.username.encode()) > MAX_USERNAME_BYTES:
            raise ValueError(f"username: IPMI allows at most {MAX_USERNAME_BYTES} bytes")
        if not bmc.password:
            raise ValueError("password: required (the IPMI user's password)")
        if len(bmc.password.encode()) > MAX_PASSWORD_BYTES:
            raise ValueError(f"password: IPMI 2.0 allows at most {MAX_PASSWORD_BYTES} bytes")
        unknown = sorted(set(bmc.options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"options.{unknown[0]}: not an ipmi option; known: {', '.join(OPTIONS)}"
            )
        suite = bmc.options.get("cipher_suite", "3")
        if suite not in ("3", "17"):
            raise ValueError(f"options.cipher_suite: must be 3 or 17, got {suite!r}")
        privilege = bmc.options.get("privilege")
        if privilege is not None and privilege not in PRIVILEGES:
            raise ValueError(
                f"options.privilege: must be {' or '.join(PRIVILEGES)}, got {privilege!r}"
            )
        timeout = bmc.options.get("timeout")
        if timeout is not None:
            try:
                seconds = float(timeout)
            except ValueError:
                seconds = 0.0
            if not 1 <= seconds <= MAX_TIMEOUT:
                raise ValueError(
                    f"options.timeout: must be seconds from 1 to {MAX_TIMEOUT:g}, got {timeout!r}"
                )

    def power_state(self) -> PowerState:
        answer = self._call("power_state", lambda: self._session().get_power())
        return self._power_state(answer)

    def set_power(self, action: PowerAction) -> None:
        def run() -> None:
            command = self._session()
            word = power_request(action, self._power_state(command.get_power()))
            if word == SET_POWER_MAP[PowerAction.CYCLE]:
                command.xraw_command(
                    netfn=NETFN_CHASSIS, command=CHASSIS_CONTROL, data=(POWER_CYCLE,)
                )
            elif word is not None:
                command.set_power(word)

        self._call(f"set_power {action}", run)

    def set_boot_device(self, request: BootRequest) -> None:
        device = BOOT_DEVICE_MAP[request.device]
        self._call(
            f"set_boot_device {request.device}",
            lambda: self._session().set_bootdev(
                device, persist=request.persistent, uefiboot=request.efi
            ),
        )

    def insert_media(self, url: str) -> None:
        raise Unsupported(self.name, self._bmc.host, "insert_media", NO_MEDIA)

    def eject_media(self) -> None:
        raise Unsupported(self.name, self._bmc.host, "eject_media", NO_MEDIA)

    def probe(self) -> Probe:
        """Log in, then ask what works; a capability the BMC refuses is reported, not raised."""
        command = self._call("probe", self._session)
        session = command.ipmi_session
        details = {
            "session": f"IPMI {session.ipmiversion:.1f}",
            "cipher_suite": CIPHER_SUITES.get(session.integrityalgo, "none"),
            "privilege": PRIVILEGE_NAMES.get(session.privlevel, str(session.privlevel)),
        }
        device = self._capability(
            "probe device id",
            lambda: command.xraw_command(netfn=NETFN_APP, command=GET_DEVICE_ID),
            details,
            "device_id_error",
        )
        if device is not None:
            details.update(device_id_details(bytes(device["data"])))
        power = self._capability("probe power", command.get_power, details, "power_error")
        boot = self._capability(
            "probe boot device", command.get_bootdev, details, "boot_device_error"
        )
        return Probe(
            driver=self.name,
            power=power is not None,
            boot_device=boot is not None,
            virtual_media=False,
            details=details,
        )

    def close(self) -> None:
        """Log out, best effort and bounded: a BMC that is gone has nothing to log out of."""
        if not self._lock.acquire(timeout=self._timeout):
            return
        try:
            command, self._command = self._command, None
        finally:
            self._lock.release()
        if command is None or command.ipmi_session.broken:
            return
        try:
            self._call("close", command.ipmi_session.logout)
        except PowerError:
            return

    def _session(self) -> Any:
        """The logged-in pyghmi Command: logs in when there is none, it ended or sat idle."""
        with self._lock:
            command, now = self._command, monotonic()
            if command is not None and now - self._used > MAX_IDLE:
                with contextlib.suppress(pyghmi_errors.PyghmiException, OSError):
                    command.ipmi_session.logout()
            if command is None or command.ipmi_session.broken:
                self._command = self._login()
            self._used = now
            return self._command

    def _login(self) -> Any:
        assert self._bmc.username is not None and self._bmc.password is not None
        command = pyghmi_command.Command(
            bmc=self._bmc.host,
            userid=self._bmc.username.encode(),
            password=self._bmc.password.encode(),
            port=self._port,
            privlevel=self._privilege,
        )
        suite = CIPHER_SUITES.get(command.ipmi_session.integrityalgo)
        if self._require_sha256 and suite != "17":
            command.ipmi_session.logout()
            raise self._error(
                "login",
                f"the BMC only agreed to cipher suite {suite or 'none (IPMI 1.5)'}; "
                "options.cipher_suite=17 requires SHA-256",
            )
        return command

    def _call(self, action: str, call: Callable[[], T]) -> T:
        """Run `call` in a worker thread, waiting at most the timeout; errors as PowerError."""
        outcome: Future[T] = Future()

        def run() -> None:
            try:
                outcome.set_result(call())
            except BaseException as error:
                outcome.set_exception(error)

        threading.Thread(target=run, name=f"ipmi {self._endpoint}", daemon=True).start()
        try:
            return outcome.result(timeout=self._timeout)
        except FutureTimeout:
            message = f"no answer from {self._endpoint} within {self._timeout:g} s"
            raise self._error(action, message, transient=True) from None
        except PowerError as error:
            raise self._error(action, error.message, transient=error.transient) from None
        except Exception as error:
            message, transient = classify(error, self._endpoint, self._bmc.password)
            raise self._error(action, message, transient=transient) from error

    def _capability(
        self, action: str, call: Callable[[], T], details: dict[str, str], key: str
    ) -> T | None:
        """`call`'s answer, or None with the BMC's refusal in `details`; transient errors raise."""
        try:
            return self._call(action, call)
        except PowerError as error:
            if error.transient:
                raise
            details[key] = error.message
            return None

    def _power_state(self, answer: Mapping[str, str]) -> PowerState:
        state = answer.get("powerstate", "")
        if state not in GET_POWER_STATE_MAP:
            raise self._error("power_state", f"unexpected power state {state!r}")
        return GET_POWER_STATE_MAP[state]

    def _error(self, action: str, message: str, *, transient: bool = False) -> PowerError:
        return PowerError(self.name, self._bmc.host, action, message, transient=transient)
