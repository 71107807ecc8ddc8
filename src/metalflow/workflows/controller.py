"""The controller loop: ends what ran past its deadline and prunes old events. Safe to run in
several processes on PostgreSQL (rows are taken with SKIP LOCKED; pruning is idempotent)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from fastapi.concurrency import run_in_threadpool

from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.events import prune_events
from metalflow.workflows import engine

log = logging.getLogger("metalflow.controller")


def sweep_once(db: Database) -> int:
    with db.write() as session:
        return engine.sweep(session, utcnow(), skip_locked=not db.is_sqlite)


PRUNE_EVERY_SECONDS = 60.0


def prune_once(db: Database, retention_hours: float) -> int:
    with db.write() as session:
        return prune_events(session, utcnow() - dt.timedelta(hours=retention_hours))


async def run_controller(db: Database, interval: float, event_retention_hours: float) -> None:
    next_prune = time.monotonic()
    while True:
        try:
            handled = await run_in_threadpool(sweep_once, db)
            if handled:
                log.info("event=controller.sweep handled=%d", handled)
            if event_retention_hours and time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                pruned = await run_in_threadpool(prune_once, db, event_retention_hours)
                if pruned:
                    log.info("event=controller.prune events=%d", pruned)
        except Exception:
            log.exception("event=controller.error")
        await asyncio.sleep(interval)
