"""Templates API (templates are written through `apply`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from metalflow.services import Reader, ServicesDep, Writer
from metalflow.templates import service
from metalflow.templates.schemas import TemplateList, TemplatePublic

router = APIRouter(prefix="/templates", tags=["templates"])


@router.get("")
def list_templates(services: ServicesDep, _: Reader) -> TemplateList:
    with services.db.read() as session:
        items = [service.summary(row) for row in service.list_templates(session)]
    return TemplateList(items=items, count=len(items))


@router.get("/{name}")
def show_template(name: str, services: ServicesDep, _: Reader) -> TemplatePublic:
    with services.db.read() as session:
        return service.to_public(service.get_template(session, name))


@router.delete("/{name}", status_code=204)
def delete_template(name: str, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        service.delete_template(session, service.get_template(session, name))
    return Response(status_code=204)
