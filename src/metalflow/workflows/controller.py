"""The controller loop: ends what ran past its deadline. Safe to run in several processes on
PostgreSQL (rows are taken with SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.workflows import service

log = logging.getLogger("metalflow.controller")


def sweep_once(db: Database) -> int:
    with db.write() as session:
        return service.sweep(session, utcnow(), skip_locked=not db.is_sqlite)


async def run_controller(db: Database, interval: float) -> None:
    while True:
        try:
            handled = await run_in_threadpool(sweep_once, db)
            if handled:
                log.info("event=controller.sweep handled=%d", handled)
        except Exception:
            log.exception("event=controller.error")
        await asyncio.sleep(interval)
