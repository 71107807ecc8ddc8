"""Workflow and action states with their transition tables, and the pure retry decision."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from metalflow.statemachine import TransitionTable


class WorkflowState(StrEnum):
    PENDING = "PENDING"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    POST = "POST"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"


class WorkflowEvent(StrEnum):
    PREPARE = "prepare"
    RUN = "run"
    FINISH = "finish"
    SUCCEED = "succeed"
    FAIL = "fail"
    TIME_OUT = "time_out"
    CANCEL = "cancel"
    RESUME = "resume"
    RERUN = "rerun"


class ActionState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"


class ActionEvent(StrEnum):
    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    TIME_OUT = "time_out"
    RETRY = "retry"
    CANCEL = "cancel"


W, WE = WorkflowState, WorkflowEvent
_LIVE_ENDINGS = {WE.FAIL: W.FAILED, WE.TIME_OUT: W.TIMEOUT, WE.CANCEL: W.CANCELLED}

WORKFLOW = TransitionTable[WorkflowState, WorkflowEvent](
    "workflow",
    {
        W.PENDING: {WE.PREPARE: W.PREPARING, WE.RUN: W.RUNNING, WE.CANCEL: W.CANCELLED},
        W.PREPARING: {WE.RUN: W.RUNNING, **_LIVE_ENDINGS},
        W.RUNNING: {WE.FINISH: W.POST, **_LIVE_ENDINGS},
        W.POST: {WE.SUCCEED: W.SUCCESS, **_LIVE_ENDINGS},
        W.SUCCESS: {WE.RERUN: W.PENDING},
        W.FAILED: {WE.RESUME: W.RUNNING, WE.RERUN: W.PENDING},
        W.TIMEOUT: {WE.RESUME: W.RUNNING, WE.RERUN: W.PENDING},
        W.CANCELLED: {WE.RESUME: W.RUNNING, WE.RERUN: W.PENDING},
    },
)

A, AE = ActionState, ActionEvent

ACTION = TransitionTable[ActionState, ActionEvent](
    "action",
    {
        A.PENDING: {AE.START: A.RUNNING, AE.CANCEL: A.CANCELLED},
        A.RUNNING: {
            AE.SUCCEED: A.SUCCESS,
            AE.FAIL: A.FAILED,
            AE.TIME_OUT: A.TIMEOUT,
            AE.CANCEL: A.CANCELLED,
        },
        A.FAILED: {AE.RETRY: A.PENDING},
        A.TIMEOUT: {AE.RETRY: A.PENDING},
        A.CANCELLED: {AE.RETRY: A.PENDING},
    },
)

ACTIVE_WORKFLOW_STATES = frozenset({W.PENDING, W.PREPARING, W.RUNNING, W.POST})
FINAL_WORKFLOW_STATES = frozenset({W.SUCCESS, W.FAILED, W.TIMEOUT, W.CANCELLED})

MAX_BACKOFF = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Retry:
    not_before: dt.datetime


@dataclass(frozen=True)
class GiveUp:
    state: WorkflowState


def after_failed_attempt(
    *, outcome: ActionState, attempts: int, retries: int, backoff: float, now: dt.datetime
) -> Retry | GiveUp:
    """Retry while attempts remain, waiting backoff·2^(n-1) seconds (capped); else end the run.

    `attempts` counts the attempts made so far, the failed one included.
    """
    if outcome not in (A.FAILED, A.TIMEOUT):
        raise ValueError(f"not a failed outcome: {outcome}")
    if attempts <= retries:
        seconds = min(backoff * 2.0 ** (attempts - 1), MAX_BACKOFF.total_seconds())
        return Retry(not_before=now + dt.timedelta(seconds=seconds))
    return GiveUp(state=W.TIMEOUT if outcome is A.TIMEOUT else W.FAILED)
