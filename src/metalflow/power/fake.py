"""An in-process BMC for tests of the power jobs and workflows: no network, scripted trouble.

State lives in a module-level registry keyed by `host`, shared by every driver made for that
host (a driver is made per job), behind one lock. Knobs, all in `options`:
- `state`: the power state a host starts with (on|off, default off).
- `delay`: seconds before a requested power state shows in `power_state`.
- `fail`: an action that always raises a PowerError: `status`, `power` (any power action) or
  `power ACTION` (e.g. `power off`), `boot-device`, `insert-media`, `eject-media`, `probe`.
- `transient_failures`: the first N calls on the host, whatever they are, raise a transient
  PowerError; counted from the first driver made for the host.
- `never`: a power state (on|off) that requests are accepted for but never reach.
`inspect(host)` shows a test what the "BMC" was asked; `forget()` empties the registry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from time import monotonic
from typing import ClassVar

from metalflow.power.driver import (
    TARGET_STATE,
    Bmc,
    BootRequest,
    FieldDoc,
    PowerAction,
    PowerError,
    PowerState,
    Probe,
)

ACTIONS = frozenset(
    {"status", "power", "boot-device", "insert-media", "eject-media", "probe"}
    | {f"power {action}" for action in PowerAction}
)
"""What `fail` may name; also the `action` of every PowerError this driver raises."""


@dataclass
class _Host:
    power: PowerState
    transient_left: int
    pending: PowerState | None = None
    shows_at: float = 0.0
    boot: BootRequest | None = None
    media: str | None = None
    calls: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FakeBmc:
    """What a fake BMC holds now, for assertions."""

    power: PowerState
    boot: BootRequest | None
    media: str | None
    calls: tuple[str, ...]


_hosts: dict[str, _Host] = {}
_lock = threading.Lock()


def inspect(host: str) -> FakeBmc:
    """The host's state; KeyError if no driver was made for it."""
    with _lock:
        found = _hosts[host]
        _settle(found)
        return FakeBmc(found.power, found.boot, found.media, tuple(found.calls))


def forget(host: str | None = None) -> None:
    """Drop one host's state, or every host's."""
    with _lock:
        if host is None:
            _hosts.clear()
        else:
            _hosts.pop(host, None)


def _settle(host: _Host) -> None:
    if host.pending is not None and monotonic() >= host.shows_at:
        host.power, host.pending = host.pending, None


@dataclass(frozen=True, slots=True)
class _Knobs:
    state: PowerState
    delay: float
    fail: str | None
    transient_failures: int
    never: PowerState | None


def _knobs(bmc: Bmc) -> _Knobs:
    options = bmc.options

    def power(name: str, default: str | None) -> PowerState | None:
        raw = options.get(name, default)
        if raw is None:
            return None
        try:
            return PowerState(raw)
        except ValueError:
            raise ValueError(f"options.{name}: {raw!r} is neither 'on' nor 'off'") from None

    def number(name: str, kind: type[float] | type[int]) -> float:
        raw = options.get(name, "0")
        try:
            value = kind(raw)
        except ValueError:
            value = -1
        if not value >= 0:
            raise ValueError(f"options.{name}: {raw!r} is not a number >= 0")
        return value

    fail = options.get("fail")
    if fail is not None and fail not in ACTIONS:
        raise ValueError(f"options.fail: {fail!r} is none of {', '.join(sorted(ACTIONS))}")
    return _Knobs(
        state=power("state", PowerState.OFF.value) or PowerState.OFF,
        delay=number("delay", float),
        fail=fail,
        transient_failures=int(number("transient_failures", int)),
        never=power("never", None),
    )


class FakeDriver:
    name: ClassVar[str] = "fake"
    holds_workflows: ClassVar[bool] = True
    syncs_state: ClassVar[bool] = True
    default_timeout: ClassVar[float | None] = 30.0
    fields: ClassVar[tuple[FieldDoc, ...]] = (
        FieldDoc("host", "any name; drivers made with the same host share one state", True),
        FieldDoc("options.state", "the power state the host starts with (on|off, default off)"),
        FieldDoc("options.delay", "seconds before a requested power state shows"),
        FieldDoc("options.fail", "an action that always fails, e.g. `power on` or `status`"),
        FieldDoc("options.transient_failures", "how many first calls fail transiently"),
        FieldDoc("options.never", "a power state (on|off) that is never reached"),
    )

    def __init__(self, bmc: Bmc) -> None:
        self._name = bmc.host
        self._knobs = _knobs(bmc)
        with _lock:
            if bmc.host not in _hosts:
                _hosts[bmc.host] = _Host(self._knobs.state, self._knobs.transient_failures)

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        _knobs(bmc)

    def _call(self, action: str) -> _Host:
        """The host's state after recording the call, or its scripted failure. Hold _lock."""
        host = _hosts[self._name]
        host.calls.append(action)
        if self._knobs.fail in (action, action.split()[0]):
            raise PowerError(self.name, self._name, action, f"failing {action} as configured")
        if host.transient_left > 0:
            host.transient_left -= 1
            raise PowerError(
                self.name, self._name, action, "a transient failure as configured", transient=True
            )
        _settle(host)
        return host

    def power_state(self) -> PowerState:
        with _lock:
            return self._call("status").power

    def set_power(self, action: PowerAction) -> None:
        with _lock:
            host = self._call(f"power {action}")
            target = TARGET_STATE[action]
            if target is self._knobs.never:
                return
            host.pending, host.shows_at = target, monotonic() + self._knobs.delay
            _settle(host)

    def set_boot_device(self, request: BootRequest) -> None:
        with _lock:
            self._call("boot-device").boot = request

    def insert_media(self, url: str) -> None:
        with _lock:
            self._call("insert-media").media = url

    def eject_media(self) -> None:
        with _lock:
            self._call("eject-media").media = None

    def probe(self) -> Probe:
        with _lock:
            self._call("probe")
        return Probe(self.name, power=True, boot_device=True, virtual_media=True)

    def close(self) -> None:
        """No session."""
