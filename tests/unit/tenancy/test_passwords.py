"""Password hashes and the sign-in limiter, as a user signing in meets them (a fake clock)."""

from __future__ import annotations

from typing import Literal

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st

from metalflow.errors import Invalid
from metalflow.tenancy.passwords import Passwords, SignInLimiter, Window

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


def test_the_hash_verifies_the_password_and_does_not_hold_it() -> None:
    passwords = Passwords(FAST)
    stored = passwords.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert passwords.verify(stored, PASSWORD).ok
    assert passwords.verify(stored, PASSWORD).rehashed is None
    assert not passwords.verify(stored, PASSWORD + "!").ok


def test_same_password_hashes_differently_each_time() -> None:
    passwords = Passwords(FAST)
    assert passwords.hash(PASSWORD) != passwords.hash(PASSWORD)


def test_a_hash_with_old_parameters_is_rehashed_on_sign_in() -> None:
    old = Passwords(FAST).hash(PASSWORD)
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    check = stronger.verify(old, PASSWORD)
    assert check.ok and check.rehashed is not None
    assert "t=2" in check.rehashed
    assert stronger.verify(check.rehashed, PASSWORD).rehashed is None


def test_a_corrupt_hash_or_overlong_password_is_refused_quietly() -> None:
    passwords = Passwords(FAST)
    assert not passwords.verify("not a hash", PASSWORD).ok
    assert not passwords.verify(passwords.hash(PASSWORD), "x" * 5000).ok


def test_an_absent_account_costs_a_real_verify_and_never_passes() -> None:
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            calls.append("verify")
            return super().verify(hash, password)

    passwords = Passwords(CountingHasher(time_cost=1, memory_cost=8, parallelism=1))
    assert not passwords.verify_absent(PASSWORD).ok
    assert not passwords.verify_absent("").ok
    assert calls == ["verify", "verify"]


@pytest.mark.parametrize(("password", "words"), [("short", "too short"), ("x" * 2000, "too long")])
def test_bad_passwords_are_refused_naming_the_field(password: str, words: str) -> None:
    with pytest.raises(Invalid, match=words) as raised:
        Passwords(FAST).hash(password)
    assert raised.value.field == "password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_lock_the_account_for_the_rest_of_the_window() -> None:
    clock = Clock()
    limiter = SignInLimiter(clock)
    for _ in range(4):
        limiter.failed("ada@example.com", "10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("ada@example.com", "10.0.0.1") is None
    limiter.failed("ada@example.com", "10.0.0.1")
    assert limiter.retry_after("ADA@example.com", "10.0.0.9") == pytest.approx(260.0)
    assert limiter.retry_after("bob@example.com", "10.0.0.1") is None
    clock.now += 260
    assert limiter.retry_after("ada@example.com", "10.0.0.1") is None


def test_the_window_slides_one_failure_at_a_time() -> None:
    clock = Clock()
    limiter = SignInLimiter(clock)
    for _ in range(5):
        limiter.failed("ada", "a")
        clock.now += 60
    clock.now = 1241.0
    assert limiter.retry_after("ada", "a") == pytest.approx(59.0)
    clock.now = 1300.0
    assert limiter.retry_after("ada", "a") is None, "the first failure left the window"
    limiter.failed("ada", "a")
    assert limiter.retry_after("ada", "a") == pytest.approx(60.0)


def test_one_address_guessing_many_accounts_is_limited() -> None:
    clock = Clock()
    limiter = SignInLimiter(clock)
    for number in range(20):
        limiter.failed(f"user{number}", "192.0.2.7")
    assert limiter.retry_after("someone-new", "192.0.2.7") == pytest.approx(300.0)
    assert limiter.retry_after("someone-new", "192.0.2.8") is None


def test_success_forgives_the_account_but_not_the_address() -> None:
    clock = Clock()
    limiter = SignInLimiter(clock, address_window=Window(failures=6, seconds=300))
    for _ in range(5):
        limiter.failed("ada", "a")
    limiter.succeeded("ada")
    assert limiter.retry_after("ada", "b") is None
    limiter.failed("ada", "a")
    assert limiter.retry_after("bob", "a") == pytest.approx(300.0)


@settings(max_examples=50)
@given(st.lists(st.floats(0, 1000), max_size=30))
def test_never_more_than_the_limit_of_failures_pass_in_one_window(gaps: list[float]) -> None:
    clock = Clock()
    limiter = SignInLimiter(clock)
    tried: list[float] = []
    for gap in gaps:
        clock.now += gap
        if limiter.retry_after("ada", "a") is None:
            tried.append(clock.now)
            limiter.failed("ada", "a")
    for index, start in enumerate(tried):
        assert len([t for t in tried[index:] if t < start + 300]) <= 5
