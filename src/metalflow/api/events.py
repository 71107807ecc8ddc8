"""Events API: the stored log as JSON, or followed live as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from metalflow.api.schemas import EventList, EventPublic
from metalflow.events import Event, EventFilter, list_events
from metalflow.services import Reader, Services, ServicesDep

router = APIRouter(tags=["events"])
KEEPALIVE_SECONDS = 15.0


def _read(services: Services, event_filter: EventFilter, after: int, limit: int) -> list[Event]:
    with services.db.read() as session:
        return list_events(session, event_filter, after=after, limit=limit)


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
    _: Reader,
    machine: str | None = None,
    workflow: str | None = None,
    kind: str | None = Query(None, description="kind prefix, e.g. workflow.action"),
    after: int = Query(0, ge=0, le=2**62, description="only events with a larger id"),
    limit: int = Query(100, ge=1, le=10_000),
    follow: bool = Query(False, description="stream as text/event-stream"),
    last_event_id: int | None = Header(None, ge=0, le=2**62),
) -> EventList | StreamingResponse:
    event_filter = EventFilter(machine=machine, workflow=workflow, kind_prefix=kind)
    start = max(after, last_event_id or 0)
    if not follow:
        items = await run_in_threadpool(_read, services, event_filter, start, limit)
        return EventList(
            items=[EventPublic.model_validate(e.public()) for e in items], count=len(items)
        )

    async def stream() -> AsyncIterator[bytes]:
        sub = services.bus.subscribe(event_filter)
        try:
            backlog = await run_in_threadpool(_read, services, event_filter, start, limit)
            last = start
            while backlog:
                for event in backlog:
                    last = event.id
                    yield _sse(event)
                if not start or len(backlog) < limit:
                    break
                backlog = await run_in_threadpool(_read, services, event_filter, last, limit)
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
                    yield _sse(live)
        finally:
            services.bus.unsubscribe(sub)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
