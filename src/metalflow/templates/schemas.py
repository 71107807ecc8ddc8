"""What the templates API sends."""

from __future__ import annotations

from pydantic import BaseModel


class TemplateSummary(BaseModel):
    """A template as listed: its counts, not its body."""

    name: str
    version: str
    tasks: int
    actions: int
    created_at: str
    updated_at: str


class TemplatePublic(TemplateSummary):
    data: str
    """The YAML as applied."""


class TemplateList(BaseModel):
    items: list[TemplateSummary]
    count: int
