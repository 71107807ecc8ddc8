"""Retry delays: capped exponential backoff with jitter.

A few lines, so no library (tenacity, backoff) is worth a dependency the agent cannot have.
"Equal jitter" keeps at least half of each delay, so a fleet that lost its server at once
spreads out on return without anyone retrying in a tight loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator


def delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, rand: float = 0.5) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based); ``rand`` is in [0, 1)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    return ceiling / 2 + ceiling / 2 * rand


def delays(
    *, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
) -> Iterator[float]:
    attempt = 0
    while True:
        yield delay(attempt, base=base, cap=cap, rand=rand())
        attempt += 1
