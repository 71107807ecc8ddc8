"""Tenancy API: organizations, projects, users, memberships, API keys, the audit log, sign-in.

Provider-only for now (the `Writer`/`Reader` requirements); every write appends an audit entry
in the same transaction as its change, so no change is without its entry. `POST /login` needs
no token: it checks a password under a `SignInLimiter` per account and per address, audits
every refusal, and answers a new user key.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import AwareDatetime, BaseModel
from sqlalchemy.orm import Session

from metalflow.errors import Unauthorized
from metalflow.services import PrincipalDep, Reader, ServicesDep, Writer
from metalflow.tenancy import service
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.passwords import Passwords, SignInLimiter
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
)
from metalflow.tenancy.service import ActorKind

router = APIRouter(tags=["tenancy"])

LOGIN_KEY_LIFETIME = dt.timedelta(days=30)
LOGIN_KEY_NAME = "login"
MAX_AUDIT_PAGE = 1000
SIGN_IN_STATE = "tenancy_sign_in"
API_PREFIX = "/api/v1"
"""Where api.app mounts this router: the audit's actions are the routes' full templates."""
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
"""The one error shape, which api.openapi adds to the document's components."""


class Whoami(BaseModel):
    name: str
    role: str
    machine: str | None


@router.get("/whoami", response_model=Whoami)
def whoami(principal: PrincipalDep) -> Whoami:
    return Whoami(name=principal.name, role=principal.role.value, machine=principal.machine_id)


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
    the admin token's provider or the API key that was used."""
    route = request.scope.get("route")
    template = API_PREFIX + getattr(route, "path", "") if route else request.url.path
    service.append_audit(
        session,
        actor_kind=ActorKind.PROVIDER if principal.access is None else ActorKind.KEY,
        actor_name=principal.name,
        action=f"{request.method} {template}",
        resource_type=resource_type,
        resource_id=resource_id,
        project_id=project_id,
        summary=summary,
        address=_address(request),
        status=status,
    )


# --- organizations ------------------------------------------------------------------------------


@router.post("/organizations", status_code=201, response_model=OrganizationPublic)
def create_organization(
    body: OrganizationCreate, request: Request, services: ServicesDep, principal: Writer
) -> OrganizationPublic:
    with services.db.write() as session:
        organization = service.create_organization(session, body.name, body.owner_id)
        _record(
            session,
            request,
            principal,
            201,
            resource_type="organization",
            resource_id=organization.id,
            summary={"name": body.name, "owner_id": body.owner_id},
        )
        return OrganizationPublic.of(organization)


@router.get("/organizations", response_model=OrganizationList)
def list_organizations(services: ServicesDep, _: Reader) -> OrganizationList:
    with services.db.read() as session:
        items = [OrganizationPublic.of(row) for row in service.list_organizations(session)]
    return OrganizationList(items=items, count=len(items))


@router.get("/organizations/{organization_id}", response_model=OrganizationPublic)
def show_organization(organization_id: str, services: ServicesDep, _: Reader) -> OrganizationPublic:
    with services.db.read() as session:
        return OrganizationPublic.of(service.get_organization(session, organization_id))


@router.delete("/organizations/{organization_id}", status_code=204)
def delete_organization(
    organization_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    with services.db.write() as session:
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
    principal: Writer,
) -> OrganizationMemberPublic:
    with services.db.write() as session:
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
    organization_id: str, services: ServicesDep, _: Reader
) -> OrganizationMemberList:
    with services.db.read() as session:
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
    principal: Writer,
) -> OrganizationMemberPublic:
    with services.db.write() as session:
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
    organization_id: str, user_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    with services.db.write() as session:
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
    principal: Writer,
) -> ProjectPublic:
    with services.db.write() as session:
        project = service.create_project(session, organization_id, body.name)
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
def list_projects(services: ServicesDep, _: Reader, organization: str | None = None) -> ProjectList:
    with services.db.read() as session:
        items = [ProjectPublic.of(row) for row in service.list_projects(session, organization)]
    return ProjectList(items=items, count=len(items))


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def show_project(project_id: str, services: ServicesDep, _: Reader) -> ProjectPublic:
    with services.db.read() as session:
        return ProjectPublic.of(service.get_project(session, project_id))


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(
    project_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    with services.db.write() as session:
        name = service.get_project(session, project_id).name
        service.delete_project(session, project_id)
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
    principal: Writer,
) -> ProjectMemberPublic:
    with services.db.write() as session:
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
def list_project_members(project_id: str, services: ServicesDep, _: Reader) -> ProjectMemberList:
    with services.db.read() as session:
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
    principal: Writer,
) -> ProjectMemberPublic:
    with services.db.write() as session:
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
    project_id: str, user_id: str, request: Request, services: ServicesDep, principal: Writer
) -> Response:
    with services.db.write() as session:
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


@router.get("/users", response_model=UserList)
def list_users(services: ServicesDep, _: Reader) -> UserList:
    with services.db.read() as session:
        items = [UserPublic.of(row) for row in service.list_users(session)]
    return UserList(items=items, count=len(items))


@router.get("/users/{user_id}", response_model=UserPublic)
def show_user(user_id: str, services: ServicesDep, _: Reader) -> UserPublic:
    with services.db.read() as session:
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


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(
    body: KeyCreate, request: Request, services: ServicesDep, principal: Writer
) -> KeyCreated:
    with services.db.write() as session:
        created = service.create_key(
            session,
            body.name,
            now=_now(),
            user_id=body.user_id,
            project_id=body.project_id,
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


@router.get("/keys", response_model=KeyList)
def list_keys(
    services: ServicesDep, _: Reader, user: str | None = None, project: str | None = None
) -> KeyList:
    with services.db.read() as session:
        rows = service.list_keys(session, user_id=user, project_id=project)
        items = [KeyPublic.of(row) for row in rows]
    return KeyList(items=items, count=len(items))


@router.get("/keys/{key_id}", response_model=KeyPublic)
def show_key(key_id: str, services: ServicesDep, _: Reader) -> KeyPublic:
    with services.db.read() as session:
        return KeyPublic.of(service.get_key(session, key_id))


@router.delete("/keys/{key_id}", response_model=KeyPublic)
def revoke_key(
    key_id: str, request: Request, services: ServicesDep, principal: Writer
) -> KeyPublic:
    """The key stays listed, with the time it was revoked."""
    with services.db.write() as session:
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
    _: Reader,
    project: str | None = None,
    since: Annotated[AwareDatetime | None, Query(description="with its zone")] = None,
    actor: Annotated[str | None, Query(description="an actor's id or name")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = service.AUDIT_PAGE,
) -> AuditList:
    """Newest first."""
    with services.db.read() as session:
        rows = service.search_audit(
            session, project_id=project, since=since, actor=actor, limit=limit
        )
        items = [AuditEntryPublic.of(row) for row in rows]
    return AuditList(items=items, count=len(items))


# --- sign-in ------------------------------------------------------------------------------------


@dataclass
class SignInState:
    """The app's one hasher and failure limiter: the limiter's memory is per process."""

    passwords: Passwords = field(default_factory=Passwords)
    limiter: SignInLimiter = field(default_factory=lambda: SignInLimiter(time.monotonic))


def sign_in_state(request: Request) -> SignInState:
    """Kept on the app, made on first use: each app (and each test's server) has its own."""
    state: SignInState | None = getattr(request.app.state, SIGN_IN_STATE, None)
    if state is None:
        state = SignInState()
        setattr(request.app.state, SIGN_IN_STATE, state)
    return state


SignInDep = Annotated[SignInState, Depends(sign_in_state)]


def _audit_refusal(
    session: Session, body: LoginRequest, address: str | None, status: int, code: str
) -> None:
    service.append_audit(
        session,
        actor_kind=ActorKind.USER,
        actor_name=body.email.strip().lower(),
        action=f"POST {API_PREFIX}/login",
        result="error",
        address=address,
        status=status,
        error_code=code,
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
        with services.db.write() as session:
            _audit_refusal(session, body, address, 429, "sign_in_limited")
        seconds = max(1, math.ceil(wait))
        raise HTTPException(
            429,
            detail={
                "message": f"too many failed sign-ins: try again in {seconds} s",
                "field": "email",
            },
            headers={"Retry-After": str(seconds)},
        )
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
        user = service.find_user(session, body.email) if check is not None and check.ok else None
        if user is not None and user.id != user_id:
            user = None  # deleted and made again while the password was checked
        if user is None:
            _audit_refusal(session, body, address, 401, "bad_credentials")
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
            answer = LoginAnswer(key=_created(created), user=UserPublic.of(user))
    if answer is None:
        sign_in.limiter.failed(account, address)
        raise Unauthorized("wrong email or password", field="password")
    sign_in.limiter.succeeded(account)
    return answer
