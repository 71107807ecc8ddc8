"""The provider's catalogue under /api/v1: metros, plans (and their check), operating systems and
capacity. Provider-only: Reader for reads, Writer for writes; tenants see the catalogue through
the Metal API instead. Creates are POST (409 when the object exists), changes PATCH, as the IPAM
router does; `metalflow apply -f` upserts the same objects. The 409s (an object that exists, one
still in use) are declared in api.openapi's CONFLICTS."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from metalflow.cloud import catalogue
from metalflow.cloud.catalogue_schemas import (
    Capacity,
    MetroCreate,
    MetroList,
    MetroPublic,
    MetroUpdate,
    OperatingSystemCreate,
    OperatingSystemList,
    OperatingSystemPublic,
    OperatingSystemUpdate,
    PlanCheck,
    PlanCreate,
    PlanList,
    PlanPublic,
    PlanUpdate,
)
from metalflow.cloud.install import install_template_name
from metalflow.cloud.tables import Metro, OperatingSystem, Plan
from metalflow.services import Reader, ServicesDep, Writer, note_audit

router = APIRouter(tags=["catalogue"])


def _metro(session: Session, row: Metro) -> MetroPublic:
    return MetroPublic.of(row, catalogue.machines_per_metro(session).get(row.code, 0))


def _plan(session: Session, row: Plan) -> PlanPublic:
    return PlanPublic.of(row, catalogue.machines_per_plan(session).get(row.id, 0))


def _os(row: OperatingSystem) -> OperatingSystemPublic:
    return OperatingSystemPublic.of(row, install_template_name(row))


def _metadata_url(request: Request, services: ServicesDep) -> str:
    return catalogue.metadata_url(services.settings, request.headers.get("host"))


@router.get("/metros", response_model=MetroList)
def list_metros(services: ServicesDep, _: Reader) -> MetroList:
    with services.db.read() as session:
        counts = catalogue.machines_per_metro(session)
        rows = catalogue.list_metros(session)
        items = [MetroPublic.of(row, counts.get(row.code, 0)) for row in rows]
    return MetroList(items=items, count=len(items))


@router.post("/metros", status_code=201, response_model=MetroPublic)
def create_metro(
    body: MetroCreate, request: Request, services: ServicesDep, _: Writer
) -> MetroPublic:
    with services.db.write() as session:
        row = catalogue.create_metro(session, body)
        note_audit(request, "metro", row.id, summary={"code": row.code, "created": True})
        return _metro(session, row)


@router.get("/metros/{code}", response_model=MetroPublic)
def show_metro(code: str, services: ServicesDep, _: Reader) -> MetroPublic:
    with services.db.read() as session:
        return _metro(session, catalogue.get_metro(session, code))


@router.patch("/metros/{code}", response_model=MetroPublic)
def update_metro(
    code: str, body: MetroUpdate, request: Request, services: ServicesDep, _: Writer
) -> MetroPublic:
    with services.db.write() as session:
        row = catalogue.update_metro(session, code, body)
        note_audit(
            request, "metro", row.id, summary={"code": code, **body.model_dump(exclude_unset=True)}
        )
        return _metro(session, row)


@router.delete("/metros/{code}", status_code=204)
def delete_metro(code: str, request: Request, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        row = catalogue.delete_metro(session, code)
        note_audit(request, "metro", row.id, summary={"code": code, "deleted": True})
    return Response(status_code=204)


@router.get("/plans", response_model=PlanList)
def list_plans(services: ServicesDep, _: Reader) -> PlanList:
    with services.db.read() as session:
        counts = catalogue.machines_per_plan(session)
        items = [PlanPublic.of(row, counts.get(row.id, 0)) for row in catalogue.list_plans(session)]
    return PlanList(items=items, count=len(items))


@router.post("/plans", status_code=201, response_model=PlanPublic)
def create_plan(body: PlanCreate, request: Request, services: ServicesDep, _: Writer) -> PlanPublic:
    """Machines are re-classified in the same transaction: the new plan holds those that match
    it and no plan before it by slug."""
    with services.db.write() as session:
        row = catalogue.create_plan(session, body)
        note_audit(request, "plan", row.id, summary={"slug": row.slug, "created": True})
        return _plan(session, row)


@router.get("/plans/{slug}", response_model=PlanPublic)
def show_plan(slug: str, services: ServicesDep, _: Reader) -> PlanPublic:
    with services.db.read() as session:
        return _plan(session, catalogue.get_plan(session, slug))


@router.get("/plans/{slug}/check", response_model=PlanCheck)
def check_plan(slug: str, services: ServicesDep, _: Reader) -> PlanCheck:
    """The machines the plan's rule matches, and every other machine with why it misses."""
    with services.db.read() as session:
        return catalogue.plan_check(session, slug)


@router.patch("/plans/{slug}", response_model=PlanPublic)
def update_plan(
    slug: str, body: PlanUpdate, request: Request, services: ServicesDep, _: Writer
) -> PlanPublic:
    with services.db.write() as session:
        row = catalogue.update_plan(session, slug, body)
        changed = sorted(body.model_dump(exclude_unset=True))
        note_audit(request, "plan", row.id, summary={"slug": slug, "changed": changed})
        return _plan(session, row)


@router.delete("/plans/{slug}", status_code=204)
def delete_plan(slug: str, request: Request, services: ServicesDep, _: Writer) -> Response:
    with services.db.write() as session:
        row = catalogue.delete_plan(session, slug)
        note_audit(request, "plan", row.id, summary={"slug": slug, "deleted": True})
    return Response(status_code=204)


@router.get("/operating-systems", response_model=OperatingSystemList)
def list_operating_systems(services: ServicesDep, _: Reader) -> OperatingSystemList:
    with services.db.read() as session:
        items = [_os(row) for row in catalogue.list_operating_systems(session)]
    return OperatingSystemList(items=items, count=len(items))


@router.post("/operating-systems", status_code=201, response_model=OperatingSystemPublic)
def create_operating_system(
    body: OperatingSystemCreate, request: Request, services: ServicesDep, _: Writer
) -> OperatingSystemPublic:
    """Without a template, its install template `os-SLUG` is generated and stored with it."""
    url = _metadata_url(request, services)
    with services.db.write() as session:
        row = catalogue.create_operating_system(session, body, url)
        note_audit(request, "operating_system", row.id, summary={"slug": row.slug, "created": True})
        return _os(row)


@router.get("/operating-systems/{slug}", response_model=OperatingSystemPublic)
def show_operating_system(slug: str, services: ServicesDep, _: Reader) -> OperatingSystemPublic:
    with services.db.read() as session:
        return _os(catalogue.get_operating_system(session, slug))


@router.patch("/operating-systems/{slug}", response_model=OperatingSystemPublic)
def update_operating_system(
    slug: str, body: OperatingSystemUpdate, request: Request, services: ServicesDep, _: Writer
) -> OperatingSystemPublic:
    url = _metadata_url(request, services)
    with services.db.write() as session:
        row = catalogue.update_operating_system(session, slug, body, url)
        changed = sorted(body.model_dump(exclude_unset=True))
        note_audit(request, "operating_system", row.id, summary={"slug": slug, "changed": changed})
        return _os(row)


@router.delete("/operating-systems/{slug}", status_code=204)
def delete_operating_system(
    slug: str, request: Request, services: ServicesDep, _: Writer
) -> Response:
    with services.db.write() as session:
        row = catalogue.delete_operating_system(session, slug)
        note_audit(request, "operating_system", row.id, summary={"slug": slug, "deleted": True})
    return Response(status_code=204)


@router.get("/capacity", response_model=Capacity)
def capacity(services: ServicesDep, _: Reader) -> Capacity:
    """Ready machines with no project and no hardware reservation, per metro and plan."""
    with services.db.read() as session:
        return catalogue.capacity(session)
