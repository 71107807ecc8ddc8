"""Machine lifecycle: states, events and the one table of legal moves."""

from __future__ import annotations

from enum import StrEnum

from metalflow.statemachine import TransitionTable


class MachineState(StrEnum):
    NEW = "new"
    INSPECTING = "inspecting"
    READY = "ready"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    ACTIVE = "active"
    """Provisioned, and its OS phoned home: the workflow's real end."""
    DEPROVISIONING = "deprovisioning"
    FAILED = "failed"
    MAINTENANCE = "maintenance"
    RESCUE = "rescue"


class MachineEvent(StrEnum):
    INSPECT = "inspect"
    INSPECTED = "inspected"
    PROVISION = "provision"
    PROVISIONED = "provisioned"
    BOOTED = "booted"
    DEPROVISION = "deprovision"
    DEPROVISIONED = "deprovisioned"
    FAIL = "fail"
    MAINTENANCE = "maintenance"
    RESCUE = "rescue"
    RELEASE = "release"


S, E = MachineState, MachineEvent

LIFECYCLE = TransitionTable[MachineState, MachineEvent](
    "machine",
    {
        S.NEW: {
            E.INSPECT: S.INSPECTING,
            E.PROVISION: S.PROVISIONING,
            E.RELEASE: S.READY,
            E.MAINTENANCE: S.MAINTENANCE,
        },
        S.INSPECTING: {E.INSPECTED: S.READY, E.FAIL: S.FAILED},
        S.READY: {
            E.INSPECT: S.INSPECTING,
            E.PROVISION: S.PROVISIONING,
            E.MAINTENANCE: S.MAINTENANCE,
            E.RESCUE: S.RESCUE,
        },
        S.PROVISIONING: {E.PROVISIONED: S.PROVISIONED, E.FAIL: S.FAILED},
        S.PROVISIONED: {
            E.BOOTED: S.ACTIVE,
            E.PROVISION: S.PROVISIONING,
            E.DEPROVISION: S.DEPROVISIONING,
            E.MAINTENANCE: S.MAINTENANCE,
            E.RESCUE: S.RESCUE,
        },
        S.ACTIVE: {
            E.PROVISION: S.PROVISIONING,
            E.DEPROVISION: S.DEPROVISIONING,
            E.MAINTENANCE: S.MAINTENANCE,
            E.RESCUE: S.RESCUE,
        },
        S.DEPROVISIONING: {E.DEPROVISIONED: S.READY, E.FAIL: S.FAILED},
        S.FAILED: {
            E.PROVISION: S.PROVISIONING,
            E.DEPROVISION: S.DEPROVISIONING,
            E.INSPECT: S.INSPECTING,
            E.MAINTENANCE: S.MAINTENANCE,
            E.RESCUE: S.RESCUE,
            E.RELEASE: S.READY,
        },
        S.MAINTENANCE: {E.RELEASE: S.READY},
        S.RESCUE: {E.RELEASE: S.PROVISIONED},
    },
)

BUSY_STATES = frozenset({S.INSPECTING, S.PROVISIONING, S.DEPROVISIONING})
"""States in which a workflow or inspection owns the machine: no delete, no manual moves."""

TARGET_STATE = {S.INSPECTING: S.READY, S.PROVISIONING: S.PROVISIONED, S.DEPROVISIONING: S.READY}
"""Transient state → the stable state it is heading for (Ironic's target_provision_state)."""
