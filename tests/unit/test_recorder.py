"""The boot event queue: each event keeps the time it was recorded, coalesced ones their first
and last, and a transaction takes only its own machines' events, merged into its own by time."""

from __future__ import annotations

import datetime as dt
import itertools

from hypothesis import given
from hypothesis import strategies as st

from metalflow.events import Event, merge_by_time
from metalflow.index.views import MachineView
from metalflow.recorder import PendingEvents
from tests.factories import machine_view

START = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    """Moves only when told: a test sets the time each event happens at."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def machine(name: str) -> MachineView:
    return machine_view(id=f"id-{name}", name=name, uefi=True)


def test_events_keep_the_time_they_were_recorded_not_the_time_they_are_taken() -> None:
    clock = FakeClock()
    pending = PendingEvents(clock)
    web1 = machine("web1")
    pending.add("dhcp.offer", web1, "52:54:00:00:00:01", {"mac": "52:54:00:00:00:01"})
    clock.advance(1)
    pending.add("tftp.transfer", web1, "ipxe.efi:done", {"file": "ipxe.efi"})
    clock.advance(1)
    pending.add("boot.script", web1, "workflow:52:54:00:00:00:01", {"script": "workflow"})
    clock.advance(30)

    taken = pending.take()

    assert [(event.kind, event.time) for event in taken] == [
        ("dhcp.offer", START),
        ("tftp.transfer", START + dt.timedelta(seconds=1)),
        ("boot.script", START + dt.timedelta(seconds=2)),
    ]
    assert all(event.machine_name == "web1" for event in taken)
    assert len(pending) == 0 and pending.take() == []


def test_a_coalesced_event_keeps_its_first_time_and_says_when_it_last_happened() -> None:
    clock = FakeClock()
    pending = PendingEvents(clock)
    web1 = machine("web1")
    for attempt in range(3):
        pending.add("dhcp.offer", web1, "mac", {"attempt": attempt})
        clock.advance(0.05)

    (event,) = pending.take()

    assert event.time == START
    assert event.data == {
        "attempt": 2,
        "count": 3,
        "last": (START + dt.timedelta(seconds=0.1)).isoformat(),
    }


def test_a_single_event_has_no_count_or_last() -> None:
    pending = PendingEvents(FakeClock())
    pending.add("boot.script", machine("web1"), "exit", {"script": "exit"})
    assert pending.take()[0].data == {"script": "exit"}


def test_taking_one_machines_events_leaves_the_others_queued() -> None:
    clock = FakeClock()
    pending = PendingEvents(clock)
    pending.add("metadata.phone_home", machine("web1"), "metadata.phone_home", {})
    clock.advance(1)
    pending.add("dhcp.offer", machine("web2"), "mac", {})
    pending.add("metadata.unknown_caller", None, "unknown-callers", {})

    assert [event.kind for event in pending.take({"id-web1"})] == ["metadata.phone_home"]
    assert len(pending) == 2
    assert pending.take({"id-web1"}) == []
    assert [event.kind for event in pending.take()] == ["dhcp.offer", "metadata.unknown_caller"]


def test_past_the_limit_new_events_are_dropped_and_counted_but_repeats_still_coalesce() -> None:
    pending = PendingEvents(FakeClock(), limit=2)
    assert pending.add("dhcp.offer", machine("a"), "mac", {})
    assert pending.add("dhcp.offer", machine("b"), "mac", {})
    assert not pending.add("dhcp.offer", machine("c"), "mac", {})
    assert pending.add("dhcp.offer", machine("a"), "mac", {}), "a repeat costs no new entry"
    assert pending.dropped == 1
    assert sorted(event.machine_name or "" for event in pending.take()) == ["a", "b"]


def event_at(kind: str, second: int) -> Event:
    return Event(time=START + dt.timedelta(seconds=second), kind=kind, data={})


@given(
    own=st.lists(st.integers(0, 20), max_size=8),
    queued=st.lists(st.integers(0, 20), max_size=8).map(sorted),
)
def test_merging_keeps_each_side_in_order_and_puts_queued_causes_first(
    own: list[int], queued: list[int]
) -> None:
    """A transaction's own events stay in their (causal) order even when their clock went back."""
    own_events = [event_at(f"own{i}", second) for i, second in enumerate(own)]
    queued_events = [event_at(f"queued{i}", second) for i, second in enumerate(queued)]

    merged = merge_by_time(own_events, queued_events)

    assert sorted(map(id, merged)) == sorted(map(id, own_events + queued_events))
    assert [e for e in merged if e.kind.startswith("own")] == own_events
    assert [e for e in merged if e.kind.startswith("queued")] == queued_events
    if own == sorted(own):
        times = [event.time for event in merged]
        assert times == sorted(times)
        for before, after in itertools.pairwise(merged):
            if before.time == after.time and before.kind.startswith("own"):
                assert after.kind.startswith("own"), "on equal times the queued event goes first"
