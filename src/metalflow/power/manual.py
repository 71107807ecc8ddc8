"""A machine without a BMC: metalflow records what it asks for, an operator presses the buttons.

Every request succeeds at once and does nothing here; the event log holds the intent for the
operator to act on. Nothing can read the machine's real state, so `power_state` answers the last
state asked for. A driver is made per job, so that state lives outside it: the job layer stores
it in `options.state` after each request and feeds it back to the next driver (off when unset).
"""

from __future__ import annotations

from typing import ClassVar

from metalflow.power.driver import (
    TARGET_STATE,
    Bmc,
    BootRequest,
    FieldDoc,
    PowerAction,
    PowerState,
    Probe,
    Unsupported,
)


def _state(bmc: Bmc) -> PowerState:
    raw = bmc.options.get("state", PowerState.OFF.value)
    try:
        return PowerState(raw)
    except ValueError:
        raise ValueError(f"options.state: {raw!r} is neither 'on' nor 'off'") from None


class ManualDriver:
    name: ClassVar[str] = "manual"
    holds_workflows: ClassVar[bool] = False
    syncs_state: ClassVar[bool] = False
    default_timeout: ClassVar[float | None] = 5.0
    fields: ClassVar[tuple[FieldDoc, ...]] = (
        FieldDoc(
            "options.state",
            "the power state last asked for (on|off, default off), kept by metalflow",
        ),
    )

    def __init__(self, bmc: Bmc) -> None:
        self._host = bmc.host
        self._state = _state(bmc)

    @classmethod
    def validate(cls, bmc: Bmc) -> None:
        _state(bmc)

    def power_state(self) -> PowerState:
        return self._state

    def set_power(self, action: PowerAction) -> None:
        self._state = TARGET_STATE[action]

    def set_boot_device(self, request: BootRequest) -> None:
        """The operator sets it in the firmware; the event log says which."""

    def insert_media(self, url: str) -> None:
        raise Unsupported(self.name, self._host, "insert-media", "there is no BMC to fetch it")

    def eject_media(self) -> None:
        raise Unsupported(self.name, self._host, "eject-media", "there is no BMC")

    def probe(self) -> Probe:
        return Probe(
            driver=self.name,
            power=False,
            boot_device=False,
            virtual_media=False,
            details={"operator": "acts on every power and boot device request by hand"},
        )

    def close(self) -> None:
        """No session."""
