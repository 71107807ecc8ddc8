"""Which log lines to send next, numbered the way the server counts them (``seq``).

Pure bookkeeping, no I/O: the runner owns the clock and the HTTP calls.
"""

from __future__ import annotations

import re

MAX_LINE = 4096
_RESEND = re.compile(r"resend from seq (\d+)")


class LogBuffer:
    """Lines not yet acknowledged by the server, starting at line number ``base``.

    ``start`` is the server's ``log_seq``: how many lines it already holds for the attempt.
    """

    def __init__(self, start: int = 0, *, max_batch: int = 50, interval: float = 1.0) -> None:
        self.base = start
        self.pending: list[str] = []
        self.max_batch = max_batch
        self.interval = interval
        self.last_flush: float | None = None

    def append(self, line: str) -> None:
        self.pending.append(line[:MAX_LINE])

    def due(self, now: float) -> bool:
        """A full batch is waiting, or lines have waited ``interval`` since the last flush."""
        if not self.pending:
            return False
        if len(self.pending) >= self.max_batch or self.last_flush is None:
            return True
        return now - self.last_flush >= self.interval

    def batch(self) -> tuple[int, list[str]] | None:
        if not self.pending:
            return None
        return self.base, self.pending[: self.max_batch]

    def acknowledge(self, received: int, now: float) -> None:
        """The server now holds ``received`` lines in all; drop the ones among them."""
        self.last_flush = now
        drop = min(max(0, received - self.base), len(self.pending))
        del self.pending[:drop]
        self.base = max(self.base + drop, received)

    def rebase(self, seq: int) -> None:
        """The server holds fewer lines than we thought (409): number ours from ``seq``."""
        self.base = seq


def resend_from(message: str) -> int | None:
    """The ``seq`` named in a 409 gap message, if it names one."""
    found = _RESEND.search(message)
    return int(found.group(1)) if found else None
