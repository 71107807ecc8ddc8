"""The power job transition table: every path ends, an illegal move raises and changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.power.states import POWER_JOB, PowerJobEvent, PowerJobState
from metalflow.statemachine import IllegalTransition

ENDED = {PowerJobState.SUCCEEDED, PowerJobState.FAILED, PowerJobState.CANCELLED}


def test_a_job_that_ended_has_no_moves() -> None:
    for state in ENDED:
        for event in PowerJobEvent:
            assert not POWER_JOB.can(state, event)


def test_the_paths_a_runner_takes() -> None:
    assert POWER_JOB.next(PowerJobState.QUEUED, PowerJobEvent.START) is PowerJobState.RUNNING
    assert POWER_JOB.next(PowerJobState.QUEUED, PowerJobEvent.CANCEL) is PowerJobState.CANCELLED
    running = PowerJobState.RUNNING
    assert POWER_JOB.next(running, PowerJobEvent.SUCCEED) is PowerJobState.SUCCEEDED
    assert POWER_JOB.next(running, PowerJobEvent.FAIL) is PowerJobState.FAILED
    assert POWER_JOB.next(running, PowerJobEvent.CANCEL) is PowerJobState.CANCELLED


def test_a_queued_job_cannot_end_without_running() -> None:
    for event in (PowerJobEvent.SUCCEED, PowerJobEvent.FAIL):
        with pytest.raises(IllegalTransition, match="power job in state queued cannot"):
            POWER_JOB.next(PowerJobState.QUEUED, event)


@given(st.lists(st.sampled_from(PowerJobEvent), max_size=10))
def test_every_path_from_queued_ends_within_two_moves(events: list[PowerJobEvent]) -> None:
    state = PowerJobState.QUEUED
    moves = 0
    for event in events:
        if not POWER_JOB.can(state, event):
            with pytest.raises(IllegalTransition):
                POWER_JOB.next(state, event)
            continue
        state = POWER_JOB.next(state, event)
        moves += 1
    assert moves <= 2
    if moves == 2 or state is PowerJobState.CANCELLED:
        assert state in ENDED


@given(st.sampled_from(PowerJobState))
def test_every_reachable_state_can_still_end(state: PowerJobState) -> None:
    """From any state some sequence of events reaches an ended state."""
    seen = {state}
    frontier = [state]
    while frontier:
        current = frontier.pop()
        for event in PowerJobEvent:
            if POWER_JOB.can(current, event):
                after = POWER_JOB.next(current, event)
                if after not in seen:
                    seen.add(after)
                    frontier.append(after)
    assert seen & ENDED
