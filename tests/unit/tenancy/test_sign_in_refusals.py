"""The refusal folder that bounds the audit of locked-out sign-ins: one entry per account and
address per window, no refusal lost from the counts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.tenancy.router import FoldedRefusals, RefusalFolder

WINDOW = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_refusal_is_audited_and_the_next_are_folded_into_a_later_entry() -> None:
    clock = Clock()
    folder = RefusalFolder(clock, WINDOW)
    assert folder.refuse("ada@example.com", "192.0.2.1") == 1
    for _ in range(99):
        clock.now += 1
        assert folder.refuse("ada@example.com", "192.0.2.1") is None
    assert folder.refuse("ada@example.com", "192.0.2.9") == 1, "another address, its own entry"
    assert folder.due() == []
    clock.now += WINDOW
    assert folder.refuse("ada@example.com", "192.0.2.1") == 100, "99 folded, and this one"
    assert folder.due() == [], "the other address had nothing folded"
    clock.now += 1
    folder.refuse("ada@example.com", "192.0.2.1")
    clock.now += WINDOW
    assert folder.due() == [FoldedRefusals("ada@example.com", "192.0.2.1", 1)]
    assert folder.due() == [], "handed out once, then forgotten"
    assert folder.counts == {"sign_in_limited": 103, "bad_credentials": 0}


refusals = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(min_value=0, max_value=200)),
    max_size=300,
)


@settings(max_examples=200)
@given(refusals)
def test_entries_are_bounded_per_window_and_count_every_refusal(
    steps: list[tuple[str, float]],
) -> None:
    clock = Clock()
    start = clock.now
    folder = RefusalFolder(clock, WINDOW)
    entries: dict[str, list[int]] = {}
    for account, advance in steps:
        clock.now += advance
        refused = folder.refuse(account, "192.0.2.1")
        if refused is not None:
            entries.setdefault(account, []).append(refused)
        for due in folder.due():
            entries.setdefault(due.account, []).append(due.refused)
    clock.now += WINDOW + 1
    for due in folder.due():
        entries.setdefault(due.account, []).append(due.refused)
    windows = (clock.now - start) / WINDOW + 1
    for account, counts in entries.items():
        assert len(counts) <= 2 * windows, account
    assert sum(sum(counts) for counts in entries.values()) == len(steps)
    assert folder.counts["sign_in_limited"] == len(steps)
