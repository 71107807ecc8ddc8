"""One power job's steps run against one driver: ask, then verify by polling until the BMC
reports the wanted state, retrying transient errors, every step reported.

Synchronous (the runner calls it in a thread, one job per BMC at a time) and free of the
database: time, sleeping, reporting and cancellation come in as functions, so the tests drive
it with a stand-in clock and driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metalflow.power.driver import (
    TARGET_STATE,
    BootDevice,
    BootRequest,
    Driver,
    PowerAction,
    PowerError,
    PowerState,
)


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a job asks of a BMC."""

    power: PowerAction | None = None
    boot: BootRequest | None = None

    def describe(self) -> str:
        if self.power is not None:
            return f"power {self.power}"
        assert self.boot is not None
        how = "persistent" if self.boot.persistent else "once"
        mode = "efi" if self.boot.efi else "legacy"
        return f"boot device {self.boot.device} ({how}, {mode})"

    def as_dict(self) -> dict[str, Any]:
        if self.power is not None:
            return {"power": self.power.value}
        assert self.boot is not None
        return {
            "boot_device": self.boot.device.value,
            "persistent": self.boot.persistent,
            "efi": self.boot.efi,
        }


def step_from(raw: Mapping[str, Any]) -> Step:
    """The inverse of `Step.as_dict` (a job's steps are stored as JSON)."""
    if "power" in raw:
        return Step(power=PowerAction(raw["power"]))
    return Step(
        boot=BootRequest(
            BootDevice(raw["boot_device"]),
            persistent=bool(raw.get("persistent", False)),
            efi=bool(raw.get("efi", True)),
        )
    )


NETBOOT = (
    Step(power=PowerAction.OFF),
    Step(boot=BootRequest(BootDevice.PXE, persistent=False)),
    Step(power=PowerAction.ON),
)
"""A workflow's PREPARING: off, network boot once, on."""


def boot_from_disk(efi: bool, reboot: bool) -> tuple[Step, ...]:
    """A workflow's POST: the disk from now on, and a reboot into it when asked."""
    disk = Step(boot=BootRequest(BootDevice.DISK, persistent=True, efi=efi))
    return (disk, Step(power=PowerAction.RESET)) if reboot else (disk,)


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float = 120.0
    """Seconds for a power step to reach its state (per machine: `bmc.options.power_timeout`)."""
    soft_off_timeout: float = 300.0
    """An OS may take minutes to shut down."""
    poll_interval: float = 1.0
    retries: int = 3
    """Transient errors tolerated per step before it fails."""
    backoff: float = 2.0


@dataclass(slots=True)
class StepOutcome:
    step: Step
    ok: bool
    message: str
    seconds: float
    retries: int = 0


@dataclass(slots=True)
class JobOutcome:
    ok: bool
    message: str
    steps: list[StepOutcome] = field(default_factory=list)
    power_state: PowerState | None = None


class Cancelled(Exception):
    """The job was cancelled between two requests to the BMC."""


@dataclass(slots=True)
class Runner:
    """Runs steps on one driver. `report(kind, data)` gets `power.step.started`,
    `.retrying`, `.succeeded`, `.failed`; `cancelled()` is asked before every request."""

    driver: Driver
    limits: Limits
    report: Callable[[str, dict[str, Any]], None]
    cancelled: Callable[[], bool] = lambda: False
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    last_state: PowerState | None = None
    _asked: PowerAction | None = None
    """What this step already asked of the BMC: a retry after a transient error only polls."""

    def run(self, steps: tuple[Step, ...] | list[Step]) -> JobOutcome:
        outcome = JobOutcome(ok=True, message="")
        for index, step in enumerate(steps):
            try:
                result = self._step(index, step)
            except Cancelled:
                outcome.ok, outcome.message = False, "cancelled"
                break
            outcome.steps.append(result)
            if not result.ok:
                outcome.ok, outcome.message = False, f"{step.describe()}: {result.message}"
                break
        else:
            outcome.message = "; ".join(result.message for result in outcome.steps)
        outcome.power_state = self.last_state
        return outcome

    def _step(self, index: int, step: Step) -> StepOutcome:
        started = self.clock()
        self.report("power.step.started", {"step": index, "what": step.describe()})
        retries = 0
        self._asked = None
        while True:
            try:
                message = self._attempt(step, started)
                break
            except PowerError as exc:
                if not exc.transient or retries >= self.limits.retries:
                    seconds = self.clock() - started
                    self.report(
                        "power.step.failed",
                        {
                            "step": index,
                            "what": step.describe(),
                            "message": exc.message,
                            "seconds": round(seconds, 3),
                        },
                    )
                    return StepOutcome(step, False, exc.message, seconds, retries)
                retries += 1
                self.report(
                    "power.step.retrying",
                    {
                        "step": index,
                        "what": step.describe(),
                        "message": exc.message,
                        "retry": retries,
                    },
                )
                self.sleep(self.limits.backoff * retries)
            except TimeoutError as exc:
                seconds = self.clock() - started
                self.report(
                    "power.step.failed",
                    {
                        "step": index,
                        "what": step.describe(),
                        "message": str(exc),
                        "seconds": round(seconds, 3),
                    },
                )
                return StepOutcome(step, False, str(exc), seconds, retries)
        seconds = self.clock() - started
        self.report(
            "power.step.succeeded",
            {
                "step": index,
                "what": step.describe(),
                "message": message,
                "seconds": round(seconds, 3),
            },
        )
        return StepOutcome(step, True, message, seconds, retries)

    def _attempt(self, step: Step, started: float) -> str:
        if self.cancelled():
            raise Cancelled
        if step.boot is not None:
            self.driver.set_boot_device(step.boot)
            return f"{step.describe()} set"
        assert step.power is not None
        target = TARGET_STATE[step.power]
        action = self._asked
        if action is None:
            action = step.power
            state = self._state()
            if action in (PowerAction.ON, PowerAction.OFF, PowerAction.SOFT_OFF) and (
                state is target
            ):
                return f"already {target}"
            if action is PowerAction.CYCLE and state is PowerState.OFF:
                action = PowerAction.ON
            self.driver.set_power(action)
            self._asked = action
        timeout = (
            self.limits.soft_off_timeout if action is PowerAction.SOFT_OFF else self.limits.timeout
        )
        while True:
            state = self._state()
            if state is target:
                return f"{target} after {self.clock() - started:.1f}s"
            if self.clock() - started >= timeout:
                raise TimeoutError(
                    f"the BMC still reports {state} {timeout:.0f}s after {action} was asked"
                    f" (wanted {target}); raise bmc.options.power_timeout if it is slow"
                )
            if self.cancelled():
                raise Cancelled
            self.sleep(self.limits.poll_interval)

    def _state(self) -> PowerState:
        self.last_state = self.driver.power_state()
        return self.last_state
