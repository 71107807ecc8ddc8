"""Retry schedule and log batching: pure bookkeeping."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from metalflow.agent.backoff import delay, delays
from metalflow.agent.logbatch import LogBuffer, resend_from


def test_schedule_doubles_then_caps() -> None:
    upper = [delay(n, base=0.5, cap=8, rand=1.0) for n in range(8)]
    assert upper == [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert delay(3, base=0.5, cap=8, rand=0.0) == 2


@given(st.integers(0, 10_000), st.floats(0, 1, exclude_max=True))
def test_delay_keeps_half_and_never_exceeds_cap(attempt: int, rand: float) -> None:
    ceiling = min(30.0, 0.5 * 2.0 ** min(attempt, 64))
    assert ceiling / 2 <= delay(attempt, rand=rand) <= ceiling <= 30.0


def test_delays_iterator_uses_the_random_source() -> None:
    assert list(itertools.islice(delays(base=1, cap=4, rand=lambda: 0.0), 4)) == [0.5, 1, 2, 2]


def test_batches_start_at_log_seq_and_advance_on_ack() -> None:
    buffer = LogBuffer(7, max_batch=2)
    for line in "abc":
        buffer.append(line)
    assert buffer.batch() == (7, ["a", "b"])
    buffer.acknowledge(9, now=0)
    assert buffer.batch() == (9, ["c"])
    buffer.acknowledge(10, now=0)
    assert buffer.batch() is None


def test_due_on_size_or_interval() -> None:
    buffer = LogBuffer(max_batch=3, interval=1.0)
    assert not buffer.due(0)
    buffer.append("x")
    assert buffer.due(0)
    buffer.acknowledge(1, now=10)
    buffer.append("y")
    assert not buffer.due(10.5)
    assert buffer.due(11)
    buffer.append("z")
    buffer.append("w")
    assert buffer.due(10.1)


def test_gap_rebases_pending_lines() -> None:
    buffer = LogBuffer(5)
    buffer.append("a")
    buffer.rebase(3)
    assert buffer.batch() == (3, ["a"])
    assert resend_from("log lines 3..4 of action 9 are missing; resend from seq 3") == 3
    assert resend_from("something else") is None


def test_long_lines_are_cut() -> None:
    buffer = LogBuffer()
    buffer.append("x" * 10_000)
    batch = buffer.batch()
    assert batch is not None and len(batch[1][0]) == 4096


@given(
    st.integers(0, 100),
    st.lists(st.text(max_size=5), max_size=200),
    st.integers(1, 60),
    st.lists(st.integers(0, 3), max_size=50),
)
def test_server_ends_with_every_line_once_in_order(
    start: int, lines: list[str], max_batch: int, resends: list[int]
) -> None:
    """A model server that keeps lines by seq and skips ones it has, as the real one does."""
    held = [f"old{i}" for i in range(start)]
    buffer = LogBuffer(start, max_batch=max_batch)
    for line in lines:
        buffer.append(line)
    extra = iter(resends)
    while (batch := buffer.batch()) is not None:
        seq, sent = batch
        assert seq <= len(held) and len(sent) <= max_batch
        held.extend(sent[len(held) - seq :])
        if next(extra, 0) == 1:
            continue
        buffer.acknowledge(len(held), now=0)
    assert held == [f"old{i}" for i in range(start)] + [line[:4096] for line in lines]
