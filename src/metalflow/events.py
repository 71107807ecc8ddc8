"""Append-only event log and in-process pub/sub.

Services add events inside their transaction (`record`); the bus publishes them only after the
commit, so a subscriber never sees a change that was rolled back. Subscribers live on the asyncio
loop; commits happen in worker threads, hence the hand-off through `call_soon_threadsafe`.

The log's order is its ids (event streams and `after=ID` paging follow them), and its times must
agree: a transaction's events are stamped when it writes them, just before its commit (when the
change they report takes effect; stamped at `record`, a transaction that waited on a lock would
list its events before those of one that committed earlier), under one lock per process with
their INSERT, so that concurrent PostgreSQL transactions cannot take ids in one order and times
in the other. Events made elsewhere come with the time they happened; those queued for a machine
(recorder.py) are taken by the transaction after it stamps its own, in the same lock, so one
recorded while it commits is either taken or stamped later than its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import heapq
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    and_,
    delete,
    false,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from metalflow.db.base import Base, utcnow

log = logging.getLogger("metalflow.events")
ASSIGNED = "machine.assigned"
"""A machine changing project (`before`, `after`): a tenant sees a machine's history from its
latest assignment to one of the tenant's projects on."""


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_machine", "machine_id", "id"),
        Index("ix_events_workflow", "workflow_id", "id"),
        Index("ix_events_time", "time"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    machine_id: Mapped[str | None] = mapped_column(String(32))
    machine_name: Mapped[str | None] = mapped_column(String(200))
    workflow_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "machine": self.machine_name,
            "workflow": self.workflow_id,
            "kind": self.kind,
            "data": self.data,
        }


def record(
    session: Session,
    kind: str,
    /,
    *,
    machine_id: str | None = None,
    machine_name: str | None = None,
    workflow_id: str | None = None,
    **data: Any,
) -> Event:
    """Queue an event; `persist` stamps and writes the transaction's events in one statement
    at its end, in the order queued."""
    event = Event(
        machine_id=machine_id,
        machine_name=machine_name,
        workflow_id=workflow_id,
        kind=kind,
        data=data,
    )
    queue(session, [event])
    return event


@dataclass(frozen=True)
class QueuedEvents:
    """Events recorded outside any transaction (each with the time it happened), to be taken by
    `persist` once it has stamped the transaction's own: taking them earlier would leave a
    window in which one recorded for the same machine is stamped before, but written after,
    this transaction's events."""

    take: Callable[[], list[Event]]


def queue(session: Session, made: Iterable[Event | QueuedEvents]) -> None:
    """Queue events made outside the transaction, each with the time it happened."""
    session.info.setdefault("outbox", []).extend(made)


def merge_by_time(own: list[Event], earlier: list[Event]) -> list[Event]:
    """A transaction's events with queued ones placed by time, each list keeping its order
    (a transaction's events are in causal order even if the clock steps back); on equal
    times the queued event, the cause, goes first."""
    return list(heapq.merge(earlier, own, key=lambda event: event.time))


_COLUMNS = ("time", "machine_id", "machine_name", "workflow_id", "kind", "data")


_WRITE_ORDER = threading.Lock()
"""Held from stamping a PostgreSQL transaction's events to their INSERT (which takes their ids),
and around nothing that can wait: the transaction's other changes are flushed and its connection
taken before, and the INSERT waits on no lock (the events table has no foreign or unique key
but its id). SQLite needs none: one transaction writes at a time."""


def persist(session: Session, objects: list[Any]) -> None:
    """Stamp the queued events that have no time yet and insert them in one multi-row INSERT,
    which gives them their ids.

    Events are written only, never changed, so they skip the ORM's unit of work (a
    noticeable share of every agent request's cost).
    """
    sources = [obj for obj in objects if isinstance(obj, QueuedEvents)]
    queued = [obj for obj in objects if isinstance(obj, Event)]
    if not queued and not sources:
        return
    session.flush()
    sqlite = session.connection().dialect.name == "sqlite"
    with contextlib.nullcontext() if sqlite else _WRITE_ORDER, session.no_autoflush:
        now = utcnow()
        for event in queued:
            if event.time is None:
                event.time = now
        for source in sources:
            queued = merge_by_time(queued, source.take())
        objects[:] = [
            *(obj for obj in objects if not isinstance(obj, Event | QueuedEvents)),
            *queued,
        ]
        if not queued:
            return
        rows = [{name: getattr(event, name) for name in _COLUMNS} for event in queued]
        ids = session.scalars(
            insert(Event).returning(Event.id, sort_by_parameter_order=True), rows
        ).all()
    for event, event_id in zip(queued, ids, strict=True):
        event.id = event_id


@dataclass(frozen=True)
class EventFilter:
    machine: str | None = None
    workflow: str | None = None
    kind_prefix: str | None = None
    since: Mapping[str, int] | None = None
    """A tenant's scope: only events of these machines (id -> the first event id it may see,
    that of the machine's assignment to its project, or 0); None: every event (the provider)."""
    projects: frozenset[str] = frozenset()
    """With `since`: the tenant's projects; `rescoped` follows machines into and out of them."""
    latest: Mapping[str, int] = field(default_factory=dict)
    """Machine id -> its latest assignment the scope knows of: an older one, arriving late
    (another path, another process), does not undo it."""

    def matches(self, event: Event) -> bool:
        """What a reader is shown: the events `where` finds in the stored log."""
        return (
            (self.machine is None or event.machine_name == self.machine)
            and (self.workflow is None or event.workflow_id == self.workflow)
            and (self.kind_prefix is None or event.kind.startswith(self.kind_prefix))
            and self._in_scope(event)
        )

    def _in_scope(self, event: Event) -> bool:
        if self.since is None:
            return True
        first = None if event.machine_id is None else self.since.get(event.machine_id)
        return first is not None and event.id >= first

    def assigned(self, machine_id: str, event_id: int, *, joined: bool) -> EventFilter:
        """The scope once assignment `event_id` moved `machine_id` into one of the tenant's
        projects (`joined`) or out of them; unchanged for the provider or a stale assignment."""
        if self.since is None or self.latest.get(machine_id, -1) >= event_id:
            return self
        since = {m: first for m, first in self.since.items() if m != machine_id}
        if joined:
            since[machine_id] = event_id
        latest = {**self.latest, machine_id: event_id}
        return dataclasses.replace(self, since=since, latest=latest)

    def rescoped(self, event: Event) -> EventFilter:
        """The scope after `event`: a machine's assignment from or to one of the tenant's
        projects widens or narrows it (whatever the other fields select)."""
        if (
            self.since is None
            or event.kind != ASSIGNED
            or event.machine_id is None
            or not {event.data.get("before"), event.data.get("after")} & self.projects
        ):
            return self
        return self.assigned(
            event.machine_id, event.id, joined=event.data.get("after") in self.projects
        )

    def where(self, query: Any) -> Any:
        """The stored-log side of `matches`, but for the ends of a scope: a machine's events
        after it left the tenant's projects are found too (`replay` drops them)."""
        if self.machine is not None:
            query = query.where(Event.machine_name == self.machine)
        if self.workflow is not None:
            query = query.where(Event.workflow_id == self.workflow)
        if self.kind_prefix is not None:
            query = query.where(Event.kind.startswith(self.kind_prefix, autoescape=True))
        if self.since is not None:
            whole = [machine for machine, first in self.since.items() if not first]
            scope: list[ColumnElement[bool]] = [Event.machine_id.in_(whole)] if whole else []
            scope += [
                and_(Event.machine_id == machine, Event.id >= first)
                for machine, first in self.since.items()
                if first
            ]
            query = query.where(or_(false(), *scope))
        return query


def replay(event_filter: EventFilter, found: Iterable[Event]) -> tuple[EventFilter, list[Event]]:
    """Stored events, oldest first, as the scope moved along them: a machine's assignment out
    of the tenant's projects hides it and what followed. The scope after the last one, and the
    events shown."""
    if event_filter.since is None:
        return event_filter, list(found)
    shown = []
    for event in found:
        event_filter = event_filter.rescoped(event)
        if event_filter.matches(event):
            shown.append(event)
    return event_filter, shown


@dataclass(eq=False)
class Subscription:
    """A live stream's queue; a reader too slow to keep up is cut off (`overflowed`) and
    resumes from the stored log with Last-Event-ID, so no event is lost silently."""

    filter: EventFilter
    queue: asyncio.Queue[Event | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=10_000)
    )
    """None in the queue means the server is stopping."""
    overflowed: bool = False


class EventBus:
    """Fan-out of committed events to SSE subscribers and to agents waiting for work."""

    def __init__(self) -> None:
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscriptions: set[Subscription] = set()
        self._machine_waiters: dict[str, set[asyncio.Event]] = {}
        self.listeners: list[Callable[[Event], None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, objects: list[Any]) -> None:
        events = [obj for obj in objects if isinstance(obj, Event)]
        if not events or self._loop is None or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._dispatch(events)
        else:
            self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            for listener in self.listeners:
                listener(event)
            if event.machine_id is not None:
                for waiter in self._machine_waiters.get(event.machine_id, ()):
                    waiter.set()
            for sub in list(self._subscriptions):
                sub.filter = sub.filter.rescoped(event)
                if not sub.filter.matches(event):
                    continue
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.overflowed = True

    def close_soon(self) -> None:
        """End every stream and long poll (the server is stopping); safe from a signal handler."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close)

    def _close(self) -> None:
        self.closed = True
        for sub in self._subscriptions:
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)
        for waiters in self._machine_waiters.values():
            for waiter in waiters:
                waiter.set()

    def subscribe(self, event_filter: EventFilter) -> Subscription:
        sub = Subscription(event_filter)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    @contextlib.contextmanager
    def watch_machine(self, machine_id: str) -> Iterator[asyncio.Event]:
        """An asyncio.Event set by every committed event about this machine.

        Register before checking for work, so an event committed in between is never missed.
        """
        waiter = asyncio.Event()
        waiters = self._machine_waiters.setdefault(machine_id, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._machine_waiters.pop(machine_id, None)


def list_events(
    session: Session, event_filter: EventFilter, *, after: int = 0, limit: int = 1000
) -> list[Event]:
    """Oldest first: the first `limit` events after `after`, or without `after` the newest
    `limit` (the tail a human asks for)."""
    query = event_filter.where(select(Event))
    if after:
        return list(session.scalars(query.where(Event.id > after).order_by(Event.id).limit(limit)))
    newest = session.scalars(query.order_by(Event.id.desc()).limit(limit)).all()
    return list(reversed(newest))


class PostgresRelay:
    """Carries committed events to the other metalflow processes sharing one PostgreSQL.

    Each transaction NOTIFYs the ids of its events (delivered only on commit); every process
    LISTENs, loads the events it did not write itself and publishes them on its own bus, so
    long-polls and event streams wake up whichever replica the client is connected to.
    """

    CHANNEL = "metalflow_events"

    def __init__(self, bus: EventBus, dsn: str, load: Callable[[list[int]], list[Event]]) -> None:
        self.bus = bus
        self.dsn = dsn
        self.load = load
        self.origin = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def announce(self, session: Session, objects: list[Any]) -> None:
        events = [obj for obj in objects if isinstance(obj, Event)]
        if not events:
            return
        payload = json.dumps({"origin": self.origin, "ids": [event.id for event in events]})
        session.execute(select(func.pg_notify(self.CHANNEL, payload)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="event-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._relay(note.payload)
            except Exception:
                log.warning("event=relay.reconnect", exc_info=True)
                self._stop.wait(1.0)

    def _relay(self, payload: str) -> None:
        message = json.loads(payload)
        if message.get("origin") == self.origin:
            return
        self.bus.publish(self.load([int(i) for i in message.get("ids", [])]))


PRUNE_BATCH = 10_000


def prune_events(session: Session, before: dt.datetime) -> int:
    """Delete up to one batch of events older than `before`; a later call takes the rest, so
    one pass never holds the (SQLite) write lock for long."""
    oldest = select(Event.id).where(Event.time < before).order_by(Event.id).limit(PRUNE_BATCH)
    ids = list(session.scalars(oldest))
    if ids:
        session.execute(delete(Event).where(Event.id.in_(ids)))
    return len(ids)


def load_events(session: Session, ids: list[int]) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.id.in_(ids)).order_by(Event.id)))
