"""Boot and run tokens: formats, signatures, and when an exchange or a run token holds."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalflow.tenancy.auth import Action, Forbidden, Principal, Role, authorize
from metalflow.tenancy.secrets import Keyring
from metalflow.tenancy.tokens import (
    BootClaim,
    Refused,
    RunClaim,
    RunRecord,
    exchange,
    hash_agent_key,
    run_claim,
    run_valid,
)

KEYRING = Keyring(b"k" * 32)
OTHER = Keyring(b"x" * 32)
NOW = 1_800_000_000.0
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)
numbers = st.integers(0, 10**15 - 1)
boot_claims = st.builds(BootClaim, ids, ids, numbers, numbers, numbers)
CLAIM = BootClaim("m1", "w1", 2, 1_799_999_000_000, int(NOW) + 1800)
KEY = hash_agent_key("k" * 43)


def record(**changes: object) -> RunRecord:
    fresh = RunRecord(machine_id="m1", active=True, start=2, exchanged_ms=None, agent_key_hash=None)
    return dataclasses.replace(fresh, **changes)  # type: ignore[arg-type]


@given(boot_claims)
def test_boot_token_round_trip(claim: BootClaim) -> None:
    token = KEYRING.boot_token(claim)
    assert token.startswith("mfb.")
    assert KEYRING.parse_boot_token(token) == claim
    assert OTHER.parse_boot_token(token) is None
    assert KEYRING.parse_run_token(token) is None
    assert KEYRING.parse_agent_token(token) is None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert KEYRING.parse_boot_token(flipped) is None


@given(boot_claims, st.integers(1, 10**6))
def test_a_changed_field_breaks_the_signature(claim: BootClaim, later: int) -> None:
    """Whoever holds a boot token cannot move its expiry or its start."""
    token = KEYRING.boot_token(claim)
    parts = token.split(".")
    parts[5] = str(claim.expires + later)
    assert KEYRING.parse_boot_token(".".join(parts)) is None
    parts = token.split(".")
    parts[3] = str(claim.start + 1)
    assert KEYRING.parse_boot_token(".".join(parts)) is None


@given(boot_claims)
def test_run_token_round_trip_and_kinds_are_not_interchangeable(claim: BootClaim) -> None:
    run = run_claim(claim)
    token = KEYRING.run_token(run)
    assert token.startswith("mfr.")
    assert KEYRING.parse_run_token(token) == run
    assert OTHER.parse_run_token(token) is None
    assert KEYRING.parse_boot_token(token) is None
    # the run token is not the boot token with another prefix
    assert KEYRING.parse_run_token("mfr." + KEYRING.boot_token(claim)[4:]) is None


@given(st.text())
def test_parse_never_raises(token: str) -> None:
    KEYRING.parse_boot_token(token)
    KEYRING.parse_run_token(token)


def test_ids_with_a_dot_cannot_become_a_token() -> None:
    with pytest.raises(ValueError, match="cannot go into a token"):
        KEYRING.boot_token(dataclasses.replace(CLAIM, machine_id="a.b"))


def test_exchange_decisions() -> None:
    exchanged = record(exchanged_ms=CLAIM.issued_ms, agent_key_hash=KEY)
    assert exchange(CLAIM, record(), KEY, NOW) == run_claim(CLAIM)
    assert exchange(CLAIM, record(), None, NOW) == run_claim(CLAIM)
    assert exchange(CLAIM, exchanged, KEY, NOW) == run_claim(CLAIM), "the agent restarted"
    assert exchange(CLAIM, exchanged, KEY, CLAIM.expires + 3600) == run_claim(CLAIM)
    resumed = dataclasses.replace(exchanged, start=3)
    assert exchange(CLAIM, resumed, KEY, NOW) == RunClaim("m1", "w1", 3, CLAIM.issued_ms)
    waiting = exchange(CLAIM, dataclasses.replace(exchanged, active=False), KEY, NOW)
    assert isinstance(waiting, Refused) and waiting.waiting and "not running" in waiting.reason
    other_key = hash_agent_key("z" * 43)
    cases = {
        "no longer exists": (None, KEY, NOW),
        "has ended": (record(active=False), KEY, NOW),
        "started again since (start 3": (record(start=3), KEY, NOW),
        "exchanged already, by an agent holding another key": (exchanged, other_key, NOW),
        "exchanged already": (exchanged, None, NOW),
        "by an agent holding another key": (dataclasses.replace(resumed, active=False), None, NOW),
        "a newer boot token": (record(exchanged_ms=CLAIM.issued_ms + 1), KEY, NOW),
        "expired": (record(), KEY, CLAIM.expires),
    }
    for words, (row, key, now) in cases.items():
        decision = exchange(CLAIM, row, key, now)
        assert isinstance(decision, Refused) and words in decision.reason, (words, decision)
        assert not decision.waiting, words
    assert isinstance(exchange(CLAIM, record(machine_id="m2"), KEY, NOW), Refused)


@given(
    boot_claims,
    st.booleans(),
    numbers,
    st.none() | numbers,
    st.none() | st.sampled_from([KEY, hash_agent_key("other")]),
    st.none() | st.sampled_from([KEY, hash_agent_key("other")]),
    st.floats(0, 2e15),
)
def test_exchange_never_accepts_what_it_must_not(
    claim: BootClaim,
    active: bool,
    start: int,
    exchanged_ms: int | None,
    stored_key: str | None,
    key: str | None,
    now: float,
) -> None:
    row = RunRecord(claim.machine_id, active, start, exchanged_ms, stored_key)
    decision = exchange(claim, row, key, now)
    if isinstance(decision, Refused):
        if decision.waiting:
            assert key is not None and key == stored_key and not active
        return
    assert active and decision.start == start, "only ever a token of the running start"
    assert run_valid(decision, dataclasses.replace(row, exchanged_ms=claim.issued_ms))
    if exchanged_ms == claim.issued_ms:
        assert key is not None and key == stored_key, "again only with the first key"
    else:
        assert claim.expires > now and start == claim.start
        assert exchanged_ms is None or exchanged_ms < claim.issued_ms


def test_a_run_token_holds_only_for_its_start_and_boot_token() -> None:
    run = run_claim(CLAIM)
    current = record(exchanged_ms=CLAIM.issued_ms, agent_key_hash=KEY)
    assert run_valid(run, current)
    assert not run_valid(run, None)
    assert not run_valid(run, dataclasses.replace(current, active=False)), "the run ended"
    assert not run_valid(run, dataclasses.replace(current, start=3)), "started again"
    assert not run_valid(run, dataclasses.replace(current, exchanged_ms=CLAIM.issued_ms + 5))
    assert not run_valid(run, dataclasses.replace(current, exchanged_ms=None)), "never exchanged"
    assert not run_valid(RunClaim("m2", "w1", 2, CLAIM.issued_ms), current)


def test_a_boot_token_is_good_for_hello_only() -> None:
    boot = Principal(Role.AGENT, "agent:m1", "m1", boot=CLAIM)
    authorize(boot, Action.HELLO, machine_id="m1")
    for action in (Action.AGENT, Action.READ, Action.WRITE):
        with pytest.raises(Forbidden):
            authorize(boot, action, machine_id="m1")
    run = Principal(Role.AGENT, "agent:m1", "m1", run=run_claim(CLAIM))
    authorize(run, Action.AGENT, machine_id="m1")
    authorize(run, Action.HELLO, machine_id="m1")
