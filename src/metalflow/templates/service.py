"""Stored templates: validated when applied, rendered when a workflow is created."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow import events
from metalflow.errors import Invalid, NotFound
from metalflow.templates import TemplateError, check_template
from metalflow.templates.schemas import TemplatePublic, TemplateSummary
from metalflow.templates.tables import Template


def template_error(exc: TemplateError, where: str) -> Invalid:
    line = f" (line {exc.line})" if exc.line else ""
    field = where if exc.field == "template" else f"{where}.{exc.field}"
    return Invalid(f"{field}{line}: {exc.message}", field=field)


def apply_template(
    session: Session, name: str, data: str, *, where: str = "spec.data"
) -> Literal["created", "updated", "unchanged"]:
    try:
        spec = check_template(data)
    except TemplateError as exc:
        raise template_error(exc, where) from exc
    row = session.scalar(select(Template).where(Template.name == name))
    if row is not None and row.data == data:
        return "unchanged"
    outcome: Literal["created", "updated"] = "created" if row is None else "updated"
    if row is None:
        row = Template(name=name)
        session.add(row)
    row.data = data
    row.version = spec.version
    row.task_count = len(spec.tasks)
    row.action_count = sum(len(task.actions) for task in spec.tasks)
    events.record(session, f"template.{outcome}", template=name)
    return outcome


def get_template(session: Session, name: str) -> Template:
    row = session.scalar(select(Template).where(Template.name == name))
    if row is None:
        raise NotFound(f"template {name!r} not found", field="template")
    return row


def list_templates(session: Session) -> list[Template]:
    return list(session.scalars(select(Template).order_by(Template.name)))


def summary(row: Template) -> TemplateSummary:
    return TemplateSummary(
        name=row.name,
        version=row.version,
        tasks=row.task_count,
        actions=row.action_count,
        created_at=row.created_at.isoformat(),
        updated_at=row.updated_at.isoformat(),
    )


def to_public(row: Template) -> TemplatePublic:
    return TemplatePublic(**summary(row).model_dump(), data=row.data)


def delete_template(session: Session, row: Template) -> None:
    events.record(session, "template.deleted", template=row.name)
    session.delete(row)
