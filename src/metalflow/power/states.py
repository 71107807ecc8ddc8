"""Power job states and their transition table: queued, running, and how a job ended."""

from __future__ import annotations

from enum import StrEnum

from metalflow.statemachine import TransitionTable


class PowerJobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PowerJobEvent(StrEnum):
    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    CANCEL = "cancel"


J, JE = PowerJobState, PowerJobEvent

POWER_JOB = TransitionTable[PowerJobState, PowerJobEvent](
    "power job",
    {
        J.QUEUED: {JE.START: J.RUNNING, JE.CANCEL: J.CANCELLED},
        J.RUNNING: {JE.SUCCEED: J.SUCCEEDED, JE.FAIL: J.FAILED, JE.CANCEL: J.CANCELLED},
    },
)
"""A job that ended stays as it ended: asking again is a new job."""
