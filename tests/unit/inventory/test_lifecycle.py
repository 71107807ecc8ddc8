"""The machine lifecycle as a user meets it: every (state, event) pair, moved or refused."""

from __future__ import annotations

import itertools

import pytest

from metalflow.inventory.lifecycle import (
    BUSY_STATES,
    LIFECYCLE,
    TARGET_STATE,
    MachineEvent,
    MachineState,
)
from metalflow.statemachine import IllegalTransition

MOVES = {
    ("new", "inspect"): "inspecting",
    ("new", "provision"): "provisioning",
    ("new", "release"): "ready",
    ("new", "maintenance"): "maintenance",
    ("inspecting", "inspected"): "ready",
    ("inspecting", "fail"): "failed",
    ("ready", "inspect"): "inspecting",
    ("ready", "provision"): "provisioning",
    ("ready", "maintenance"): "maintenance",
    ("ready", "rescue"): "rescue",
    ("provisioning", "provisioned"): "provisioned",
    ("provisioning", "fail"): "failed",
    ("provisioned", "booted"): "active",
    ("provisioned", "provision"): "provisioning",
    ("provisioned", "deprovision"): "deprovisioning",
    ("provisioned", "maintenance"): "maintenance",
    ("provisioned", "rescue"): "rescue",
    ("active", "provision"): "provisioning",
    ("active", "deprovision"): "deprovisioning",
    ("active", "maintenance"): "maintenance",
    ("active", "rescue"): "rescue",
    ("deprovisioning", "deprovisioned"): "ready",
    ("deprovisioning", "fail"): "failed",
    ("failed", "provision"): "provisioning",
    ("failed", "deprovision"): "deprovisioning",
    ("failed", "inspect"): "inspecting",
    ("failed", "maintenance"): "maintenance",
    ("failed", "rescue"): "rescue",
    ("failed", "release"): "ready",
    ("maintenance", "release"): "ready",
    ("rescue", "release"): "provisioned",
}
"""Every legal move, written out by hand: any other pair is refused."""


@pytest.mark.parametrize(("state", "event"), list(itertools.product(MachineState, MachineEvent)))
def test_each_move_is_the_documented_one_or_refused_by_name(
    state: MachineState, event: MachineEvent
) -> None:
    expected = MOVES.get((state.value, event.value))
    assert LIFECYCLE.can(state, event) is (expected is not None)
    if expected is not None:
        assert LIFECYCLE.next(state, event).value == expected
    else:
        with pytest.raises(IllegalTransition) as info:
            LIFECYCLE.next(state, event)
        assert str(info.value).startswith(f"machine in state {state.value} cannot {event.value}")


def test_a_refusal_lists_the_events_allowed_instead() -> None:
    with pytest.raises(
        IllegalTransition, match=r"^machine in state rescue cannot provision"
    ) as info:
        LIFECYCLE.next(MachineState.RESCUE, MachineEvent.PROVISION)
    assert str(info.value).endswith("; allowed from rescue: release")


def test_every_machine_state_is_reachable_and_can_leave() -> None:
    reached = {MachineState.NEW}
    frontier = [MachineState.NEW]
    while frontier:
        state = frontier.pop()
        leaving = [LIFECYCLE.next(state, e) for e in MachineEvent if LIFECYCLE.can(state, e)]
        assert leaving, f"{state} is a dead end"
        for target in set(leaving) - reached:
            reached.add(target)
            frontier.append(target)
    assert reached == set(MachineState)


def test_busy_states_and_where_they_head() -> None:
    assert {s.value for s in BUSY_STATES} == {"inspecting", "provisioning", "deprovisioning"}
    assert {s.value: t.value for s, t in TARGET_STATE.items()} == {
        "inspecting": "ready",
        "provisioning": "provisioned",
        "deprovisioning": "ready",
    }


def test_provision_cycle() -> None:
    state = MachineState.READY
    for event in (
        MachineEvent.PROVISION,
        MachineEvent.PROVISIONED,
        MachineEvent.DEPROVISION,
        MachineEvent.DEPROVISIONED,
    ):
        state = LIFECYCLE.next(state, event)
    assert state is MachineState.READY
