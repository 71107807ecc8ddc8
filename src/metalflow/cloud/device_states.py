"""A device's state as Equinix Metal names it, read from what metalflow already knows: the
device's phase (what the tenant last asked for), its workflow, its machine and its power jobs.

Derived on every read instead of stored and kept in step by hooks: the workflow engine, the
power runner and the metadata service already record each of these facts in their own
transactions, and a second copy of them would have to follow every one of those writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """What the device is doing as far as the tenant asked: stored on the device."""

    PROVISIONING = "provisioning"
    REINSTALLING = "reinstalling"
    DEPROVISIONING = "deprovisioning"


class DeviceState(StrEnum):
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"
    POWERING_ON = "powering_on"
    POWERING_OFF = "powering_off"
    REINSTALLING = "reinstalling"
    DEPROVISIONING = "deprovisioning"


RUNNING_WORKFLOW = frozenset({"PREPARING", "RUNNING", "POST"})
FAILED_WORKFLOW = frozenset({"FAILED", "TIMEOUT", "CANCELLED"})
POWERING_ON = frozenset({"on", "cycle", "reset"})
POWERING_OFF = frozenset({"off", "soft-off"})


@dataclass(frozen=True)
class Observed:
    phase: Phase
    workflow_state: str | None
    """The state of the device's latest workflow (install, reinstall or wipe)."""
    booted: bool
    """Its machine is `active`: the installed OS phoned home."""
    phones_home: bool
    """The OS runs cloud-init, so the install ends when it phones home, not with the workflow."""
    power_state: str | None
    """As the BMC last reported it; None when never read (or no BMC)."""
    power_pending: str | None = None
    """The power action of a queued or running power job of the device's machine."""


def device_state(seen: Observed) -> DeviceState:
    if seen.workflow_state in FAILED_WORKFLOW:
        return DeviceState.FAILED
    if seen.phase is Phase.DEPROVISIONING:
        return DeviceState.DEPROVISIONING
    if seen.workflow_state != "SUCCESS" or (seen.phones_home and not seen.booted):
        if seen.phase is Phase.REINSTALLING:
            return DeviceState.REINSTALLING
        if seen.workflow_state in (None, "PENDING"):
            return DeviceState.QUEUED
        return DeviceState.PROVISIONING
    if seen.power_pending in POWERING_ON:
        return DeviceState.POWERING_ON
    if seen.power_pending in POWERING_OFF:
        return DeviceState.POWERING_OFF
    if seen.power_state == "off":
        return DeviceState.INACTIVE
    return DeviceState.ACTIVE


def provisioning_percentage(finished_actions: int, total_actions: int, state: DeviceState) -> int:
    """Equinix's `provisioning_percentage`: the install workflow's finished share of actions,
    100 once active (a workflow that ended but waits for the phone-home says 99)."""
    if state in (DeviceState.ACTIVE, DeviceState.INACTIVE):
        return 100
    if total_actions <= 0:
        return 0
    return min(99, finished_actions * 100 // total_actions)
