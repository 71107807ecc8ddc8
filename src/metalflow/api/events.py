"""Events API: the stored log as JSON, or followed live as Server-Sent Events.

A tenant sees the events of the machines of its projects, each from the machine's latest
assignment to one of them on (`EventFilter.since`), in the stored log and live alike; a live
stream re-reads its scope whenever a machine moves into or out of the tenant's projects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from metalflow.api.schemas import EventList, EventPublic
from metalflow.events import Event, EventFilter, list_events
from metalflow.inventory import service as inventory
from metalflow.services import ProjectReader, Services, ServicesDep, visible

router = APIRouter(tags=["events"])
KEEPALIVE_SECONDS = 15.0


def _read(services: Services, event_filter: EventFilter, after: int, limit: int) -> list[Event]:
    with services.db.read() as session:
        return list_events(session, event_filter, after=after, limit=limit)


def _scoped(services: Services, event_filter: EventFilter) -> EventFilter:
    """`event_filter` narrowed to its tenant's machines as they are assigned now."""
    if event_filter.since is None:
        return event_filter
    with services.db.read() as session:
        machines = inventory.list_machines(session, projects=event_filter.projects)
        assigned = inventory.latest_assignments(session, [m.id for m in machines])
    since = {m.id: assigned[m.id].id if m.id in assigned else 0 for m in machines}
    return dataclasses.replace(event_filter, since=since)


def _sse(event: Event) -> bytes:
    data = json.dumps(event.public(), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@router.get(
    "/events",
    response_model=EventList,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def events(
    request: Request,
    services: ServicesDep,
    principal: ProjectReader,
    machine: str | None = None,
    workflow: str | None = None,
    kind: str | None = Query(None, description="kind prefix, e.g. workflow.action"),
    after: int = Query(0, ge=0, le=2**62, description="only events with a larger id"),
    limit: int = Query(100, ge=1, le=10_000),
    follow: bool = Query(False, description="stream as text/event-stream"),
    last_event_id: int | None = Header(None, ge=0, le=2**62),
) -> EventList | StreamingResponse:
    projects = visible(principal)
    event_filter = EventFilter(
        machine=machine,
        workflow=workflow,
        kind_prefix=kind,
        since=None if projects is None else {},
        projects=projects or frozenset(),
    )
    start = max(after, last_event_id or 0)
    if not follow:
        event_filter = await run_in_threadpool(_scoped, services, event_filter)
        items = await run_in_threadpool(_read, services, event_filter, start, limit)
        return EventList(
            items=[EventPublic.model_validate(e.public()) for e in items], count=len(items)
        )

    async def backlog(event_filter: EventFilter, after: int) -> AsyncIterator[Event]:
        """The stored events after `after`: all of them when resuming (`after` given), else
        the newest `limit`."""
        page = await run_in_threadpool(_read, services, event_filter, after, limit)
        while page:
            for event in page:
                yield event
            if not after or len(page) < limit:
                return
            after = page[-1].id
            page = await run_in_threadpool(_read, services, event_filter, after, limit)

    async def stream() -> AsyncIterator[bytes]:
        # Subscribed before the scope and the backlog are read, so nothing committed in
        # between is missed; the scope is set on the loop, where the bus matches events.
        sub = services.bus.subscribe(event_filter)
        try:
            sub.filter = await run_in_threadpool(_scoped, services, event_filter)
            last = start
            async for event in backlog(sub.filter, start):
                last = event.id
                yield _sse(event)
            while not await request.is_disconnected() and not sub.overflowed:
                try:
                    live = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if live is None:
                    break
                if sub.filter.rescopes(live):
                    # What the old scope turned away since this event is in the stored log.
                    before = set(sub.filter.since or {})
                    sub.filter = await run_in_threadpool(_scoped, services, sub.filter)
                    async for event in backlog(sub.filter, live.id - 1):
                        if event.id > last or event.machine_id not in before:
                            last = max(last, event.id)
                            yield _sse(event)
                    continue
                if live.id > last and sub.filter.selects(live):
                    last = live.id
                    yield _sse(live)
        finally:
            services.bus.unsubscribe(sub)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
