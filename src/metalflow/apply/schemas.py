"""What `POST /api/v1/apply` sends."""

from __future__ import annotations

from pydantic import BaseModel


class ApplyResult(BaseModel):
    """What became of one document, or of a stored machine it changed."""

    kind: str
    name: str
    action: str
    """created, updated or unchanged."""


class ApplyAnswer(BaseModel):
    dry_run: bool
    results: list[ApplyResult]
