"""Boot and metadata events (DHCP answers, TFTP transfers, scripts served, metadata posts),
stamped when they happen and written in batches.

The boot servers must never wait on the database per packet, and a machine stuck in a boot loop
must not flood the event log: events are queued, coalesced per (machine, kind, detail) within a
flush interval into one event with a `count` (stamped with the first occurrence; `last` is the
time of the latest), and written in one transaction per interval.

Causal order: the log is ordered by id (event streams and `after=ID` paging follow ids), and a
queued event is often the cause of a change another transaction writes at once: a phone-home
makes the machine active. So the recorder joins every transaction that writes events (a
`before_commit` hook on its database, ahead of the one that inserts them): a transaction that
writes about a machine takes that machine's queued events and inserts them with its own, merged
by time. A machine's events then get ids in the order they happened, with no extra write per
packet or metadata GET; the flush interval only bounds how long the events of a machine that
nothing else writes about wait. Rejected: flushing before each state change (every write path
would have to know its causes) and listing by time (ids, which followers use, would still
disagree). Queued events a transaction takes are lost if its commit fails, as a failed batch
write loses its batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.index.views import MachineView

log = logging.getLogger("metalflow.boot")
FLUSH_SECONDS = 0.2
UNKNOWN_CALLERS = "unknown-callers"
"""The `detail` of events without a machine: all of one kind merge into one per flush (the
latest caller's data, with a count), so unauthenticated callers cannot flood the event log."""
MAX_PENDING = 10_000
"""Past this many distinct pending events new ones are dropped (and counted), not queued."""

Clock = Callable[[], dt.datetime]


@dataclass
class _Pending:
    seq: int
    machine_id: str | None
    machine_name: str | None
    kind: str
    data: dict[str, Any]
    first: dt.datetime
    last: dt.datetime
    count: int = 1

    def event(self) -> events.Event:
        data = dict(self.data)
        if self.count > 1:
            data["count"] = self.count
            data["last"] = self.last.isoformat()
        return events.Event(
            time=self.first,
            machine_id=self.machine_id,
            machine_name=self.machine_name,
            workflow_id=None,
            kind=self.kind,
            data=data,
        )


class PendingEvents:
    """The queue: filled on the event loop, emptied by transactions in worker threads (hence
    the lock), per machine so a transaction takes its machines' events without a scan."""

    def __init__(self, clock: Clock = utcnow, limit: int = MAX_PENDING) -> None:
        self.clock = clock
        self.limit = limit
        self.dropped = 0
        self._by_machine: dict[str | None, dict[tuple[str, str], _Pending]] = {}
        self._size = 0
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def add(
        self, kind: str, machine: MachineView | None, detail: str, data: dict[str, Any]
    ) -> bool:
        """Queue (or coalesce) one event, stamped now; False when it is new and the queue full.

        The clock is read under the lock `take` holds: an event a transaction's `take` misses
        was stamped after it (see events.QueuedEvents)."""
        machine_id = machine.id if machine else None
        with self._lock:
            now = self.clock()
            queued = self._by_machine.setdefault(machine_id, {})
            pending = queued.get((kind, detail))
            if pending is not None:
                pending.count += 1
                pending.data = data
                pending.last = now
                return True
            if self._size >= self.limit:
                self.dropped += 1
                if not queued:
                    del self._by_machine[machine_id]
                return False
            queued[(kind, detail)] = _Pending(
                next(self._seq),
                machine_id,
                machine.name if machine else None,
                kind,
                data,
                now,
                now,
            )
            self._size += 1
            return True

    def take(self, machine_ids: Collection[str | None] | None = None) -> list[events.Event]:
        """The queued events of these machines (all when None), in the order first recorded."""
        with self._lock:
            keys = list(self._by_machine) if machine_ids is None else machine_ids
            taken = [pending for key in keys for pending in self._by_machine.pop(key, {}).values()]
            self._size -= len(taken)
        taken.sort(key=lambda pending: pending.seq)
        return [pending.event() for pending in taken]


class BootEventRecorder:
    """Queues boot events from the loop; `run` writes them, `flush` on shutdown, and every
    transaction that writes about a machine takes that machine's events with it (see above)."""

    def __init__(self, db: Database, clock: Clock = utcnow) -> None:
        self.db = db
        self.pending = PendingEvents(clock)
        self._wake = asyncio.Event()
        self.log_fold = RepeatFold()
        """For the boot log lines that go with these events."""
        db.before_commit.insert(0, self.join)

    @property
    def dropped(self) -> int:
        return self.pending.dropped

    def record(self, kind: str, machine: MachineView | None, detail: str = "", **data: Any) -> None:
        """Queue an event; `detail` separates events of one kind that must not be merged."""
        if self.pending.add(kind, machine, detail, data):
            self._wake.set()

    def join(self, session: Session, outbox: list[Any]) -> None:
        """The before_commit hook: this transaction's machines' queued events go in with it,
        taken when its own are stamped (even if none are queued yet: one may be by then)."""
        machine_ids = {
            event.machine_id
            for event in outbox
            if isinstance(event, events.Event) and event.machine_id is not None
        }
        if machine_ids:
            outbox.append(events.QueuedEvents(lambda: self.pending.take(machine_ids)))

    def _write(self) -> None:
        with self.db.write() as session:
            events.queue(session, [events.QueuedEvents(self.pending.take)])

    async def flush(self) -> None:
        if len(self.pending):
            await to_thread.run_sync(self._write)

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
