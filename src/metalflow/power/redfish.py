"""The `redfish` driver: DMTF Redfish BMCs through sushy.

Translation happens here and nowhere else: `POWER_STATES` reads Redfish's PowerState words,
`RESET_TYPES` says which ResetType each PowerAction may use (first allowed one wins),
`BOOT_TARGETS` names the BootSourceOverrideTarget of each BootDevice, and `translate` turns
sushy's and requests' exceptions into `PowerError`s. The sushy client is made on first use (so
`validate` and construction never touch the network) and reused until `close`.

Every HTTP request is bounded: `timeout` seconds to read (default 20), at most 5 to connect,
and sushy retries nothing itself except one GET answered 5xx (after 1 s); retrying is the power
job's business, driven by `PowerError.transient`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_errors

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
    is_host_name,
)

log = logging.getLogger("metalflow.power.redfish")

NAME = "redfish"

POWER_STATES: Mapping[str, PowerState] = {
    "On": PowerState.ON,
    "Off": PowerState.OFF,
    "PoweringOn": PowerState.OFF,
    "PoweringOff": PowerState.ON,
    "Paused": PowerState.ON,
}
"""Redfish PowerState → ours. A transition reads as the state being left, so a job waiting
for `on` (or `off`) only finishes when the BMC says the transition is over; Paused is powered."""

RESET_TYPES: Mapping[PowerAction, tuple[str, ...]] = {
    PowerAction.ON: ("On", "ForceOn"),
    PowerAction.OFF: ("ForceOff",),
    PowerAction.SOFT_OFF: ("GracefulShutdown",),
    PowerAction.RESET: ("ForceRestart",),
    PowerAction.CYCLE: ("PowerCycle",),
}
"""ResetType candidates per action, best first. A system that is off gets ON's reset type for
RESET and CYCLE (many BMCs refuse a restart of a system that is off); a CYCLE where there is no
PowerCycle is ForceOff, a wait until Off (`options.cycle_wait`), then ON's reset type."""

BOOT_TARGETS: Mapping[BootDevice, str] = {
    BootDevice.PXE: "Pxe",
    BootDevice.DISK: "Hdd",
    BootDevice.CDROM: "Cd",
    BootDevice.BIOS: "BiosSetup",
}

CD_MEDIA_TYPES = ("CD", "DVD")
SCHEMES = ("https", "http")
DEFAULT_TIMEOUT = 20.0
CONNECT_TIMEOUT = 5.0
DEFAULT_CYCLE_WAIT = 60.0
CYCLE_POLL = 1.0
OPTIONS = ("system", "scheme", "timeout", "cycle_wait")
_LISTED_SYSTEMS = 20


@dataclass(frozen=True, slots=True)
class RedfishSettings:
    """A `Bmc` checked and resolved for Redfish (what `validate` accepts)."""

    url: str
    """scheme://host[:port], without the /redfish/v1 root."""
    system: str | None
    timeout: float
    cycle_wait: float
    verify_tls: bool

    @property
    def address(self) -> str:
        """host[:port], for messages."""
        return self.url.split("://", 1)[1]


def _seconds(options: Mapping[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"options.{key}: {raw!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise ValueError(f"options.{key}: {raw!r} must be more than 0 and at most 3600 seconds")
    return value


def _host_part(name: str) -> str:
    """`name` as the host of a URL (IPv6 in brackets); ValueError when it is no host name."""
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if ":" in name:
            raise ValueError(
                f"host: {name!r}: write a port as port, or the whole URL (https://host:port)"
            ) from None
        if not is_host_name(name):
            raise ValueError(f"host: {name!r} is not a host name, IP address or URL") from None
        return name
    if address.version == 6:
        return "[" + bare.replace("%", "%25") + "]"
    return bare


def parse_bmc(bmc: Bmc) -> RedfishSettings:
    """Parse `bmc` offline; ValueError naming the field and the fix."""
    unknown = sorted(set(bmc.options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"options.{unknown[0]}: unknown to the redfish driver; it reads {', '.join(OPTIONS)}"
        )
    scheme = bmc.options.get("scheme")
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"options.scheme: {scheme!r}; use https or http")
    port = bmc.port
    host = bmc.host.strip()
    if not host:
        raise ValueError("host: required; the BMC's name or address, or https://host:port")
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"host: {host!r}: the URL must start with https:// or http://")
        if parts.username is not None or parts.password is not None:
            raise ValueError("host: no credentials in the URL; set username and password")
        if parts.path.rstrip("/") not in ("", "/redfish/v1") or parts.query or parts.fragment:
            raise ValueError(f"host: {host!r}: give scheme://host[:port] only")
        if not parts.hostname:
            raise ValueError(f"host: {host!r} names no host")
        try:
            url_port = parts.port
        except ValueError:
            raise ValueError(f"host: {host!r} has a bad port") from None
        if scheme is not None and scheme != parts.scheme:
            raise ValueError(f"options.scheme: {scheme} but host says {parts.scheme}; drop one")
        if port is not None and url_port is not None and port != url_port:
            raise ValueError(f"port: {port} but host says {url_port}; drop one")
        scheme = parts.scheme
        port = port if port is not None else url_port
        netloc = _host_part(parts.hostname)
    else:
        netloc = _host_part(host)
    if port is not None:
        if not 0 < port < 65536:
            raise ValueError(f"port: {port} is not a TCP port (1-65535)")
        netloc = f"{netloc}:{port}"
    if bmc.password is not None and not bmc.username:
        raise ValueError("username: required when a password is set")
    system = bmc.options.get("system")
    if system is not None and not system.strip():
        raise ValueError("options.system: empty; give the system's Id, name or UUID, or drop it")
    return RedfishSettings(
        url=f"{scheme or 'https'}://{netloc}",
        system=system,
        timeout=_seconds(bmc.options, "timeout", DEFAULT_TIMEOUT),
        cycle_wait=_seconds(bmc.options, "cycle_wait", DEFAULT_CYCLE_WAIT),
        verify_tls=not bmc.insecure_tls,
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything it wraps (cause, context, urllib3's `reason`, exception args)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = (current.__cause__, current.__context__, getattr(current, "reason", None))
        pending.extend(e for e in (*linked, *current.args) if isinstance(e, BaseException))


def bmc_message(exc: Any) -> str:
    """The BMC's own words in an HTTP error: @Message.ExtendedInfo messages, else error.message."""
    info = exc.extended_info
    entries = [info] if isinstance(info, dict) else info if isinstance(info, list) else []
    messages = [str(e["Message"]) for e in entries if isinstance(e, dict) and e.get("Message")]
    if messages:
        return "; ".join(dict.fromkeys(messages))
    if exc.detail:
        return str(exc.detail)
    return f"HTTP {exc.status_code} ({exc.code})"


def _connection_problem(exc: BaseException, timeout: float) -> tuple[str, bool]:
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, requests.exceptions.SSLError):
            return (
                "TLS failed (set insecure_tls for a self-signed certificate): "
                f"{cause.args[0] if cause.args else cause}",
                False,
            )
    if any(isinstance(cause, requests.exceptions.Timeout) for cause in causes):
        return f"no answer within {timeout:g} s", True
    for cause in causes:
        if isinstance(cause, requests.exceptions.RequestException):
            continue  # an OSError by inheritance only, its strerror is not the socket's
        if isinstance(cause, OSError) and isinstance(cause.strerror, str):
            return f"cannot connect: {cause.strerror.lower()}", True
    return f"cannot connect: {exc}", True


def translate(
    exc: Exception, address: str, action: str, *, credentials: bool, timeout: float
) -> PowerError:
    """The PowerError a sushy or requests exception means for the job."""

    def error(message: str, transient: bool = False) -> PowerError:
        return PowerError(NAME, address, action, message, transient=transient)

    if isinstance(exc, sushy_errors.AccessError):
        if exc.status_code == 401:
            if not credentials:
                return error("the BMC wants a username and password; none are set")
            return error("wrong username or password")
        return error(f"permission denied: {bmc_message(exc)}")
    if isinstance(exc, sushy_errors.HTTPError):
        if exc.status_code == 501:
            return Unsupported(NAME, address, action, bmc_message(exc))
        transient = exc.status_code >= 500 or exc.status_code in (408, 429)
        return error(bmc_message(exc), transient)
    if isinstance(exc, sushy_errors.InvalidParameterValueError | sushy_errors.MissingActionError):
        return Unsupported(NAME, address, action, str(exc))
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return error(f"the answer is not JSON, so this is no Redfish service: {exc}")
    if isinstance(exc, sushy_errors.ConnectionError | requests.exceptions.RequestException):
        message, transient = _connection_problem(exc, timeout)
        return error(message, transient)
    return error(str(exc))


class RedfishDriver:
    """One Redfish BMC; with several ComputerSystems, `options.system` picks the one driven."""

    name: ClassVar[str] = NAME
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = None
    fields: ClassVar[tuple[FieldDoc, ...]] = (
        FieldDoc("host", "BMC host name or address, or its URL https://host:port", True),
        FieldDoc("port", "TCP port (default: 443 for https, 80 for http)"),
        FieldDoc("username", "Redfish account (a Redfish session, else HTTP Basic)"),
        FieldDoc("password", "password of that account"),
        FieldDoc("insecure_tls", "accept any TLS certificate (BMCs with self-signed ones)"),
        FieldDoc(
            "options.system",
            "Id, name or UUID of the ComputerSystem to drive (needed when the BMC has several)",
        ),
        FieldDoc("options.scheme", "https (default) or http"),
        FieldDoc(
            "options.timeout", f"seconds to wait for each answer (default {DEFAULT_TIMEOUT:g})"
        ),
        FieldDoc(
            "options.cycle_wait",
            "seconds a cycle waits for off before powering on, where the BMC has no PowerCycle"
            f" (default {DEFAULT_CYCLE_WAIT:g})",
        ),
    )

    def __init__(self, bmc: Bmc) -> None:
        self.settings = parse_bmc(bmc)
        self._username = bmc.username or ""
        self._password = bmc.password or ""
        self._service: Any = None
        self._auth: Any = None
        self._connector: Any = None
        self._system_path: str | None = None
        self._action = ""

    def __repr__(self) -> str:
        return f"RedfishDriver(url={self.settings.url!r}, system={self.settings.system!r})"

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        parse_bmc(bmc)

    # --- the Protocol -------------------------------------------------------------------

    def power_state(self) -> PowerState:
        with self._talking("power state"):
            return self._power_of(self._system())

    def set_power(self, action: PowerAction) -> None:
        with self._talking(f"power {action}"):
            system = self._system()
            if action is PowerAction.CYCLE:
                self._cycle(system)
            elif action is PowerAction.RESET and self._power_of(system) is PowerState.OFF:
                self._reset(system, self._reset_type(system, PowerAction.ON))
            else:
                self._reset(system, self._reset_type(system, action))

    def set_boot_device(self, request: BootRequest) -> None:
        with self._talking(f"boot device {request.device}"):
            system = self._system()
            target = BOOT_TARGETS[request.device]
            allowed = system.boot.allowed_values if system.boot else None
            if allowed is not None and target not in allowed:
                raise self._unsupported(
                    f"this system offers no {target}; it allows {', '.join(allowed) or 'none'}",
                )
            mode = self._boot_mode(system, request)
            enabled = (
                sushy.BootSourceOverrideEnabled.CONTINUOUS
                if request.persistent
                else sushy.BootSourceOverrideEnabled.ONCE
            )
            system.set_system_boot_options(sushy.BootSource(target), enabled=enabled, mode=mode)
            log.info(
                "event=redfish.boot bmc=%s system=%s target=%s enabled=%s mode=%s",
                self.settings.address,
                system.identity,
                target,
                enabled.value,
                mode.value if mode is not None else "unchanged",
            )

    def insert_media(self, url: str) -> None:
        """Shows `url` in the CD drive; another image there is ejected first, the same is kept."""
        with self._talking("insert media"):
            media = self._cd(self._system())
            if media.inserted and media.image == url:
                return
            if media.inserted or media.image:
                media.eject_media()
            media.insert_media(url, inserted=True, write_protected=True)
            log.info(
                "event=redfish.media_inserted bmc=%s device=%s image=%s",
                self.settings.address,
                media.path,
                url,
            )

    def eject_media(self) -> None:
        """Empties the CD drive; nothing to do when it is empty."""
        with self._talking("eject media"):
            media = self._cd(self._system())
            if media.inserted or media.image:
                media.eject_media()
                log.info(
                    "event=redfish.media_ejected bmc=%s device=%s",
                    self.settings.address,
                    media.path,
                )

    def probe(self) -> Probe:
        with self._talking("probe"):
            service = self._root()
            system = self._system()
            details: dict[str, str] = {}

            def note(key: str, value: object) -> None:
                if value not in (None, "", []):
                    details[key] = ", ".join(value) if isinstance(value, list) else str(value)

            note("redfish_version", service.redfish_version)
            note("vendor", service.json.get("Vendor"))
            note("product", service.product)
            note("system", system.identity)
            note("system_name", system.name)
            note("manufacturer", system.manufacturer)
            note("model", system.model)
            note("power_state", system.json.get("PowerState"))
            try:
                reset_types = sorted(v.value for v in system.get_allowed_reset_system_values())
            except sushy_errors.MissingActionError:
                reset_types = []
            note("reset_types", reset_types)
            boot = system.json.get("Boot") or {}
            boot_targets = list(boot.get("BootSourceOverrideTarget@Redfish.AllowableValues", []))
            note("boot_targets", boot_targets)
            note("boot_mode", boot.get("BootSourceOverrideMode"))
            devices = list(self._media_devices(system))
            note(
                "virtual_media",
                [f"{d.identity} ({'/'.join(t.value for t in d.media_types)})" for d in devices],
            )
            return Probe(
                driver=NAME,
                power=bool(reset_types),
                boot_device="BootSourceOverrideTarget" in boot,
                virtual_media=any(self._is_cd(d) for d in devices),
                details=details,
            )

    def close(self) -> None:
        auth, connector = self._auth, self._connector
        self._service = self._auth = self._connector = None
        if auth is not None:
            try:
                auth.close()
            except (sushy_errors.SushyError, requests.exceptions.RequestException) as exc:
                log.debug(
                    "event=redfish.session_close_failed bmc=%s error=%s", self.settings.address, exc
                )
        if connector is not None:
            connector.close()

    # --- sushy ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _talking(self, action: str) -> Iterator[None]:
        self._action = action
        try:
            yield
        except PowerError:
            raise
        except (sushy_errors.SushyError, requests.exceptions.RequestException) as exc:
            raise translate(
                exc,
                self.settings.address,
                action,
                credentials=bool(self._username),
                timeout=self.settings.timeout,
            ) from exc

    def _error(self, message: str, *, transient: bool = False) -> PowerError:
        """A PowerError about the action in progress."""
        return PowerError(NAME, self.settings.address, self._action, message, transient=transient)

    def _unsupported(self, message: str) -> Unsupported:
        return Unsupported(NAME, self.settings.address, self._action, message)

    def _root(self) -> Any:
        if self._service is None:
            timeout = self.settings.timeout
            connector = sushy_connector.Connector(
                self.settings.url,
                verify=self.settings.verify_tls,
                server_side_retries=1,
                server_side_retries_delay=1,
                default_request_timeout=timeout,
                connect_timeout=min(timeout, CONNECT_TIMEOUT),
            )
            auth = sushy_auth.SessionOrBasicAuth(username=self._username, password=self._password)
            try:
                self._service = sushy.Sushy(self.settings.url, auth=auth, connector=connector)
            except BaseException:
                connector.close()
                raise
            self._auth, self._connector = auth, connector
        return self._service

    def _system(self) -> Any:
        service = self._root()
        if self._system_path is None:
            self._system_path = self._find_system(service)
        return service.get_system(self._system_path)

    def _find_system(self, service: Any) -> str:
        collection = service.get_system_collection()
        paths: list[str] = list(collection.members_identities)
        wanted = self.settings.system
        if wanted is None and len(paths) == 1:
            return paths[0]
        if wanted is not None:
            for path in paths:
                if path.rstrip("/").rsplit("/", 1)[-1] == wanted:
                    return path
        members = [collection.get_member(path) for path in paths[:_LISTED_SYSTEMS]]
        if wanted is not None:
            for member in members:
                if wanted in (member.name, member.uuid):
                    return str(member.path)
        listing = ", ".join(f"{m.identity} ({m.name})" for m in members) or "none"
        if len(paths) > len(members):
            listing += f" and {len(paths) - len(members)} more"
        if wanted is None:
            problem = f"the BMC has {len(paths)} systems, set options.system to one of: {listing}"
        else:
            problem = f"no system {wanted!r} (options.system); the BMC has: {listing}"
        raise self._error(problem)

    def _power_of(self, system: Any) -> PowerState:
        word = system.json.get("PowerState")
        if word is None:
            raise self._error("the BMC reports no PowerState", transient=True)
        try:
            return POWER_STATES[word]
        except KeyError:
            raise self._error(f"unknown PowerState {word!r}") from None

    def _reset_type(self, system: Any, action: PowerAction) -> str:
        allowed = {value.value for value in system.get_allowed_reset_system_values()}
        for choice in RESET_TYPES[action]:
            if choice in allowed:
                return choice
        raise self._unsupported(
            f"this system offers no {' or '.join(RESET_TYPES[action])};"
            f" it allows {', '.join(sorted(allowed)) or 'none'}",
        )

    def _reset(self, system: Any, reset_type: str) -> None:
        system.reset_system(sushy.ResetType(reset_type))
        log.info(
            "event=redfish.reset bmc=%s system=%s reset_type=%s",
            self.settings.address,
            system.identity,
            reset_type,
        )

    def _cycle(self, system: Any) -> None:
        """PowerCycle where offered; else off (waiting for it) then on; on when already off."""
        power_on = self._reset_type(system, PowerAction.ON)
        if self._power_of(system) is PowerState.OFF:
            self._reset(system, power_on)
            return
        allowed = {value.value for value in system.get_allowed_reset_system_values()}
        if "PowerCycle" in allowed:
            self._reset(system, "PowerCycle")
            return
        self._reset(system, self._reset_type(system, PowerAction.OFF))
        deadline = time.monotonic() + self.settings.cycle_wait
        while self._power_of(system) is not PowerState.OFF:
            if time.monotonic() >= deadline:
                raise self._error(
                    f"still on {self.settings.cycle_wait:g} s after power off; not powered on"
                    " (options.cycle_wait)",
                    transient=True,
                )
            time.sleep(CYCLE_POLL)
            system.refresh()
        self._reset(system, power_on)

    def _boot_mode(self, system: Any, request: BootRequest) -> Any:
        """The BootSourceOverrideMode to send; None when the system is in it already or shows
        no mode at all (it cannot tell UEFI from legacy, or will not say)."""
        boot = system.json.get("Boot") or {}
        current = boot.get("BootSourceOverrideMode")
        wanted = "UEFI" if request.efi else "Legacy"
        if current is None or current == wanted:
            return None
        allowed = boot.get("BootSourceOverrideMode@Redfish.AllowableValues")
        if allowed is not None and wanted not in allowed:
            raise self._unsupported(
                f"this system offers no {wanted} boot mode;"
                f" it allows {', '.join(allowed) or 'none'}",
            )
        return sushy.BootSourceOverrideMode(wanted)

    @staticmethod
    def _is_cd(media: Any) -> bool:
        return any(kind.value in CD_MEDIA_TYPES for kind in media.media_types)

    def _media_devices(self, system: Any) -> Iterator[Any]:
        """Virtual media of the system, then of its managers (older BMCs), each device once."""
        seen: set[str] = set()

        def owners() -> Iterator[Any]:
            yield system
            try:
                managers = system.managers
            except sushy_errors.MissingAttributeError:
                return
            yield from managers

        def collections() -> Iterator[Any]:
            for owner in owners():
                try:
                    collection = owner.virtual_media
                except sushy_errors.MissingAttributeError:
                    continue
                yield collection

        for collection in collections():
            for path in collection.members_identities:
                if path not in seen:
                    seen.add(path)
                    yield collection.get_member(path)

    def _cd(self, system: Any) -> Any:
        found = []
        for media in self._media_devices(system):
            if self._is_cd(media):
                return media
            found.append(f"{media.identity} ({'/'.join(t.value for t in media.media_types)})")
        raise self._unsupported(
            f"no CD or DVD virtual media; the BMC has {', '.join(found) or 'none'}",
        )
