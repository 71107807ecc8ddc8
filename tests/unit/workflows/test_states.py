"""Workflow and action transition tables, and the retry decision."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.statemachine import IllegalTransition
from metalflow.workflows.states import (
    ACTION,
    ACTIVE_WORKFLOW_STATES,
    FINAL_WORKFLOW_STATES,
    MAX_BACKOFF,
    WORKFLOW,
    ActionEvent,
    ActionState,
    GiveUp,
    Retry,
    WorkflowEvent,
    WorkflowState,
    after_failed_attempt,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

LIVE_ENDINGS = {"fail": "FAILED", "time_out": "TIMEOUT", "cancel": "CANCELLED"}
RESTARTS = {"resume": "RUNNING", "rerun": "PENDING"}

WORKFLOW_MOVES = {
    "PENDING": {"prepare": "PREPARING", "run": "RUNNING", "cancel": "CANCELLED"},
    "PREPARING": {"run": "RUNNING", **LIVE_ENDINGS},
    "RUNNING": {"finish": "POST", **LIVE_ENDINGS},
    "POST": {"succeed": "SUCCESS", **LIVE_ENDINGS},
    "SUCCESS": {"rerun": "PENDING"},
    "FAILED": RESTARTS,
    "TIMEOUT": RESTARTS,
    "CANCELLED": RESTARTS,
}
"""Every legal workflow move, written out by hand: any other pair is refused."""

ACTION_MOVES = {
    "PENDING": {"start": "RUNNING", "cancel": "CANCELLED"},
    "RUNNING": {
        "succeed": "SUCCESS",
        "fail": "FAILED",
        "time_out": "TIMEOUT",
        "cancel": "CANCELLED",
    },
    "SUCCESS": {},
    "FAILED": {"retry": "PENDING"},
    "TIMEOUT": {"retry": "PENDING"},
    "CANCELLED": {"retry": "PENDING"},
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(WorkflowState, WorkflowEvent)))
def test_each_workflow_move_is_the_documented_one_or_refused(
    state: WorkflowState, event: WorkflowEvent
) -> None:
    expected = WORKFLOW_MOVES[state.value].get(event.value)
    assert WORKFLOW.can(state, event) is (expected is not None)
    if expected is not None:
        assert WORKFLOW.next(state, event).value == expected
    else:
        with pytest.raises(IllegalTransition, match=f"^workflow in state {state} cannot {event}"):
            WORKFLOW.next(state, event)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ActionState, ActionEvent)))
def test_each_action_move_is_the_documented_one_or_refused(
    state: ActionState, event: ActionEvent
) -> None:
    expected = ACTION_MOVES[state.value].get(event.value)
    assert ACTION.can(state, event) is (expected is not None)
    if expected is not None:
        assert ACTION.next(state, event).value == expected
    else:
        with pytest.raises(IllegalTransition, match=f"^action in state {state} cannot {event}"):
            ACTION.next(state, event)


def test_active_and_final_workflow_states() -> None:
    assert {s.value for s in ACTIVE_WORKFLOW_STATES} == {"PENDING", "PREPARING", "RUNNING", "POST"}
    assert {s.value for s in FINAL_WORKFLOW_STATES} == {"SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"}


def test_success_cannot_resume_but_can_rerun() -> None:
    assert not WORKFLOW.can(WorkflowState.SUCCESS, WorkflowEvent.RESUME)
    assert WORKFLOW.next(WorkflowState.SUCCESS, WorkflowEvent.RERUN) is WorkflowState.PENDING


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
