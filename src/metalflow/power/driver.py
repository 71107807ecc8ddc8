"""What every BMC driver offers, and the words the rest of metalflow uses for it.

A driver is synchronous (pyghmi and sushy block), made per BMC from a `Bmc`, and only asks the
BMC: it does not wait for a state to be reached, except inside one action the BMC has no single
command for (a Redfish cycle without PowerCycle is ForceOff, wait for off, On). The power job
(power/steps.py, run by power/runner.py) calls it in a thread, verifies by polling
`power_state`, retries `PowerError`s that are `transient`, and keeps one job per BMC at a
time. Drivers translate at the edge: module-level maps from the BMC's words to these enums, and
every library error wrapped in a `PowerError` naming the driver, the BMC and the action.
`validate` never touches the network (BMCs are too fragile to be contacted on every apply).

Drivers are found by name in the `metalflow.power` entry-point group (pyproject.toml), loaded
only when a machine uses them.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Protocol


class PowerState(enum.StrEnum):
    ON = "on"
    OFF = "off"


class PowerAction(enum.StrEnum):
    ON = "on"
    OFF = "off"
    SOFT_OFF = "soft-off"
    """ACPI shutdown: the OS decides; the job verifies `off` like any other."""
    CYCLE = "cycle"
    """Off, then on: on when it was off."""
    RESET = "reset"
    """A hard reset, without going through off; the state stays (or becomes) on."""


TARGET_STATE: Mapping[PowerAction, PowerState] = {
    PowerAction.ON: PowerState.ON,
    PowerAction.OFF: PowerState.OFF,
    PowerAction.SOFT_OFF: PowerState.OFF,
    PowerAction.CYCLE: PowerState.ON,
    PowerAction.RESET: PowerState.ON,
}
"""The state a job waits for after each action."""


class BootDevice(enum.StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CDROM = "cdrom"
    BIOS = "bios"
    """The firmware's setup screen."""


@dataclass(frozen=True, slots=True)
class BootRequest:
    device: BootDevice
    persistent: bool = False
    """Every boot from now on, else only the next one."""
    efi: bool = True
    """UEFI boot, else legacy BIOS (where the BMC can tell the two apart)."""


@dataclass(frozen=True, slots=True)
class Bmc:
    """One BMC as a driver needs it, the password already decrypted (never log this object)."""

    driver: str
    host: str
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    insecure_tls: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    """Per-driver settings (rufio's providerOptions): e.g. redfish `system`, webhook `url`."""


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """A BMC field a driver reads, for `metalflow bmc drivers` and error messages."""

    name: str
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Probe:
    """What a BMC says it can do (`metalflow bmc probe`)."""

    driver: str
    power: bool
    boot_device: bool
    virtual_media: bool
    details: Mapping[str, str] = field(default_factory=dict)
    """Driver-specific facts: Redfish version and vendor, IPMI cipher suites, ..."""


class PowerError(Exception):
    """A BMC refused or could not be reached. `message` is the BMC's own words where it gave any;
    `transient` says a retry may help (timeouts, connection resets, busy BMCs)."""

    def __init__(
        self, driver: str, host: str, action: str, message: str, *, transient: bool = False
    ) -> None:
        super().__init__(f"{driver} BMC {host}: {action}: {message}")
        self.driver = driver
        self.host = host
        self.action = action
        self.message = message
        self.transient = transient


class Unsupported(PowerError):
    """The driver or this BMC has no such operation (never retried)."""


class Driver(Protocol):
    name: ClassVar[str]
    fields: ClassVar[tuple[FieldDoc, ...]]
    holds_workflows: ClassVar[bool]
    """A workflow that powers the machine through this driver waits for its jobs; False where a
    job only records what an operator is asked to do."""
    syncs_state: ClassVar[bool]
    """The periodic sync reads the BMC's state; False where there is no BMC to ask."""
    default_timeout: ClassVar[float | None]
    """Seconds for a power step, for BMCs whose state changes at once; None: `Limits`' own."""

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        """Raise ValueError naming the field when `bmc` cannot work with this driver; offline."""

    def power_state(self) -> PowerState: ...

    def set_power(self, action: PowerAction) -> None:
        """Ask for `action`; returns once the BMC accepted it, not when it is done."""

    def set_boot_device(self, request: BootRequest) -> None: ...

    def insert_media(self, url: str) -> None:
        """Virtual media: attach the image at `url` as a CD."""

    def eject_media(self) -> None: ...

    def probe(self) -> Probe: ...

    def close(self) -> None:
        """End the BMC session, if the driver keeps one."""


class DriverFactory(Protocol):
    name: ClassVar[str]
    fields: ClassVar[tuple[FieldDoc, ...]]
    holds_workflows: ClassVar[bool]
    syncs_state: ClassVar[bool]
    default_timeout: ClassVar[float | None]

    def __call__(self, bmc: Bmc) -> Driver: ...

    def validate(self, bmc: Bmc) -> None: ...


def seconds_option(bmc: Bmc, name: str, default: float) -> float:
    """`bmc.options[name]` as a positive number of seconds; ValueError naming the field."""
    raw = bmc.options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"options.{name}: {raw!r} is not a positive number of seconds")
    return value


MAX_HOST_NAME = 253
"""Bytes in a DNS name written with dots, the trailing one not counted (RFC 1035 §2.3.4)."""
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")


def is_host_name(name: str) -> bool:
    """`name` is a DNS host name: RFC 1123 labels (letters, digits, inner hyphens, 63 bytes
    each), an optional trailing dot. An all-digit last label is refused: "10.0.0.300" is a
    mistyped address, not a name anything resolves."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare.isascii() or len(bare) > MAX_HOST_NAME:
        return False
    labels = bare.split(".")
    return not labels[-1].isdigit() and all(_HOST_LABEL.match(label) for label in labels)


def check_host(host: str, field: str = "host") -> None:
    """ValueError naming `field` unless `host` is an IP address or a DNS host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_host_name(host):
            raise ValueError(
                f"{field}: {host!r} is neither an IP address nor a host name; write the BMC's"
                " address (192.0.2.10, 2001:db8::10) or DNS name (letters, digits and inner"
                " hyphens between dots, e.g. bmc-7.example)"
            ) from None


ENTRY_POINT_GROUP = "metalflow.power"


@functools.cache
def _registered() -> dict[str, EntryPoint]:
    """Read once per process: scanning the installed packages' entry points costs ~9 ms, which
    was ~40 % of a sync read (bench/power_sync.py)."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def driver_names() -> list[str]:
    return sorted(_registered())


@functools.cache
def driver_class(name: str) -> DriverFactory:
    """The driver registered as `name`; ValueError listing the known ones otherwise."""
    point = _registered().get(name)
    if point is None:
        raise ValueError(f"no BMC driver {name!r}; known: {', '.join(driver_names())}")
    loaded: DriverFactory = point.load()
    return loaded


def known_driver(name: str) -> DriverFactory | None:
    """The driver registered as `name`, or None: for the callers that leave refusing an
    unknown driver to the job that would use it."""
    try:
        return driver_class(name)
    except ValueError:
        return None
