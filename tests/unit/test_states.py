"""Lifecycle and workflow transition tables, and the retry decision."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.inventory.lifecycle import (
    BUSY_STATES,
    LIFECYCLE,
    TARGET_STATE,
    MachineEvent,
    MachineState,
)
from metalflow.statemachine import IllegalTransition
from metalflow.workflows.states import (
    ACTION,
    FINAL_WORKFLOW_STATES,
    MAX_BACKOFF,
    WORKFLOW,
    ActionState,
    GiveUp,
    Retry,
    WorkflowEvent,
    WorkflowState,
    after_failed_attempt,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@given(st.sampled_from(MachineState), st.sampled_from(MachineEvent))
def test_lifecycle_moves_are_table_entries_or_errors(
    state: MachineState, event: MachineEvent
) -> None:
    if LIFECYCLE.can(state, event):
        assert LIFECYCLE.next(state, event) == LIFECYCLE.table[state][event]
    else:
        with pytest.raises(IllegalTransition) as info:
            LIFECYCLE.next(state, event)
        assert state.value in str(info.value) and event.value in str(info.value)


def test_every_machine_state_is_reachable_and_can_leave() -> None:
    reached = {MachineState.NEW}
    frontier = [MachineState.NEW]
    while frontier:
        for target in LIFECYCLE.table.get(frontier.pop(), {}).values():
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(MachineState)
    assert all(LIFECYCLE.table.get(state) for state in MachineState)


def test_busy_states_head_for_their_target() -> None:
    for state in BUSY_STATES:
        assert TARGET_STATE[state] in LIFECYCLE.table[state].values()
        assert MachineState.FAILED in LIFECYCLE.table[state].values()


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


@given(st.sampled_from(WorkflowState), st.sampled_from(WorkflowEvent))
def test_final_workflow_states_only_resume_or_rerun(
    state: WorkflowState, event: WorkflowEvent
) -> None:
    if state in FINAL_WORKFLOW_STATES and WORKFLOW.can(state, event):
        assert event in (WorkflowEvent.RESUME, WorkflowEvent.RERUN)


def test_success_cannot_resume_but_can_rerun() -> None:
    assert not WORKFLOW.can(WorkflowState.SUCCESS, WorkflowEvent.RESUME)
    assert WORKFLOW.next(WorkflowState.SUCCESS, WorkflowEvent.RERUN) is WorkflowState.PENDING


def test_action_table_has_no_way_out_of_success() -> None:
    assert ActionState.SUCCESS not in ACTION.table


@given(
    attempts=st.integers(1, 50),
    retries=st.integers(0, 50),
    backoff=st.floats(0, 1000, allow_nan=False),
    outcome=st.sampled_from([ActionState.FAILED, ActionState.TIMEOUT]),
)
def test_retry_decision(attempts: int, retries: int, backoff: float, outcome: ActionState) -> None:
    decision = after_failed_attempt(
        outcome=outcome, attempts=attempts, retries=retries, backoff=backoff, now=NOW
    )
    if attempts <= retries:
        assert isinstance(decision, Retry)
        assert NOW <= decision.not_before <= NOW + MAX_BACKOFF
    else:
        assert isinstance(decision, GiveUp)
        expected = WorkflowState.TIMEOUT if outcome is ActionState.TIMEOUT else WorkflowState.FAILED
        assert decision.state is expected


def test_backoff_doubles() -> None:
    delays = [
        after_failed_attempt(outcome=ActionState.FAILED, attempts=n, retries=5, backoff=2, now=NOW)
        for n in (1, 2, 3)
    ]
    assert [d.not_before - NOW for d in delays if isinstance(d, Retry)] == [
        dt.timedelta(seconds=s) for s in (2, 4, 8)
    ]
