"""What the API's own routes send: the event log and the health check."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from metalflow.config import Role


class EventPublic(BaseModel):
    """One event, as listed and as an SSE `data:` line."""

    id: int
    time: str
    machine: str | None
    workflow: str | None
    kind: str
    data: dict[str, Any]


class EventList(BaseModel):
    items: list[EventPublic]
    count: int


class Ready(BaseModel):
    status: Literal["ok"]
    version: str
    roles: list[Role]
    """What this process runs (`metalflow up --roles`)."""


class Starting(BaseModel):
    status: Literal["starting"]
