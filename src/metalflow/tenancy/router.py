"""Tenancy API: organizations, projects, users, memberships, API keys, the audit log, sign-in.

Tenants reach it as they reached Equinix Metal's: anyone signed in founds organizations and owns
them; owners and admins make projects and manage members; a project's owner manages its members
and keys; lists show only what the caller belongs to, and anything else is the very 404 of a
resource that does not exist. Each decision is `services.require`/`visible` (projects) or a
`tenancy.policy` rule (organizations, memberships, keys), taken on the caller's memberships as
they are at that moment (`service.refresh_principal`), not as the key cache remembers them.
Creating and deleting users stays the provider's (`Writer`).

Every write appends an audit entry in the same transaction as its change, so no change is
without its entry, and notes it for the api's audit recorder (`note_audit`). `POST /login`
needs no token: it checks a password under a `SignInLimiter` per account and per address,
audits every wrong password, folds the refusals of a locked-out account and address into one
entry per window (`RefusalFolder`), and answers a new user key. For the folder, looked at the
`limits` package and the logging module's filters: both limit or drop, and neither carries the
count of what it dropped into the next record, which is what the audit needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import AwareDatetime
from sqlalchemy import select
from sqlalchemy.orm import Session

from metalflow.errors import Forbidden, Invalid, NotFound, Unauthorized
from metalflow.services import (
    PrincipalDep,
    ProjectReader,
    ProjectWriter,
    Services,
    ServicesDep,
    Writer,
    note_audit,
    require,
    visible,
)
from metalflow.tenancy import policy, service
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.passwords import Passwords, SignInLimiter
from metalflow.tenancy.policy import OrgAction, PrincipalKind
from metalflow.tenancy.schemas import (
    AuditEntryPublic,
    AuditList,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyPublic,
    LoginAnswer,
    LoginRequest,
    OrganizationCreate,
    OrganizationList,
    OrganizationMemberCreate,
    OrganizationMemberList,
    OrganizationMemberPublic,
    OrganizationMemberUpdate,
    OrganizationPublic,
    ProjectCreate,
    ProjectList,
    ProjectMemberCreate,
    ProjectMemberList,
    ProjectMemberPublic,
    ProjectMemberUpdate,
    ProjectPublic,
    UserCreate,
    UserList,
    UserPublic,
    Whoami,
    WhoamiOrganization,
    WhoamiProject,
)
from metalflow.tenancy.service import ActorKind
from metalflow.tenancy.tables import Project

router = APIRouter(tags=["tenancy"])

LOGIN_KEY_LIFETIME = dt.timedelta(days=30)
LOGIN_KEY_NAME = "login"
MAX_AUDIT_PAGE = 1000
SIGN_IN_STATE = "tenancy_sign_in"
SIGN_IN_REFUSALS_METRIC = "metalflow_sign_in_refusals"
API_PREFIX = "/api/v1"
"""Where api.app mounts this router: the audit's actions are the routes' full templates."""
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
"""The one error shape, which api.openapi adds to the document's components."""
STALE_KEY = "unknown, revoked or expired API key"
BAD_CREDENTIALS = "bad_credentials"
SIGN_IN_LIMITED = "sign_in_limited"
ANY_ACCOUNT = "*"
"""The account an address's lockout is audited under: it is the address that is refused."""


# --- who is asking ------------------------------------------------------------------------------


def _current(session: Session, principal: Principal) -> Principal:
    """`principal` with its memberships as they are now: a key's principal is cached for
    seconds, and a tenant who just founded an organization must be able to use it at once."""
    if principal.access is None:
        return principal
    fresh = service.refresh_principal(session, principal.access)
    if fresh is None:
        raise Unauthorized(STALE_KEY, field="authorization")
    return dataclasses.replace(principal, access=fresh)


def _acting(principal: Principal) -> policy.Principal:
    """The caller as `tenancy.policy` reads it: the admin token is the provider."""
    if principal.access is not None:
        return principal.access
    return policy.Principal(PrincipalKind.PROVIDER, principal.name, read_only=principal.read_only)


def _enforce(decision: policy.Decision, missing: NotFound | None = None) -> None:
    """Raise `missing` for NOT_FOUND (nothing is revealed), a 403 with the reason otherwise."""
    if decision.outcome is policy.Outcome.NOT_FOUND and missing is not None:
        raise missing
    if not decision.allowed:
        raise Forbidden(decision.reason)


@router.get("/whoami", response_model=Whoami)
def whoami(principal: PrincipalDep, services: ServicesDep) -> Whoami:
    """A tenant's user id, organizations and projects with their roles, as they are now."""
    answer = Whoami(
        name=principal.name,
        role=principal.role.value,
        machine=principal.machine_id,
        read_only=principal.read_only,
    )
    if principal.access is None:
        return answer
    with services.db.read() as session:
        acting = _acting(_current(session, principal))
        organizations = policy.visible_organizations(acting)
        projects = policy.visible_projects(acting)
        if organizations is None or projects is None:
            return answer.model_copy(update={"user_id": acting.user_id, "key_id": acting.key_id})
        orgs = [
            WhoamiOrganization(id=row.id, name=row.name, role=role)
            for row in service.list_organizations(session, organizations)
            if (role := acting.org_roles.get(row.id)) is not None
        ]
        mine = [
            WhoamiProject(
                id=row.id, name=row.name, organization_id=row.organization_id, role=project_role
            )
            for row in service.list_projects(session, among=projects)
            if (project_role := policy.project_role(acting, row.id)) is not None
        ]
    return answer.model_copy(
        update={
            "user_id": acting.user_id,
            "key_id": acting.key_id,
            "organizations": orgs,
            "projects": mine,
        }
    )


# --- audit of writes ----------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _record(
    session: Session,
    request: Request,
    principal: Principal,
    status: int,
    *,
    resource_type: str,
    resource_id: str,
    project_id: str | None = None,
    summary: dict[str, Any] | None = None,
) -> None:
    """The entry of one successful write: the route's template names the action; the actor is
    the admin token's provider or the API key that was used (and the user it acts for). The
    same is noted for the api's audit recorder."""
    route = request.scope.get("route")
    template = API_PREFIX + getattr(route, "path", "") if route else request.url.path
    access = principal.access
    service.append_audit(
        session,
        actor_kind=ActorKind.PROVIDER if access is None else ActorKind.KEY,
        actor_name=principal.name,
        actor_id=None if access is None else access.user_id,
        key_id=None if access is None else access.key_id,
        action=f"{request.method} {template}",
        resource_type=resource_type,
        resource_id=resource_id,
        project_id=project_id,
        summary=summary,
        address=_address(request),
        status=status,
    )
    note_audit(request, resource_type, resource_id, project_id=project_id, summary=summary)


# --- organizations ------------------------------------------------------------------------------


@router.post("/organizations", status_code=201, response_model=OrganizationPublic)
def create_organization(
    body: OrganizationCreate, request: Request, services: ServicesDep, principal: ProjectWriter
) -> OrganizationPublic:
    """A tenant's organization is owned by the tenant; the provider names its owner."""
    with services.db.write() as session:
        acting = _acting(_current(session, principal))
        _enforce(policy.decide_new_organization(acting))
        owner_id = body.owner_id or acting.user_id
        if acting.kind is not PrincipalKind.PROVIDER and owner_id != acting.user_id:
            raise Forbidden(
                "an organization you create is yours: leave owner_id out, then add members",
                field="owner_id",
            )
        if owner_id is None:
            raise Invalid(
                "owner_id is missing: give the user who owns the organization", field="owner_id"
            )
        organization = service.create_organization(session, body.name, owner_id)
        _record(
            session,
            request,
            principal,
            201,
            resource_type="organization",
            resource_id=organization.id,
            summary={"name": body.name, "owner_id": owner_id},
        )
        return OrganizationPublic.of(organization)


@router.get("/organizations", response_model=OrganizationList)
def list_organizations(services: ServicesDep, principal: ProjectReader) -> OrganizationList:
    """A tenant's own organizations: those it is a member of, or of whose projects."""
    with services.db.read() as session:
        among = policy.visible_organizations(_acting(_current(session, principal)))
        items = [OrganizationPublic.of(row) for row in service.list_organizations(session, among)]
    return OrganizationList(items=items, count=len(items))


def _check_org(
    session: Session, principal: Principal, action: OrgAction, organization_id: str
) -> policy.Principal:
    """The caller, once it may do `action` on the organization (else its 404 or a 403)."""
    acting = _acting(_current(session, principal))
    missing = service.organization_missing(organization_id)
    _enforce(policy.decide_org(acting, action, organization_id), missing)
    return acting


@router.get("/organizations/{organization_id}", response_model=OrganizationPublic)
def show_organization(
    organization_id: str, services: ServicesDep, principal: ProjectReader
) -> OrganizationPublic:
    with services.db.read() as session:
        _check_org(session, principal, OrgAction.READ, organization_id)
        return OrganizationPublic.of(service.get_organization(session, organization_id))


@router.delete("/organizations/{organization_id}", status_code=204)
def delete_organization(
    organization_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """An owner or admin deletes an organization without projects."""
    with services.db.write() as session:
        _check_org(session, principal, OrgAction.DELETE, organization_id)
        name = service.get_organization(session, organization_id).name
        service.delete_organization(session, organization_id)
        _record(
            session,
            request,
            principal,
            204,
            resource_type="organization",
            resource_id=organization_id,
            summary={"name": name},
        )
    return Response(status_code=204)


def _check_membership(
    session: Session,
    principal: Principal,
    organization_id: str,
    user_id: str,
    new: policy.OrgRole | None,
    *,
    joining: bool = False,
) -> None:
    """May the caller give `user_id` the role `new` (None: take them out)?"""
    acting = _check_org(session, principal, OrgAction.READ, organization_id)
    current = None if joining else service.org_member_role(session, organization_id, user_id)
    decision = policy.decide_org_membership(acting, organization_id, user_id, current, new)
    _enforce(decision, service.organization_missing(organization_id))


@router.post(
    "/organizations/{organization_id}/members",
    status_code=201,
    response_model=OrganizationMemberPublic,
)
def add_organization_member(
    organization_id: str,
    body: OrganizationMemberCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> OrganizationMemberPublic:
    """Owners and admins add members; only an owner makes owners."""
    with services.db.write() as session:
        _check_membership(
            session, principal, organization_id, body.user_id, body.role, joining=True
        )
        member = service.add_org_member(session, organization_id, body.user_id, body.role)
        _record(
            session,
            request,
            principal,
            201,
            resource_type="organization_member",
            resource_id=organization_id,
            summary={"user_id": body.user_id, "role": body.role.value},
        )
        return OrganizationMemberPublic.of(member)


@router.get("/organizations/{organization_id}/members", response_model=OrganizationMemberList)
def list_organization_members(
    organization_id: str, services: ServicesDep, principal: ProjectReader
) -> OrganizationMemberList:
    with services.db.read() as session:
        _check_org(session, principal, OrgAction.READ, organization_id)
        service.get_organization(session, organization_id)
        rows = service.list_org_members(session, organization_id)
        items = [OrganizationMemberPublic.of(row) for row in rows]
    return OrganizationMemberList(items=items, count=len(items))


@router.patch(
    "/organizations/{organization_id}/members/{user_id}", response_model=OrganizationMemberPublic
)
def change_organization_member(
    organization_id: str,
    user_id: str,
    body: OrganizationMemberUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> OrganizationMemberPublic:
    """Only an owner changes an owner's role or makes one; the last owner stays one (409)."""
    with services.db.write() as session:
        _check_membership(session, principal, organization_id, user_id, body.role)
        member = service.change_org_member(session, organization_id, user_id, body.role)
        _record(
            session,
            request,
            principal,
            200,
            resource_type="organization_member",
            resource_id=organization_id,
            summary={"user_id": user_id, "role": body.role.value},
        )
        return OrganizationMemberPublic.of(member)


@router.delete("/organizations/{organization_id}/members/{user_id}", status_code=204)
def remove_organization_member(
    organization_id: str,
    user_id: str,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> Response:
    """Owners and admins take members out (only an owner an owner); anyone may leave, but the
    last owner (409)."""
    with services.db.write() as session:
        _check_membership(session, principal, organization_id, user_id, None)
        service.remove_org_member(session, organization_id, user_id)
        _record(
            session,
            request,
            principal,
            204,
            resource_type="organization_member",
            resource_id=organization_id,
            summary={"user_id": user_id},
        )
    return Response(status_code=204)


# --- projects -----------------------------------------------------------------------------------


@router.post(
    "/organizations/{organization_id}/projects", status_code=201, response_model=ProjectPublic
)
def create_project(
    organization_id: str,
    body: ProjectCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> ProjectPublic:
    """An owner or admin of the organization makes it, and a person who does becomes its owner."""
    with services.db.write() as session:
        acting = _check_org(session, principal, OrgAction.CREATE_PROJECT, organization_id)
        project = service.create_project(session, organization_id, body.name)
        if acting.kind is PrincipalKind.USER and acting.user_id is not None:
            service.add_project_member(
                session, project.id, acting.user_id, policy.ProjectRole.OWNER
            )
        _record(
            session,
            request,
            principal,
            201,
            resource_type="project",
            resource_id=project.id,
            project_id=project.id,
            summary={"name": body.name, "organization_id": organization_id},
        )
        return ProjectPublic.of(project)


@router.get("/projects", response_model=ProjectList)
def list_projects(
    services: ServicesDep, principal: ProjectReader, organization: str | None = None
) -> ProjectList:
    """A tenant's projects only."""
    with services.db.read() as session:
        among = visible(_current(session, principal))
        rows = service.list_projects(session, organization, among)
        items = [ProjectPublic.of(row) for row in rows]
    return ProjectList(items=items, count=len(items))


def _check_project(
    session: Session, principal: Principal, action: policy.Action, project_id: str
) -> Principal:
    """The caller, once it may do `action` in the project (else its 404 or a 403)."""
    caller = _current(session, principal)
    require(caller, action, project_id, missing=service.project_missing(project_id))
    return caller


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def show_project(project_id: str, services: ServicesDep, principal: ProjectReader) -> ProjectPublic:
    with services.db.read() as session:
        _check_project(session, principal, policy.Action.READ, project_id)
        return ProjectPublic.of(service.get_project(session, project_id))


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(
    project_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """By its owner or an owner or admin of its organization; refused (409) while machines are
    assigned to it or it holds IP blocks."""
    with services.db.write() as session:
        acting = _acting(_current(session, principal))
        decision = policy.decide_project_deletion(acting, project_id)
        _enforce(decision, service.project_missing(project_id))
        name = service.get_project(session, project_id).name
        quarantine = dt.timedelta(seconds=services.settings.ipam_quarantine_seconds)
        service.delete_project(session, project_id, quarantine=quarantine)
        _record(
            session,
            request,
            principal,
            204,
            resource_type="project",
            resource_id=project_id,
            project_id=project_id,
            summary={"name": name},
        )
    return Response(status_code=204)


@router.post("/projects/{project_id}/members", status_code=201, response_model=ProjectMemberPublic)
def add_project_member(
    project_id: str,
    body: ProjectMemberCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> ProjectMemberPublic:
    """The project's owner adds members of its organization (422 naming `user` otherwise); the
    provider anyone (its staff, to help a tenant)."""
    with services.db.write() as session:
        caller = _check_project(session, principal, policy.Action.MANAGE_MEMBERS, project_id)
        if visible(caller) is not None:
            service.check_in_project_organization(session, project_id, body.user_id)
        member = service.add_project_member(session, project_id, body.user_id, body.role)
        _record(
            session,
            request,
            principal,
            201,
            resource_type="project_member",
            resource_id=project_id,
            project_id=project_id,
            summary={"user_id": body.user_id, "role": body.role.value},
        )
        return ProjectMemberPublic.of(member)


@router.get("/projects/{project_id}/members", response_model=ProjectMemberList)
def list_project_members(
    project_id: str, services: ServicesDep, principal: ProjectReader
) -> ProjectMemberList:
    with services.db.read() as session:
        _check_project(session, principal, policy.Action.READ, project_id)
        service.get_project(session, project_id)
        rows = service.list_project_members(session, project_id)
        items = [ProjectMemberPublic.of(row) for row in rows]
    return ProjectMemberList(items=items, count=len(items))


@router.patch("/projects/{project_id}/members/{user_id}", response_model=ProjectMemberPublic)
def change_project_member(
    project_id: str,
    user_id: str,
    body: ProjectMemberUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> ProjectMemberPublic:
    with services.db.write() as session:
        _check_project(session, principal, policy.Action.MANAGE_MEMBERS, project_id)
        member = service.change_project_member(session, project_id, user_id, body.role)
        _record(
            session,
            request,
            principal,
            200,
            resource_type="project_member",
            resource_id=project_id,
            project_id=project_id,
            summary={"user_id": user_id, "role": body.role.value},
        )
        return ProjectMemberPublic.of(member)


@router.delete("/projects/{project_id}/members/{user_id}", status_code=204)
def remove_project_member(
    project_id: str,
    user_id: str,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> Response:
    with services.db.write() as session:
        _check_project(session, principal, policy.Action.MANAGE_MEMBERS, project_id)
        service.remove_project_member(session, project_id, user_id)
        _record(
            session,
            request,
            principal,
            204,
            resource_type="project_member",
            resource_id=project_id,
            project_id=project_id,
            summary={"user_id": user_id},
        )
    return Response(status_code=204)


# --- users --------------------------------------------------------------------------------------


@router.post("/users", status_code=201, response_model=UserPublic)
def create_user(
    body: UserCreate, request: Request, services: ServicesDep, principal: Writer
) -> UserPublic:
    with services.db.write() as session:
        user = service.create_user(
            session,
            body.email,
            body.name,
            password=body.password,
            provider=body.provider,
            passwords=sign_in_state(request).passwords,
        )
        _record(
            session,
            request,
            principal,
            201,
            resource_type="user",
            resource_id=user.id,
            summary={"email": user.email, "name": user.name, "provider": user.provider},
        )
        return UserPublic.of(user)


def _users_seen(session: Session, principal: Principal) -> frozenset[str] | None:
    """The users the caller may see (None: every one, the provider): itself and the members of
    its organizations."""
    acting = _acting(_current(session, principal))
    organizations = policy.visible_organizations(acting)
    if organizations is None:
        return None
    return service.users_seen_by(session, acting, organizations)


@router.get("/users", response_model=UserList)
def list_users(services: ServicesDep, principal: ProjectReader) -> UserList:
    """A tenant sees itself and the people it shares an organization with."""
    with services.db.read() as session:
        among = _users_seen(session, principal)
        items = [UserPublic.of(row) for row in service.list_users(session, among)]
    return UserList(items=items, count=len(items))


@router.get("/users/{user_id}", response_model=UserPublic)
def show_user(user_id: str, services: ServicesDep, principal: ProjectReader) -> UserPublic:
    with services.db.read() as session:
        among = _users_seen(session, principal)
        if among is not None and user_id not in among:
            raise service.user_missing(user_id)
        return UserPublic.of(service.get_user(session, user_id))


@router.delete("/users/{user_id}", status_code=204)
def delete_user(
    user_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    with services.db.write() as session:
        email = service.get_user(session, user_id).email
        service.delete_user(session, user_id)
        _record(
            session,
            request,
            principal,
            204,
            resource_type="user",
            resource_id=user_id,
            summary={"email": email},
        )
    return Response(status_code=204)


# --- API keys -----------------------------------------------------------------------------------


def _created(created: service.CreatedKey) -> KeyCreated:
    return KeyCreated(**KeyPublic.of(created.key).model_dump(), secret=created.secret)


def _key_owner_missing(user_id: str | None, project_id: str | None) -> NotFound:
    if user_id is not None:
        return service.user_missing(user_id)
    return service.project_missing(str(project_id))


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(
    body: KeyCreate, request: Request, services: ServicesDep, principal: ProjectWriter
) -> KeyCreated:
    """A person makes their own user keys (the default, with neither user_id nor project_id);
    a project's owner that project's keys; a read-only key none (403)."""
    with services.db.write() as session:
        acting = _acting(_current(session, principal))
        user_id, project_id = body.user_id, body.project_id
        if user_id is None and project_id is None:
            user_id = acting.user_id
        if (user_id is None) != (project_id is None):
            decision = policy.decide_key(acting, user_id, project_id)
            _enforce(decision, _key_owner_missing(user_id, project_id))
        created = service.create_key(
            session,
            body.name,
            now=_now(),
            user_id=user_id,
            project_id=project_id,
            read_only=body.read_only,
            expires_at=body.expires_at,
        )
        key = created.key
        _record(
            session,
            request,
            principal,
            201,
            resource_type="key",
            resource_id=key.id,
            project_id=key.project_id,
            summary={
                "name": key.name,
                "prefix": key.display_prefix,
                "kind": key.kind,
                "user_id": key.user_id,
                "read_only": key.read_only,
            },
        )
        return _created(created)


def _key_scope(acting: policy.Principal) -> service.KeyScope | None:
    """The keys `acting` may see: its own and those of the projects it owns (None: all)."""
    projects = policy.visible_projects(acting)
    if projects is None:
        return None
    owned = frozenset(p for p in projects if policy.decide_key(acting, None, p).allowed)
    return service.KeyScope(acting.user_id, owned)


@router.get("/keys", response_model=KeyList)
def list_keys(
    services: ServicesDep,
    principal: ProjectReader,
    user: str | None = None,
    project: str | None = None,
) -> KeyList:
    """A tenant's own keys and its owned projects' keys."""
    with services.db.read() as session:
        scope = _key_scope(_acting(_current(session, principal)))
        rows = service.list_keys(session, user_id=user, project_id=project, scope=scope)
        items = [KeyPublic.of(row) for row in rows]
    return KeyList(items=items, count=len(items))


def _visible_key(session: Session, principal: Principal, key_id: str) -> None:
    """Raise the key's 404 unless the caller may see it (or a 403, in a project it is in)."""
    key = service.get_key(session, key_id)
    decision = policy.decide_key(_acting(_current(session, principal)), key.user_id, key.project_id)
    _enforce(decision, service.key_missing(key_id))


@router.get("/keys/{key_id}", response_model=KeyPublic)
def show_key(key_id: str, services: ServicesDep, principal: ProjectReader) -> KeyPublic:
    with services.db.read() as session:
        _visible_key(session, principal, key_id)
        return KeyPublic.of(service.get_key(session, key_id))


@router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke_key(
    key_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> KeyPublic:
    """The key stays listed, with the time it was revoked."""
    with services.db.write() as session:
        _visible_key(session, principal, key_id)
        key = service.revoke_key(session, key_id, _now())
        _record(
            session,
            request,
            principal,
            200,
            resource_type="key",
            resource_id=key.id,
            project_id=key.project_id,
            summary={"name": key.name, "prefix": key.display_prefix},
        )
        return KeyPublic.of(key)


# --- audit --------------------------------------------------------------------------------------


@router.get("/audit", response_model=AuditList)
def list_audit(
    services: ServicesDep,
    principal: ProjectReader,
    project: str | None = None,
    since: Annotated[AwareDatetime | None, Query(description="with its zone")] = None,
    actor: Annotated[str | None, Query(description="an actor's id or name")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = service.AUDIT_PAGE,
) -> AuditList:
    """Newest first. A tenant reads its projects' entries and its own (its sign-ins, the writes
    its keys made); `project` of a project it does not see is an empty list."""
    with services.db.read() as session:
        caller = _current(session, principal)
        projects = visible(caller)
        scope = None if projects is None else service.AuditScope(projects, _acting(caller).user_id)
        rows = service.search_audit(
            session, project_id=project, since=since, actor=actor, limit=limit, scope=scope
        )
        items = [AuditEntryPublic.of(row) for row in rows]
        if projects is not None:
            items = _foreign_projects_hidden(session, items, projects)
    return AuditList(items=items, count=len(items))


def _foreign_projects_hidden(
    session: Session, items: list[AuditEntryPublic], projects: frozenset[str]
) -> list[AuditEntryPublic]:
    """A tenant's entries with the ids of projects it does not see blanked out of their
    summaries: a machine given to it from another tenant names that tenant's project as its
    `before`, which the machine's own events already hide."""
    named = {
        value
        for item in items
        for value in item.summary.values()
        if isinstance(value, str) and value not in projects
    }
    if not named:
        return items
    foreign = set(session.scalars(select(Project.id).where(Project.id.in_(named))))
    return [
        item.model_copy(
            update={
                "summary": {
                    key: None if isinstance(value, str) and value in foreign else value
                    for key, value in item.summary.items()
                }
            }
        )
        for item in items
    ]


# --- sign-in ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Folded:
    audited_at: float
    refused: int = 0
    """Refusals since the entry at `audited_at`, not in the log yet."""


@dataclass(frozen=True, slots=True)
class FoldedRefusals:
    """An entry to append: `refused` refusals of `account` from `address`."""

    account: str
    address: str
    refused: int


class RefusalFolder:
    """The audit of a locked-out sign-in, bounded: an attacker hammering `POST /login` while
    the limiter answers 429 must not grow the log without end.

    The first refusal of an (account, address) is audited at once; later ones within `window`
    seconds are counted, not written. The pair's next refusal after the window is audited with
    the count folded in (`refused`: the refusals that entry stands for), and a pair that has gone
    quiet has its count handed out by `due` (asked on every sign-in). So each pair costs at most
    one entry per window, and memory holds the pairs refused within the last window only. Log
    suppression in syslog ("last message repeated N times") works the same way.
    """

    def __init__(self, clock: Callable[[], float], window: float) -> None:
        self.clock, self.window = clock, window
        self._pairs: OrderedDict[tuple[str, str], _Folded] = OrderedDict()
        """Oldest entry first, so `due` stops at the first pair still inside its window."""
        self._lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys((BAD_CREDENTIALS, SIGN_IN_LIMITED), 0)
        """Refusals by reason since the process started, for Prometheus: both reasons from
        the start, so that a rate over the counter sees its first refusal."""

    def count(self, reason: str) -> None:
        with self._lock:
            self._count(reason)

    def _count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def refuse(self, account: str, address: str) -> int | None:
        """How many refusals the entry to append now stands for, or None: none to append."""
        now = self.clock()
        with self._lock:
            self._count(SIGN_IN_LIMITED)
            folded = self._pairs.get((account, address))
            if folded is not None and now - folded.audited_at < self.window:
                folded.refused += 1
                return None
            self._pairs.pop((account, address), None)
            self._pairs[(account, address)] = _Folded(now)
            return 1 + (folded.refused if folded is not None else 0)

    def due(self) -> list[FoldedRefusals]:
        """The counts of pairs whose window has passed, which are forgotten."""
        now = self.clock()
        found = []
        with self._lock:
            while self._pairs:
                (account, address), folded = next(iter(self._pairs.items()))
                if now - folded.audited_at < self.window:
                    break
                del self._pairs[(account, address)]
                if folded.refused:
                    found.append(FoldedRefusals(account, address, folded.refused))
        return found


def _limiter_window(limiter: SignInLimiter) -> float:
    return max(window.seconds for window in limiter.windows.values())


@dataclass
class SignInState:
    """The app's one hasher, failure limiter and refusal folder: their memory is per process."""

    passwords: Passwords = field(default_factory=Passwords)
    limiter: SignInLimiter = field(default_factory=lambda: SignInLimiter(time.monotonic))
    refusals: RefusalFolder = field(init=False)

    def __post_init__(self) -> None:
        self.refusals = RefusalFolder(self.limiter.clock, _limiter_window(self.limiter))


_SIGN_IN_STATE_LOCK = threading.Lock()


def sign_in_state_of(app: FastAPI) -> SignInState:
    """Kept on the app, made when the app is built (`api.app`): each app, and each test's
    server, has its own. Its refusal counts are registered then as
    `metalflow_sign_in_refusals_total{reason}`, so that the counter is scraped as zero before
    the first refusal rather than appearing with it."""
    with _SIGN_IN_STATE_LOCK:
        state: SignInState | None = getattr(app.state, SIGN_IN_STATE, None)
        if state is None:
            state = SignInState()
            setattr(app.state, SIGN_IN_STATE, state)
            services = getattr(app.state, "services", None)
            if services is not None:
                services.metrics.register_counts(
                    SIGN_IN_REFUSALS_METRIC,
                    f"Refused sign-ins: {BAD_CREDENTIALS}, {SIGN_IN_LIMITED} (while locked out)",
                    "reason",
                    lambda: dict(state.refusals.counts),
                )
    return state


def sign_in_state(request: Request) -> SignInState:
    return sign_in_state_of(request.app)


SignInDep = Annotated[SignInState, Depends(sign_in_state)]


def _audit_refusal(
    session: Session,
    account: str,
    address: str | None,
    status: int,
    code: str,
    summary: dict[str, Any] | None = None,
) -> None:
    service.append_audit(
        session,
        actor_kind=ActorKind.USER,
        actor_name=account,
        action=f"POST {API_PREFIX}/login",
        result="error",
        address=address,
        status=status,
        error_code=code,
        summary=summary,
    )


def _audit_folded(session: Session, folded: list[FoldedRefusals], window: float) -> None:
    for entry in folded:
        _audit_refusal(
            session,
            entry.account,
            entry.address,
            429,
            SIGN_IN_LIMITED,
            {"refused": entry.refused, "window_seconds": window},
        )


def _limited(
    services: Services, sign_in: SignInState, account: str, address: str, wait: float
) -> HTTPException:
    """The 429 of a locked-out sign-in, audited within the folder's bound. A locked-out
    address folds under ANY_ACCOUNT, whatever account it names: one guessing a fresh account
    each time would otherwise still write an entry per request."""
    refusals = sign_in.refusals
    if sign_in.limiter.retry_after(ANY_ACCOUNT, address) is not None:
        account = ANY_ACCOUNT
    refused = refusals.refuse(account, address)
    due = refusals.due()
    if refused is not None or due:
        with services.db.write() as session:
            _audit_folded(session, due, refusals.window)
            if refused is not None:
                summary = {"refused": refused, "window_seconds": refusals.window}
                _audit_refusal(session, account, address, 429, SIGN_IN_LIMITED, summary)
    seconds = max(1, math.ceil(wait))
    return HTTPException(
        429,
        detail={"message": f"too many failed sign-ins: try again in {seconds} s", "field": "email"},
        headers={"Retry-After": str(seconds)},
    )


@router.post(
    "/login",
    response_model=LoginAnswer,
    responses={
        401: {"description": "Wrong email or password", "content": ERROR_CONTENT},
        429: {
            "description": "Too many failed sign-ins for the account or from the address",
            "content": ERROR_CONTENT,
            "headers": {"Retry-After": {"required": True, "schema": {"type": "integer"}}},
        },
    },
)
def login(
    body: LoginRequest, request: Request, services: ServicesDep, sign_in: SignInDep
) -> LoginAnswer:
    """A new user key for the email and password, expiring in LOGIN_KEY_LIFETIME."""
    address = _address(request) or "unknown"
    account = body.email.strip().lower()
    wait = sign_in.limiter.retry_after(account, address)
    if wait is not None:
        raise _limited(services, sign_in, account, address, wait)
    # The password is checked outside any transaction: argon2 takes tens of milliseconds,
    # which a write transaction would hold SQLite's one writer for.
    with services.db.read() as session:
        found = service.find_user(session, body.email)
        user_id, stored = (found.id, found.password_hash) if found else (None, None)
    if stored is None:
        sign_in.passwords.verify_absent(body.password)
        check = None
    else:
        check = sign_in.passwords.verify(stored, body.password)
    with services.db.write() as session:
        _audit_folded(session, sign_in.refusals.due(), sign_in.refusals.window)
        user = service.find_user(session, body.email) if check is not None and check.ok else None
        if user is not None and user.id != user_id:
            user = None  # deleted and made again while the password was checked
        if user is None:
            _audit_refusal(session, account, address, 401, BAD_CREDENTIALS)
            answer = None
        else:
            if check is not None and check.rehashed is not None:
                user.password_hash = check.rehashed
            now = _now()
            created = service.create_key(
                session,
                LOGIN_KEY_NAME,
                now=now,
                user_id=user.id,
                expires_at=now + LOGIN_KEY_LIFETIME,
            )
            service.append_audit(
                session,
                actor_kind=ActorKind.USER,
                actor_id=user.id,
                actor_name=user.email,
                key_id=created.key.id,
                action=f"POST {API_PREFIX}/login",
                resource_type="key",
                resource_id=created.key.id,
                summary={"prefix": created.key.display_prefix},
                address=address,
                status=200,
            )
            note_audit(request, "key", created.key.id)
            answer = LoginAnswer(key=_created(created), user=UserPublic.of(user))
    if answer is None:
        sign_in.refusals.count(BAD_CREDENTIALS)
        sign_in.limiter.failed(account, address)
        raise Unauthorized("wrong email or password", field="password")
    sign_in.limiter.succeeded(account)
    return answer
