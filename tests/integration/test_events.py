"""The event log: old events are pruned in batches, newer ones stay."""

from __future__ import annotations

import datetime as dt

from metalflow.config import Settings
from metalflow.db.base import utcnow
from metalflow.events import PRUNE_BATCH, Event, EventFilter, list_events, prune_events
from metalflow.server import build_services


def test_prune_deletes_only_old_events_in_batches(settings: Settings) -> None:
    services = build_services(settings)
    now = utcnow()
    old = now - dt.timedelta(days=40)
    try:
        with services.db.write() as session:
            session.add_all(
                Event(time=old, kind="test.old", data={}) for _ in range(PRUNE_BATCH + 5)
            )
            session.add(Event(time=now, kind="test.new", data={}))
        cutoff = now - dt.timedelta(days=30)
        with services.db.write() as session:
            assert prune_events(session, cutoff) == PRUNE_BATCH
        with services.db.write() as session:
            assert prune_events(session, cutoff) == 5
        with services.db.write() as session:
            assert prune_events(session, cutoff) == 0
        with services.db.read() as session:
            left = list_events(session, EventFilter(kind_prefix="test."))
        assert [event.kind for event in left] == ["test.new"]
    finally:
        services.db.dispose()
