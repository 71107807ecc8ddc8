"""Boot events (DHCP answers, TFTP transfers, scripts served) written in batches.

The boot servers must never wait on the database per packet, and a machine stuck in a boot loop
must not flood the event log: events are queued, coalesced per (machine, kind, detail) within a
flush interval into one event with a `count`, and written in one transaction per interval.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from metalflow import events
from metalflow.boot.index import MachineView
from metalflow.db.engine import Database

log = logging.getLogger("metalflow.boot")
FLUSH_SECONDS = 0.2
UNKNOWN_CALLERS = "unknown-callers"
"""The `detail` of events without a machine: all of one kind merge into one per flush (the
latest caller's data, with a count), so unauthenticated callers cannot flood the event log."""
MAX_PENDING = 10_000
"""Past this many distinct pending events new ones are dropped (and counted), not queued."""


@dataclass
class _Pending:
    machine_id: str | None
    machine_name: str | None
    kind: str
    data: dict[str, Any]
    count: int = 1


class BootEventRecorder:
    """Queues boot events from the loop; `run` writes them, `flush` on shutdown."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: dict[tuple[str | None, str, str], _Pending] = {}
        self._wake = asyncio.Event()
        self.dropped = 0
        self.log_fold = RepeatFold()
        """For the boot log lines that go with these events."""

    def record(self, kind: str, machine: MachineView | None, detail: str = "", **data: Any) -> None:
        """Queue an event; `detail` separates events of one kind that must not be merged."""
        key = (machine.id if machine else None, kind, detail)
        pending = self._pending.get(key)
        if pending is not None:
            pending.count += 1
            pending.data = data
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending[key] = _Pending(
            machine.id if machine else None, machine.name if machine else None, kind, data
        )
        self._wake.set()

    def _write(self, batch: list[_Pending]) -> None:
        with self.db.write() as session:
            for item in batch:
                data = dict(item.data)
                if item.count > 1:
                    data["count"] = item.count
                events.record(
                    session,
                    item.kind,
                    machine_id=item.machine_id,
                    machine_name=item.machine_name,
                    **data,
                )

    async def flush(self) -> None:
        batch = list(self._pending.values())
        self._pending.clear()
        if batch:
            await to_thread.run_sync(self._write, batch)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:
                log.exception("event=boot.events.write_failed")


class RepeatFold:
    """Decides which boot log lines to write: the first of each key, then at most one per
    `window` seconds carrying how often it repeated since, and no more than `budget` lines per
    window in all (a flood of ever new MACs has no repeats to fold). A PXE ROM retrying, a
    machine in a boot loop or junk traffic then costs a counter, not a line per packet."""

    def __init__(self, window: float = 10.0, memory: int = 10_000, budget: int = 200) -> None:
        self.window = window
        self.memory = memory
        self.budget = budget
        self._seen: dict[object, tuple[float, int]] = {}
        self._window_start = float("-inf")
        self._lines = 0
        self._suppressed = 0

    def check(self, key: object, now: float) -> int | None:
        """None: stay quiet; else log now, with this many repeats folded into the line."""
        if now - self._window_start >= self.window:
            if self._suppressed:
                log.info(
                    "event=boot.log.suppressed lines=%d window_seconds=%g budget=%d",
                    self._suppressed,
                    self.window,
                    self.budget,
                )
            self._window_start, self._lines, self._suppressed = now, 0, 0
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window:
            self._seen[key] = (seen[0], seen[1] + 1)
            return None
        if self._lines >= self.budget:
            self._suppressed += 1
            return None
        self._lines += 1
        if len(self._seen) >= self.memory:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return seen[1] if seen is not None else 0
