"""Users' passwords: argon2id hashes, and a limit on sign-in failures.

Hashing is argon2-cffi's PasswordHasher (its defaults follow RFC 9106's recommendation); a hash
made with older parameters verifies and is handed back rehashed, for the caller to store.

The limiter is pure: the clock is passed in, nothing is stored but failure times. Looked at
`limits` and `slowapi` (fixed or moving windows in a storage backend, made for request rates per
route, not failures per account that a success clears) and at the API's own limits.py (request
sizes, not sign-ins): neither fit, and a sliding window is a deque per key.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from metalflow.errors import Invalid

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
"""Bounds the hashing cost of whatever is sent."""


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(
            f"password is too short: use at least {MIN_PASSWORD_LENGTH} characters",
            field="password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Invalid(
            f"password is too long: use at most {MAX_PASSWORD_LENGTH} characters",
            field="password",
        )
    return password


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    ok: bool
    rehashed: str | None = None
    """A new hash to store in place of the old one: the parameters changed since it was made."""


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._stand_in: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(check_password(password))

    def verify(self, stored_hash: str, password: str) -> PasswordCheck:
        """A wrong password, an overlong one and a corrupt stored hash all read as not ok."""
        if len(password) > MAX_PASSWORD_LENGTH:
            return PasswordCheck(False)
        try:
            self.hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return PasswordCheck(False)
        if self.hasher.check_needs_rehash(stored_hash):
            return PasswordCheck(True, self.hasher.hash(password))
        return PasswordCheck(True)

    def verify_absent(self, password: str) -> PasswordCheck:
        """Not ok, at the cost of a real verify: a sign-in as an unknown account (or one without
        a password) takes as long as a wrong password, so timing does not tell which exist."""
        if self._stand_in is None:
            self._stand_in = self.hasher.hash(secrets.token_urlsafe(32))
        self.verify(self._stand_in, password)
        return PasswordCheck(False)


@dataclass(frozen=True, slots=True)
class Window:
    failures: int
    seconds: float


ACCOUNT_WINDOW = Window(failures=5, seconds=300.0)
ADDRESS_WINDOW = Window(failures=20, seconds=300.0)


class SignInLimiter:
    """Failed sign-ins per account and per address, in sliding windows.

    `retry_after` is asked before checking a password; `failed` after a wrong one, `succeeded`
    after a right one (which forgives the account's failures, not the address's: one address
    guessing many accounts stays limited). Keys with no failure left in their window are dropped,
    so memory follows recent failures only.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        account_window: Window = ACCOUNT_WINDOW,
        address_window: Window = ADDRESS_WINDOW,
    ) -> None:
        self.clock = clock
        self.windows = {"account": account_window, "address": address_window}
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, scope: str, key: str, now: float) -> deque[float]:
        times = self._failures.get((scope, key), deque())
        while times and times[0] <= now - self.windows[scope].seconds:
            times.popleft()
        if not times:
            self._failures.pop((scope, key), None)
        return times

    def retry_after(self, account: str, address: str) -> float | None:
        """None when a sign-in may be tried now, else the seconds until one may."""
        now = self.clock()
        waits = []
        for scope, key in (("account", account.lower()), ("address", address)):
            window = self.windows[scope]
            times = self._recent(scope, key, now)
            if len(times) >= window.failures:
                waits.append(times[-window.failures] + window.seconds - now)
        return max(waits, default=None)

    def failed(self, account: str, address: str) -> None:
        now = self.clock()
        for scope, key in (("account", account.lower()), ("address", address)):
            times = self._recent(scope, key, now)
            times.append(now)
            self._failures[(scope, key)] = times

    def succeeded(self, account: str) -> None:
        self._failures.pop(("account", account.lower()), None)
