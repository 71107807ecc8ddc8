"""Purges audit entries older than the retention setting (the controller role), once an hour:
the log is append-only for everyone else."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from fastapi.concurrency import run_in_threadpool

from metalflow.db.base import utcnow
from metalflow.db.engine import Database
from metalflow.tenancy import service

log = logging.getLogger("metalflow.tenancy")

PURGE_SECONDS = 3600.0


def purge_once(db: Database, retention: dt.timedelta) -> int:
    with db.write() as session:
        return service.prune_audit(session, utcnow() - retention)


async def run_audit_purges(
    db: Database, retention: dt.timedelta, interval: float = PURGE_SECONDS
) -> None:
    while True:
        try:
            purged = await run_in_threadpool(purge_once, db, retention)
            if purged:
                log.info("event=audit.purged entries=%d", purged)
        except Exception:
            log.exception("event=audit.purge_error")
        await asyncio.sleep(interval)
