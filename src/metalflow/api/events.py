"""Events API: the stored log as JSON, or followed live as Server-Sent Events.

A tenant sees the events of the machines of its projects, each from the machine's latest
assignment to one of them on (`EventFilter.since`), in the stored log and live alike. The bus
moves a live stream's scope with every assignment it carries, and the stored log is replayed
the same way (`events.replay`), so a machine that leaves the tenant's projects takes what
follows with it, wherever the stream is reading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from metalflow.api.schemas import EventList, EventPublic
from metalflow.events import ASSIGNED, Event, EventFilter, list_events, replay
from metalflow.inventory import service as inventory
from metalflow.services import ProjectReader, Services, ServicesDep, visible

router = APIRouter(tags=["events"])
KEEPALIVE_SECONDS = 15.0


def _read(services: Services, event_filter: EventFilter, after: int, limit: int) -> list[Event]:
    with services.db.read() as session:
        return list_events(session, event_filter, after=after, limit=limit)


def _scope(services: Services, projects: frozenset[str]) -> dict[str, int]:
    """The machines of `projects` as assigned now, each with the id of its latest assignment
    (0: none recorded)."""
    with services.db.read() as session:
        machines = inventory.machine_ids_in(session, projects)
        assigned = inventory.latest_assignments(session, machines)
    return {m: assigned[m].id if m in assigned else 0 for m in machines}


def _merged(event_filter: EventFilter, scope: dict[str, int]) -> EventFilter:
    for machine_id, first in scope.items():
        event_filter = event_filter.assigned(machine_id, first, joined=True)
    return event_filter


def _learned(event_filter: EventFilter, known: EventFilter) -> EventFilter:
    """`event_filter` told the assignments `known` saw."""
    for machine_id, event_id in known.latest.items():
        joined = known.since is not None and machine_id in known.since
        event_filter = event_filter.assigned(machine_id, event_id, joined=joined)
    return event_filter


def _public(event: Event, projects: frozenset[str] | None) -> dict[str, Any]:
    """The event as `projects`' tenant (None: the provider) may see it: a machine's assignment
    does not name the other tenant's project it came from or went to."""
    shown = event.public()
    if projects is not None and event.kind == ASSIGNED:
        shown["data"] = {
            key: value if key not in ("before", "after") or value in projects else None
            for key, value in event.data.items()
        }
    return shown


def _sse(event: Event, projects: frozenset[str] | None) -> bytes:
    data = json.dumps(_public(event, projects), separators=(",", ":"))
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

    async def scoped(event_filter: EventFilter) -> EventFilter:
        if projects is None:
            return event_filter
        return _merged(event_filter, await run_in_threadpool(_scope, services, projects))

    async def pages(
        event_filter: EventFilter, after: int
    ) -> AsyncIterator[tuple[EventFilter, list[Event], int]]:
        """The stored events after `after` (all of them when resuming, else the newest
        `limit`) a page at a time: the scope after the page, what it shows, its last id."""
        page = await run_in_threadpool(_read, services, event_filter, after, limit)
        while page:
            event_filter, shown = replay(event_filter, page)
            yield event_filter, shown, page[-1].id
            if not after or len(page) < limit:
                return
            after = page[-1].id
            page = await run_in_threadpool(_read, services, event_filter, after, limit)

    if not follow:
        items = [e async for _, shown, _ in pages(await scoped(event_filter), start) for e in shown]
        return EventList(
            items=[EventPublic.model_validate(_public(e, projects)) for e in items],
            count=len(items),
        )

    async def stream() -> AsyncIterator[bytes]:
        # Subscribed before the scope and the backlog are read, so that nothing committed in
        # between is missed; the bus moves the scope with every assignment it sees.
        sub = services.bus.subscribe(event_filter)
        try:
            sub.filter = await scoped(sub.filter)
            known, last = sub.filter, start
            async for page_filter, shown, page_last in pages(sub.filter, start):
                known, last = page_filter, page_last
                for event in shown:
                    yield _sse(event, projects)
            sub.filter = _learned(sub.filter, known)
            while not await request.is_disconnected() and not sub.overflowed:
                try:
                    live = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if live is None:
                    break
                if live.id > last:
                    last = live.id
                    yield _sse(live, projects)
        finally:
            services.bus.unsubscribe(sub)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
