"""Who am I on the Metal API: `/user`, `/users/{id}`, `/organizations`, `/projects`, as Equinix
Metal answered them to packet-python and equinix-metal.

Everything goes through the tenancy service and policy, as `/api/v1`'s tenancy routes do
(tenancy/router.py was the model): tenants see their organizations and projects and get the
very 404 of a missing one for anybody else's; the provider sees all. Decisions are taken on the
caller's memberships as they are now (`current`), not as the key cache remembers them.

`GET /user` answers the person a user key acts for. The admin token is no person but the
provider's, and the provider's own tooling (metal-cli, Terraform) calls `/user` before anything
else, so it gets a pseudo-user `provider` rather than an error; a project key acts for a
project, and Equinix refused it `/user` too: a 422 naming the header and what to use instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.cloud import sshkeys
from metalflow.cloud.identity_schemas import (
    MetalOrganization,
    MetalOrganizationList,
    MetalProject,
    MetalProjectCreate,
    MetalProjectList,
    MetalProjectUpdate,
    MetalUser,
    organization_link,
    project_link,
    user_link,
)
from metalflow.cloud.metal import Fields, FieldsDep, Page, PageDep, href, link
from metalflow.cloud.tables import Device, SshKey
from metalflow.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from metalflow.services import ProjectReader, ProjectWriter, ServicesDep, note_audit, require
from metalflow.tenancy import policy
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.policy import OrgAction, PrincipalKind
from metalflow.tenancy.tables import Organization, Project, ProjectMember, User

router = APIRouter(tags=["metal"])

STALE_KEY = "unknown, revoked or expired API key"
PROVIDER_USER = "provider"
"""The id of the admin token's pseudo-user."""
T = TypeVar("T")


# --- who is asking ------------------------------------------------------------------------------


def current(session: Session, principal: Principal) -> Principal:
    """`principal` with its memberships as they are now (a key's principal is cached for
    seconds; a project just made must be usable at once)."""
    if principal.access is None:
        return principal
    fresh = tenancy.refresh_principal(session, principal.access)
    if fresh is None:
        raise Unauthorized(STALE_KEY, field="x-auth-token")
    return dataclasses.replace(principal, access=fresh)


def acting(principal: Principal) -> policy.Principal:
    """The caller as `tenancy.policy` reads it: the admin token is the provider."""
    if principal.access is not None:
        return principal.access
    return policy.Principal(PrincipalKind.PROVIDER, principal.name, read_only=principal.read_only)


def enforce(decision: policy.Decision, missing: NotFound) -> None:
    """Raise `missing` for NOT_FOUND (nothing is revealed), a 403 with the reason otherwise."""
    if decision.outcome is policy.Outcome.NOT_FOUND:
        raise missing
    if not decision.allowed:
        raise Forbidden(decision.reason)


def paged(rows: Sequence[T], page: Page) -> Sequence[T]:
    return rows[page.offset : page.offset + page.size]


# --- users --------------------------------------------------------------------------------------


def _names(name: str) -> tuple[str, str]:
    first, _, last = name.strip().partition(" ")
    return first, last.strip()


def user_document(user: User, fields: Fields | None = None) -> MetalUser:
    first, last = _names(user.name)
    document = {
        "id": user.id,
        "short_id": user.id[:8],
        "email": user.email,
        "first_name": first,
        "last_name": last,
        "full_name": user.name,
        "created_at": user.created_at,
        "emails": [],
        "href": user_link(user.id).href,
    }
    return MetalUser(**(fields.keep(document) if fields else document))


@router.get("/user", response_model=MetalUser, response_model_exclude_unset=True)
def show_current_user(
    services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> MetalUser:
    """The person the key acts for, with their only organization and project as defaults."""
    with services.db.read() as session:
        caller = acting(current(session, principal))
        if caller.user_id is None and caller.kind is PrincipalKind.PROVIDER:
            return MetalUser(
                **fields.keep(
                    {
                        "id": PROVIDER_USER,
                        "email": "",
                        "first_name": "Provider",
                        "last_name": "",
                        "full_name": principal.name,
                        "href": href("/user"),
                    }
                )
            )
        if caller.user_id is None:
            raise Invalid(
                "a project key acts for a project, not a person: GET /user needs a user's key"
                " (`metalflow login`, or POST /api/v1/keys with user_id)",
                field="x-auth-token",
            )
        user = tenancy.get_user(session, caller.user_id)
        answer = user_document(user, fields)
        organizations = policy.visible_organizations(caller) or frozenset()
        projects = policy.visible_projects(caller) or frozenset()
        defaults: dict[str, str] = {}
        if len(organizations) == 1 and "default_organization_id" not in fields.exclude:
            defaults["default_organization_id"] = next(iter(organizations))
        if len(projects) == 1 and "default_project_id" not in fields.exclude:
            defaults["default_project_id"] = next(iter(projects))
    return answer.model_copy(update=defaults)


@router.get("/users/{user_id}", response_model=MetalUser, response_model_exclude_unset=True)
def show_user(
    user_id: str, services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> MetalUser:
    """A tenant sees itself and the members of its organizations (the hrefs it is shown)."""
    with services.db.read() as session:
        caller = acting(current(session, principal))
        organizations = policy.visible_organizations(caller)
        if organizations is not None:
            seen = tenancy.users_seen_by(session, caller, organizations)
            if user_id not in seen:
                raise tenancy.user_missing(user_id)
        return user_document(tenancy.get_user(session, user_id), fields)


# --- organizations ------------------------------------------------------------------------------


def _organization_documents(
    session: Session, rows: Iterable[Organization], fields: Fields, among: frozenset[str] | None
) -> list[MetalOrganization]:
    """Each with its projects' hrefs (only those the caller sees) and its members'."""
    rows = list(rows)
    ids = [row.id for row in rows]
    projects: dict[str, list[str]] = defaultdict(list)
    query = select(Project.organization_id, Project.id).where(Project.organization_id.in_(ids))
    for organization_id, project_id in session.execute(query.order_by(Project.name)):
        if among is None or project_id in among:
            projects[organization_id].append(project_id)
    members: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        members[row.id] = [member.user_id for member in tenancy.list_org_members(session, row.id)]
    return [
        MetalOrganization(
            **fields.keep(
                {
                    "id": row.id,
                    "name": row.name,
                    "description": "",
                    "created_at": row.created_at,
                    "updated_at": row.created_at,
                    "projects": [project_link(p) for p in projects[row.id]],
                    "members": [user_link(u) for u in members[row.id]],
                    "href": organization_link(row.id).href,
                }
            )
        )
        for row in rows
    ]


@router.get(
    "/organizations", response_model=MetalOrganizationList, response_model_exclude_unset=True
)
def list_organizations(
    services: ServicesDep, principal: ProjectReader, page: PageDep, fields: FieldsDep
) -> MetalOrganizationList:
    """A tenant's own: those it is a member of, or of whose projects."""
    with services.db.read() as session:
        caller = acting(current(session, principal))
        rows = tenancy.list_organizations(session, policy.visible_organizations(caller))
        shown = paged(rows, page)
        items = _organization_documents(session, shown, fields, policy.visible_projects(caller))
    return MetalOrganizationList(organizations=items, meta=page.meta("/organizations", len(rows)))


def _check_org(
    session: Session, principal: Principal, action: OrgAction, organization_id: str
) -> policy.Principal:
    caller = acting(current(session, principal))
    missing = tenancy.organization_missing(organization_id)
    enforce(policy.decide_org(caller, action, organization_id), missing)
    return caller


@router.get(
    "/organizations/{organization_id}",
    response_model=MetalOrganization,
    response_model_exclude_unset=True,
)
def show_organization(
    organization_id: str, services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> MetalOrganization:
    with services.db.read() as session:
        caller = _check_org(session, principal, OrgAction.READ, organization_id)
        row = tenancy.get_organization(session, organization_id)
        among = policy.visible_projects(caller)
        return _organization_documents(session, [row], fields, among)[0]


# --- projects -----------------------------------------------------------------------------------


def project_documents(
    session: Session, rows: Iterable[Project], fields: Fields
) -> list[MetalProject]:
    """Each with the hrefs of its devices, members and SSH keys."""
    rows = list(rows)
    ids = [row.id for row in rows]
    devices: dict[str, list[str]] = defaultdict(list)
    query = select(Device.project_id, Device.id).where(Device.project_id.in_(ids))
    for project_id, device_id in session.execute(query.order_by(Device.created_at)):
        devices[project_id].append(device_id)
    members: dict[str, list[str]] = defaultdict(list)
    query_members = select(ProjectMember.project_id, ProjectMember.user_id)
    for project_id, user_id in session.execute(
        query_members.where(ProjectMember.project_id.in_(ids)).order_by(ProjectMember.id)
    ):
        members[project_id].append(user_id)
    keys: dict[str, list[str]] = defaultdict(list)
    query_keys = select(SshKey.project_id, SshKey.id).where(SshKey.project_id.in_(ids))
    for owner, key_id in session.execute(query_keys.order_by(SshKey.created_at)):
        if owner is not None:
            keys[owner].append(key_id)
    return [
        MetalProject(
            **fields.keep(
                {
                    "id": row.id,
                    "name": row.name,
                    "organization": organization_link(row.organization_id),
                    "created_at": row.created_at,
                    "updated_at": _updated_at(row),
                    "devices": [link(f"/devices/{d}") for d in devices[row.id]],
                    "members": [user_link(u) for u in members[row.id]],
                    "ssh_keys": [link(f"/ssh-keys/{k}") for k in keys[row.id]],
                    "tags": [],
                    "type": "default",
                    "href": project_link(row.id).href,
                }
            )
        )
        for row in rows
    ]


def _updated_at(row: Project) -> dt.datetime:
    """Projects keep no change time; their creation is the last one known."""
    return row.created_at


def _project_list(
    session: Session, rows: Sequence[Project], page: Page, fields: Fields, path: str
) -> MetalProjectList:
    items = project_documents(session, paged(rows, page), fields)
    return MetalProjectList(projects=items, meta=page.meta(path, len(rows)))


@router.get("/projects", response_model=MetalProjectList, response_model_exclude_unset=True)
def list_projects(
    services: ServicesDep, principal: ProjectReader, page: PageDep, fields: FieldsDep
) -> MetalProjectList:
    """A tenant's projects only; the provider's are all."""
    with services.db.read() as session:
        caller = current(session, principal)
        rows = tenancy.list_projects(session, among=_visible(caller))
        return _project_list(session, rows, page, fields, "/projects")


def _visible(principal: Principal) -> frozenset[str] | None:
    return policy.visible_projects(acting(principal))


@router.get(
    "/organizations/{organization_id}/projects",
    response_model=MetalProjectList,
    response_model_exclude_unset=True,
)
def list_organization_projects(
    organization_id: str,
    services: ServicesDep,
    principal: ProjectReader,
    page: PageDep,
    fields: FieldsDep,
) -> MetalProjectList:
    """The organization's projects the caller sees (a member of one project sees that one)."""
    with services.db.read() as session:
        _check_org(session, principal, OrgAction.READ, organization_id)
        rows = tenancy.list_projects(
            session, organization_id, _visible(current(session, principal))
        )
        path = f"/organizations/{organization_id}/projects"
        return _project_list(session, rows, page, fields, path)


def _create_project(
    session: Session,
    request: Request,
    principal: Principal,
    organization_id: str,
    body: MetalProjectCreate,
) -> MetalProject:
    """An owner or admin of the organization makes it; a person who does becomes its owner."""
    caller = _check_org(session, principal, OrgAction.CREATE_PROJECT, organization_id)
    project = tenancy.create_project(session, organization_id, body.name)
    if caller.kind is PrincipalKind.USER and caller.user_id is not None:
        tenancy.add_project_member(session, project.id, caller.user_id, policy.ProjectRole.OWNER)
    note_audit(
        request,
        "project",
        project.id,
        project_id=project.id,
        summary={"name": body.name, "organization_id": organization_id},
    )
    return project_documents(session, [project], Fields(frozenset(), frozenset()))[0]


@router.post(
    "/organizations/{organization_id}/projects",
    status_code=201,
    response_model=MetalProject,
    response_model_exclude_unset=True,
)
def create_organization_project(
    organization_id: str,
    body: MetalProjectCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> MetalProject:
    with services.db.write() as session:
        return _create_project(session, request, principal, organization_id, body)


@router.post(
    "/projects", status_code=201, response_model=MetalProject, response_model_exclude_unset=True
)
def create_project(
    body: MetalProjectCreate, request: Request, services: ServicesDep, principal: ProjectWriter
) -> MetalProject:
    """packet-python's `create_project(name)` sends a name only: the project goes into the
    caller's only organization, and a caller of several is asked which."""
    with services.db.write() as session:
        organization_id = body.organization_id
        if organization_id is None:
            caller = acting(current(session, principal))
            rows = tenancy.list_organizations(session, policy.visible_organizations(caller))
            if len(rows) != 1:
                names = ", ".join(f"{row.name} ({row.id})" for row in rows[:10])
                raise Invalid(
                    f"organization_id is missing: you belong to {len(rows)} organizations"
                    + (f" ({names})" if names else "")
                    + "; give the one the project goes into",
                    field="body.organization_id",
                )
            organization_id = rows[0].id
        return _create_project(session, request, principal, organization_id, body)


def _check_project(
    session: Session, principal: Principal, action: policy.Action, project_id: str
) -> Principal:
    caller = current(session, principal)
    require(caller, action, project_id, missing=tenancy.project_missing(project_id))
    return caller


@router.get(
    "/projects/{project_id}", response_model=MetalProject, response_model_exclude_unset=True
)
def show_project(
    project_id: str, services: ServicesDep, principal: ProjectReader, fields: FieldsDep
) -> MetalProject:
    with services.db.read() as session:
        _check_project(session, principal, policy.Action.READ, project_id)
        return project_documents(session, [tenancy.get_project(session, project_id)], fields)[0]


def _update_project(
    project_id: str,
    body: MetalProjectUpdate,
    request: Request,
    services: ServicesDep,
    principal: Principal,
) -> MetalProject:
    """A project's editors rename it (what metalflow keeps of a project is its name)."""
    with services.db.write() as session:
        _check_project(session, principal, policy.Action.WRITE, project_id)
        project = tenancy.get_project(session, project_id)
        before = project.name
        if body.name is not None and body.name != before:
            project = tenancy.rename_project(session, project_id, body.name)
        note_audit(
            request,
            "project",
            project_id,
            project_id=project_id,
            summary={"before": {"name": before}, "after": {"name": project.name}},
        )
        return project_documents(session, [project], Fields(frozenset(), frozenset()))[0]


@router.put(
    "/projects/{project_id}", response_model=MetalProject, response_model_exclude_unset=True
)
def replace_project(
    project_id: str,
    body: MetalProjectUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> MetalProject:
    """equinix-metal's `update_project` (PUT)."""
    return _update_project(project_id, body, request, services, principal)


@router.patch(
    "/projects/{project_id}", response_model=MetalProject, response_model_exclude_unset=True
)
def update_project(
    project_id: str,
    body: MetalProjectUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> MetalProject:
    """packet-python's `Project.update()` (PATCH)."""
    return _update_project(project_id, body, request, services, principal)


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(
    project_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """By its owner or an owner or admin of its organization; refused (409) while it has
    devices, machines or IP blocks. Its SSH keys go with it (SQLite enforces no cascade by
    itself)."""
    with services.db.write() as session:
        caller = acting(current(session, principal))
        enforce(
            policy.decide_project_deletion(caller, project_id), tenancy.project_missing(project_id)
        )
        project = tenancy.get_project(session, project_id)
        devices = session.scalars(
            select(Device.hostname)
            .where(Device.project_id == project_id)
            .order_by(Device.hostname)
            .limit(5)
        ).all()
        if devices:
            raise Conflict(
                f"project {project.name!r} still has devices ({', '.join(devices)}): delete"
                " them first",
                field="project",
            )
        for key in sshkeys.project_keys(session, project_id):
            session.delete(key)
        name = project.name
        quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
        tenancy.delete_project(session, project_id, quarantine=quarantine)
        note_audit(request, "project", project_id, project_id=project_id, summary={"name": name})
    return Response(status_code=204)
