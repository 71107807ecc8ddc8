"""Returns quarantined blocks to their pools once their time is up (the controller role)."""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from metalflow.db.engine import Database
from metalflow.ipam import service

log = logging.getLogger("metalflow.ipam")

SWEEP_SECONDS = 30.0


def sweep_once(db: Database) -> int:
    with db.write() as session:
        return service.sweep_quarantine(session)


async def run_quarantine_sweeps(db: Database, interval: float = SWEEP_SECONDS) -> None:
    while True:
        try:
            freed = await run_in_threadpool(sweep_once, db)
            if freed:
                log.info("event=ipam.quarantine_ended blocks=%d", freed)
        except Exception:
            log.exception("event=ipam.sweep_error")
        await asyncio.sleep(interval)
