"""Tenancy's changes and lookups: organizations, projects, users, memberships, API keys, audit.

Each call validates, then writes within the caller's transaction (`Database.write()`), so a
call that raises leaves nothing behind once the caller's transaction rolls back. What a caller
sees as `policy.Principal` is built here from the rows (`principal_for_user`, `principal_for_key`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, delete, false, func, or_, select
from sqlalchemy.orm import Session

from metalflow.db.base import utcnow
from metalflow.errors import Conflict, Invalid, NotFound
from metalflow.inventory.tables import Machine
from metalflow.ipam import service as ipam
from metalflow.ipam.tables import IpBlock, Status
from metalflow.tenancy import keys
from metalflow.tenancy.keys import KeyKind
from metalflow.tenancy.passwords import Passwords
from metalflow.tenancy.policy import OrgRole, Principal, PrincipalKind, ProjectRole
from metalflow.tenancy.tables import (
    ApiKey,
    AuditEntry,
    Organization,
    OrganizationMember,
    Project,
    ProjectMember,
    User,
)
from metalflow.values import NAME_PATTERN

SLUG = re.compile(NAME_PATTERN)
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
MAX_NAME = 200
REDACTED = "[redacted]"
SECRET_WORDS = ("password", "secret", "token", "hash", "credential")
"""A summary field whose name holds one of these is stored as REDACTED."""
AUDIT_PAGE = 100
LAST_USE_RESOLUTION = dt.timedelta(minutes=1)


def _new_id() -> str:
    return uuid.uuid4().hex


def check_slug(value: str, field: str) -> str:
    if not SLUG.fullmatch(value):
        raise Invalid(
            f"{field} {value[:60]!r} must be 1-200 lower-case letters, digits, '.', '_' or '-',"
            " starting and ending with a letter or digit",
            field=field,
        )
    return value


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if not EMAIL.fullmatch(email):
        raise Invalid(
            f"email {value[:60]!r} is not an address: write it as name@example.com", field="email"
        )
    return email


def _check_display_name(value: str, field: str) -> str:
    name = value.strip()
    if not name or len(name) > MAX_NAME:
        raise Invalid(f"{field} must be 1-{MAX_NAME} characters", field=field)
    return name


# --- organizations and projects ---------------------------------------------------------------


def create_organization(session: Session, name: str, owner_id: str) -> Organization:
    """An organization starts with its owner, so it is never without one."""
    check_slug(name, "name")
    get_user(session, owner_id)
    if session.scalar(select(Organization.id).where(Organization.name == name)) is not None:
        raise Conflict(f"organization {name!r} exists already: choose another name", field="name")
    organization = Organization(id=_new_id(), name=name)
    session.add(organization)
    session.flush()
    session.add(
        OrganizationMember(
            organization_id=organization.id, user_id=owner_id, role=OrgRole.OWNER.value
        )
    )
    session.flush()
    return organization


def organization_missing(organization_id: str) -> NotFound:
    """The one 404 of an organization that is not there, or not the caller's to see."""
    return NotFound(f"organization {organization_id!r} not found", field="organization")


def get_organization(session: Session, organization_id: str) -> Organization:
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise organization_missing(organization_id)
    return organization


def list_organizations(session: Session, among: frozenset[str] | None = None) -> list[Organization]:
    """Every organization, or those whose id is in `among` (a tenant's)."""
    query = select(Organization).order_by(Organization.name)
    if among is not None:
        query = query.where(Organization.id.in_(sorted(among)))
    return list(session.scalars(query))


def delete_organization(session: Session, organization_id: str) -> None:
    organization = get_organization(session, organization_id)
    projects = list(
        session.scalars(select(Project.name).where(Project.organization_id == organization_id))
    )
    if projects:
        raise Conflict(
            f"organization {organization.name!r} still has projects ({', '.join(projects)}):"
            " delete them first",
            field="organization",
        )
    session.delete(organization)
    session.flush()


def create_project(session: Session, organization_id: str, name: str) -> Project:
    check_slug(name, "name")
    organization = get_organization(session, organization_id)
    taken = session.scalar(
        select(Project.id).where(Project.organization_id == organization_id, Project.name == name)
    )
    if taken is not None:
        raise Conflict(
            f"organization {organization.name!r} has a project {name!r} already: choose"
            " another name",
            field="name",
        )
    project = Project(id=_new_id(), organization_id=organization_id, name=name)
    session.add(project)
    session.flush()
    return project


def project_missing(project_id: str) -> NotFound:
    """The one 404 of a project that is not there, or not the caller's to see."""
    return NotFound(f"project {project_id!r} not found", field="project")


def get_project(session: Session, project_id: str) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise project_missing(project_id)
    return project


def list_projects(
    session: Session, organization_id: str | None = None, among: frozenset[str] | None = None
) -> list[Project]:
    """Every project (of `organization_id`), or those whose id is in `among` (a tenant's)."""
    query = select(Project).order_by(Project.name)
    if organization_id is not None:
        query = query.where(Project.organization_id == organization_id)
    if among is not None:
        query = query.where(Project.id.in_(sorted(among)))
    return list(session.scalars(query))


def delete_project(session: Session, project_id: str, *, quarantine: dt.timedelta) -> None:
    """Its memberships and project keys go with it, and the pools carved for its machines'
    per-host addresses go into quarantine; refused while machines are assigned to it or it
    holds other address blocks, which would be left pointing at nothing (blocks it released,
    in quarantine, are nobody's to use and do not count)."""
    project = get_project(session, project_id)
    machines = session.scalars(
        select(Machine.name).where(Machine.project_id == project_id).order_by(Machine.name).limit(5)
    ).all()
    if machines:
        raise Conflict(
            f"project {project.name!r} still has machines assigned ({', '.join(machines)}):"
            " take them out of the project first",
            field="project",
        )
    ipam.retire_project_pools(session, project_id, quarantine=quarantine)
    blocks = session.scalars(
        select(IpBlock.cidr)
        .where(IpBlock.project_id == project_id, IpBlock.status != Status.QUARANTINE.value)
        .order_by(IpBlock.cidr)
        .limit(5)
    ).all()
    if blocks:
        raise Conflict(
            f"project {project.name!r} still holds IP blocks ({', '.join(blocks)}): release"
            " them first (`metalflow ipam`)",
            field="project",
        )
    session.execute(delete(ProjectMember).where(ProjectMember.project_id == project_id))
    session.execute(delete(ApiKey).where(ApiKey.project_id == project_id))
    session.delete(get_project(session, project_id))
    session.flush()


# --- users --------------------------------------------------------------------------------------


def create_user(
    session: Session,
    email: str,
    name: str,
    *,
    password: str | None = None,
    provider: bool = False,
    passwords: Passwords | None = None,
) -> User:
    """Emails are unique whatever their case: stored lower-cased."""
    address = normalize_email(email)
    display_name = _check_display_name(name, "name")
    if find_user(session, address) is not None:
        raise Conflict(
            f"a user with email {address!r} exists already (emails ignore case): sign in as"
            " them or use another address",
            field="email",
        )
    password_hash = None if password is None else (passwords or Passwords()).hash(password)
    user = User(
        id=_new_id(),
        email=address,
        name=display_name,
        password_hash=password_hash,
        provider=provider,
    )
    session.add(user)
    session.flush()
    return user


def user_missing(user_id: str) -> NotFound:
    """The one 404 of a user that is not there, or not the caller's to see."""
    return NotFound(f"user {user_id!r} not found", field="user")


def get_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise user_missing(user_id)
    return user


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def list_users(session: Session, among: frozenset[str] | None = None) -> list[User]:
    """Every user, or those whose id is in `among` (the ones a tenant may see)."""
    query = select(User).order_by(User.email)
    if among is not None:
        query = query.where(User.id.in_(sorted(among)))
    return list(session.scalars(query))


def users_seen_by(
    session: Session, principal: Principal, organizations: frozenset[str]
) -> frozenset[str]:
    """The users a tenant may see: the members of its `organizations`, and itself."""
    members = session.scalars(
        select(OrganizationMember.user_id).where(
            OrganizationMember.organization_id.in_(sorted(organizations))
        )
    )
    own = {principal.user_id} if principal.user_id is not None else set()
    return frozenset(members) | own


def delete_user(session: Session, user_id: str) -> None:
    """Refused while the user is the last owner of an organization; keys and memberships go."""
    user = get_user(session, user_id)
    owned = session.scalars(
        select(OrganizationMember.organization_id).where(
            OrganizationMember.user_id == user_id, OrganizationMember.role == OrgRole.OWNER.value
        )
    ).all()
    for organization_id in owned:
        _keep_an_owner(session, organization_id, user_id)
    session.execute(delete(OrganizationMember).where(OrganizationMember.user_id == user_id))
    session.execute(delete(ProjectMember).where(ProjectMember.user_id == user_id))
    session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
    session.delete(user)
    session.flush()


def set_password(
    session: Session, user_id: str, password: str, passwords: Passwords | None = None
) -> None:
    get_user(session, user_id).password_hash = (passwords or Passwords()).hash(password)
    session.flush()


def verify_password(
    session: Session, email: str, password: str, passwords: Passwords | None = None
) -> User | None:
    """The user when the password is theirs (rehashed in place if the parameters changed),
    else None: an unknown email and a wrong password read the same."""
    hasher = passwords or Passwords()
    user = find_user(session, email)
    if user is None or user.password_hash is None:
        hasher.verify_absent(password)
        return None
    check = hasher.verify(user.password_hash, password)
    if not check.ok:
        return None
    if check.rehashed is not None:
        user.password_hash = check.rehashed
        session.flush()
    return user


# --- memberships --------------------------------------------------------------------------------


def _org_member(session: Session, organization_id: str, user_id: str) -> OrganizationMember:
    member = session.scalar(
        select(OrganizationMember).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.user_id == user_id,
        )
    )
    if member is None:
        raise NotFound(f"user {user_id!r} is not a member of the organization", field="user")
    return member


def _keep_an_owner(session: Session, organization_id: str, leaving_user_id: str) -> None:
    """Row-locks the organization's owners (PostgreSQL), so two owners who remove each other at
    once cannot both succeed and leave none."""
    owners = session.scalars(
        select(OrganizationMember.user_id)
        .where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.role == OrgRole.OWNER.value,
        )
        .with_for_update()
    ).all()
    if set(owners) <= {leaving_user_id}:
        name = get_organization(session, organization_id).name
        raise Conflict(
            f"user {leaving_user_id!r} is the last owner of organization {name!r}: make another"
            " member owner first",
            field="user",
        )


def add_org_member(
    session: Session, organization_id: str, user_id: str, role: OrgRole
) -> OrganizationMember:
    get_organization(session, organization_id)
    get_user(session, user_id)
    existing = session.scalar(
        select(OrganizationMember.id).where(
            OrganizationMember.organization_id == organization_id,
            OrganizationMember.user_id == user_id,
        )
    )
    if existing is not None:
        raise Conflict(
            f"user {user_id!r} is a member already: change their role instead", field="user"
        )
    member = OrganizationMember(organization_id=organization_id, user_id=user_id, role=role.value)
    session.add(member)
    session.flush()
    return member


def org_member_role(session: Session, organization_id: str, user_id: str) -> OrgRole:
    return OrgRole(_org_member(session, organization_id, user_id).role)


def change_org_member(
    session: Session, organization_id: str, user_id: str, role: OrgRole
) -> OrganizationMember:
    member = _org_member(session, organization_id, user_id)
    if member.role == OrgRole.OWNER.value and role is not OrgRole.OWNER:
        _keep_an_owner(session, organization_id, user_id)
    member.role = role.value
    session.flush()
    return member


def remove_org_member(session: Session, organization_id: str, user_id: str) -> None:
    """Leaving an organization is leaving its projects too: their members come from it."""
    member = _org_member(session, organization_id, user_id)
    if member.role == OrgRole.OWNER.value:
        _keep_an_owner(session, organization_id, user_id)
    projects = select(Project.id).where(Project.organization_id == organization_id)
    session.execute(
        delete(ProjectMember).where(
            ProjectMember.user_id == user_id, ProjectMember.project_id.in_(projects)
        )
    )
    session.delete(member)
    session.flush()


def list_org_members(session: Session, organization_id: str) -> list[OrganizationMember]:
    return list(
        session.scalars(
            select(OrganizationMember)
            .where(OrganizationMember.organization_id == organization_id)
            .order_by(OrganizationMember.id)
        )
    )


def _project_member(session: Session, project_id: str, user_id: str) -> ProjectMember:
    member = session.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user_id
        )
    )
    if member is None:
        raise NotFound(f"user {user_id!r} is not a member of the project", field="user")
    return member


def check_in_project_organization(session: Session, project_id: str, user_id: str) -> None:
    """A project's members come from its organization: a tenant cannot pull a stranger in."""
    project = get_project(session, project_id)
    get_user(session, user_id)
    member = session.scalar(
        select(OrganizationMember.id).where(
            OrganizationMember.organization_id == project.organization_id,
            OrganizationMember.user_id == user_id,
        )
    )
    if member is None:
        raise Invalid(
            f"user {user_id!r} is not a member of the project's organization: add them to the"
            " organization first",
            field="user",
        )


def add_project_member(
    session: Session, project_id: str, user_id: str, role: ProjectRole
) -> ProjectMember:
    get_project(session, project_id)
    get_user(session, user_id)
    existing = session.scalar(
        select(ProjectMember.id).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user_id
        )
    )
    if existing is not None:
        raise Conflict(
            f"user {user_id!r} is a member already: change their role instead", field="user"
        )
    member = ProjectMember(project_id=project_id, user_id=user_id, role=role.value)
    session.add(member)
    session.flush()
    return member


def change_project_member(
    session: Session, project_id: str, user_id: str, role: ProjectRole
) -> ProjectMember:
    member = _project_member(session, project_id, user_id)
    member.role = role.value
    session.flush()
    return member


def remove_project_member(session: Session, project_id: str, user_id: str) -> None:
    """A project may be left without an owner of its own: its org's owners and admins own it."""
    session.delete(_project_member(session, project_id, user_id))
    session.flush()


def list_project_members(session: Session, project_id: str) -> list[ProjectMember]:
    return list(
        session.scalars(
            select(ProjectMember)
            .where(ProjectMember.project_id == project_id)
            .order_by(ProjectMember.id)
        )
    )


def principal_for_user(session: Session, user: User, *, read_only: bool = False) -> Principal:
    """The user's memberships as the policy reads them; a provider user is the provider."""
    if user.provider:
        return Principal(PrincipalKind.PROVIDER, user.email, read_only=read_only, user_id=user.id)
    project_roles = {
        project_id: ProjectRole(role)
        for project_id, role in session.execute(
            select(ProjectMember.project_id, ProjectMember.role).where(
                ProjectMember.user_id == user.id
            )
        )
    }
    org_roles = {
        organization_id: OrgRole(role)
        for organization_id, role in session.execute(
            select(OrganizationMember.organization_id, OrganizationMember.role).where(
                OrganizationMember.user_id == user.id
            )
        )
    }
    project_orgs = {
        project_id: organization_id
        for project_id, organization_id in session.execute(
            select(Project.id, Project.organization_id).where(
                Project.organization_id.in_(list(org_roles)) | Project.id.in_(list(project_roles))
            )
        )
    }
    return Principal(
        PrincipalKind.USER,
        user.email,
        read_only=read_only,
        project_roles=project_roles,
        org_roles=org_roles,
        project_orgs=project_orgs,
        user_id=user.id,
    )


def refresh_principal(session: Session, principal: Principal) -> Principal | None:
    """A user's `principal` with their memberships as they are now (an authenticated key's is
    cached for seconds, and the tenancy API changes them); None once the user is gone."""
    if principal.kind is not PrincipalKind.USER or principal.user_id is None:
        return principal
    user = session.get(User, principal.user_id)
    if user is None:
        return None
    fresh = principal_for_user(session, user, read_only=principal.read_only)
    return dataclasses.replace(fresh, key_id=principal.key_id)


# --- API keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str
    """The key itself: shown this once, stored only as its hash."""


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who an authenticated key acts for."""

    key_id: str
    name: str
    kind: KeyKind
    read_only: bool
    user_id: str | None
    project_id: str | None


def create_key(
    session: Session,
    name: str,
    *,
    now: dt.datetime,
    user_id: str | None = None,
    project_id: str | None = None,
    read_only: bool = False,
    expires_at: dt.datetime | None = None,
) -> CreatedKey:
    """A user key (`user_id`) or a project key (`project_id`): give exactly one."""
    display_name = _check_display_name(name, "name")
    if (user_id is None) == (project_id is None):
        raise Invalid(
            "a key belongs to a user or to a project: give user_id or project_id, not both",
            field="user_id",
        )
    if expires_at is not None and expires_at <= now:
        raise Invalid("expires_at is in the past: give a later time, or none", field="expires_at")
    if user_id is not None:
        get_user(session, user_id)
        kind = KeyKind.USER
    else:
        get_project(session, str(project_id))
        kind = KeyKind.PROJECT
    secret = keys.generate_key(kind)
    key = ApiKey(
        id=_new_id(),
        kind=kind.value,
        name=display_name,
        display_prefix=keys.display_prefix(secret),
        key_hash=keys.hash_key(secret),
        user_id=user_id,
        project_id=project_id,
        read_only=read_only,
        expires_at=expires_at,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return CreatedKey(key, secret)


@dataclass(frozen=True, slots=True)
class KeyScope:
    """The keys a tenant may see: its own user keys and the keys of the projects it owns."""

    user_id: str | None
    projects: frozenset[str]


def list_keys(
    session: Session,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    scope: KeyScope | None = None,
) -> list[ApiKey]:
    """Oldest first: every key, or with `scope` a tenant's; `user_id` and `project_id` narrow
    further."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if scope is not None:
        query = query.where(
            or_(
                ApiKey.user_id == scope.user_id if scope.user_id is not None else false(),
                ApiKey.project_id.in_(sorted(scope.projects)),
            )
        )
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    return list(session.scalars(query))


def key_missing(key_id: str) -> NotFound:
    """The one 404 of a key that is not there, or not the caller's to see."""
    return NotFound(f"API key {key_id!r} not found", field="key")


def get_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise key_missing(key_id)
    return key


def revoke_key(session: Session, key_id: str, now: dt.datetime) -> ApiKey:
    """Revoking twice keeps the first time."""
    key = get_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = now
        session.flush()
    return key


def authenticate_key(
    session: Session, secret: str, address: str | None, now: dt.datetime
) -> KeyIdentity | None:
    """Who the key acts for, or None when it is malformed, unknown, revoked or expired.

    A malformed key or a bad checksum is refused without a lookup (`keys.parse_key`). A key
    that passes has its last use recorded (within LAST_USE_RESOLUTION, from the same address,
    the row is left alone: a busy client does not write once per request). Call it in a write.
    """
    if keys.parse_key(secret).problem is not None:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == keys.hash_key(secret)))
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at <= now:
        return None
    stale = key.last_used_at is None or now - key.last_used_at >= LAST_USE_RESOLUTION
    if stale or key.last_used_address != address:
        key.last_used_at = now
        key.last_used_address = address
        session.flush()
    return KeyIdentity(
        key.id, key.name, KeyKind(key.kind), key.read_only, key.user_id, key.project_id
    )


def principal_for_key(session: Session, identity: KeyIdentity) -> Principal:
    if identity.project_id is not None:
        return Principal(
            PrincipalKind.PROJECT_KEY,
            f"key:{identity.name}",
            read_only=identity.read_only,
            project=identity.project_id,
            key_id=identity.key_id,
        )
    user = get_user(session, str(identity.user_id))
    principal = principal_for_user(session, user, read_only=identity.read_only)
    return dataclasses.replace(principal, key_id=identity.key_id)


# --- audit --------------------------------------------------------------------------------------


class ActorKind(StrEnum):
    PROVIDER = "provider"
    USER = "user"
    KEY = "key"
    AGENT = "agent"
    SYSTEM = "system"


def redact(summary: Any) -> Any:
    """The summary with every secret-named field's value replaced, at any depth."""
    if isinstance(summary, dict):
        return {
            name: REDACTED
            if any(word in str(name).lower() for word in SECRET_WORDS)
            else redact(value)
            for name, value in summary.items()
        }
    if isinstance(summary, list):
        return [redact(item) for item in summary]
    return summary


def append_audit(
    session: Session,
    *,
    actor_kind: ActorKind,
    actor_name: str,
    action: str,
    result: str = "ok",
    actor_id: str | None = None,
    key_id: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    project_id: str | None = None,
    summary: dict[str, Any] | None = None,
    address: str | None = None,
    status: int | None = None,
    error_code: str | None = None,
    at: dt.datetime | None = None,
) -> AuditEntry:
    """Appends one entry; the log has no update and no delete but `prune_audit`."""
    if result not in ("ok", "error"):
        raise Invalid(f"result {result!r} must be 'ok' or 'error'", field="result")
    entry = AuditEntry(
        actor_kind=actor_kind.value,
        actor_id=actor_id,
        actor_name=actor_name,
        key_id=key_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        project_id=project_id,
        summary=redact(summary or {}),
        address=address,
        result=result,
        status=status,
        error_code=error_code,
        at=at or utcnow(),
    )
    session.add(entry)
    session.flush()
    return entry


def query_audit(
    session: Session,
    *,
    project_id: str | None = None,
    since: dt.datetime | None = None,
    actor_id: str | None = None,
    limit: int = AUDIT_PAGE,
) -> list[AuditEntry]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if project_id is not None:
        query = query.where(AuditEntry.project_id == project_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    return list(session.scalars(query))


@dataclass(frozen=True, slots=True)
class AuditScope:
    """The entries a tenant may read: those of its projects, and its own (its sign-ins and the
    writes its keys made, wherever they were)."""

    projects: frozenset[str]
    user_id: str | None

    def condition(self) -> ColumnElement[bool]:
        own = AuditEntry.actor_id == self.user_id if self.user_id is not None else false()
        return or_(AuditEntry.project_id.in_(sorted(self.projects)), own)


def search_audit(
    session: Session,
    *,
    project_id: str | None = None,
    since: dt.datetime | None = None,
    actor: str | None = None,
    limit: int = AUDIT_PAGE,
    scope: AuditScope | None = None,
) -> list[AuditEntry]:
    """Newest first; `actor` is what people know an actor by: its id or its name (an email, a
    token's name), so the provider's token, which has no id, can be looked for too. `scope`
    narrows to a tenant's entries (None: every entry)."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if scope is not None:
        query = query.where(scope.condition())
    if project_id is not None:
        query = query.where(AuditEntry.project_id == project_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if actor is not None:
        query = query.where((AuditEntry.actor_id == actor) | (AuditEntry.actor_name == actor))
    return list(session.scalars(query))


def prune_audit(session: Session, before: dt.datetime) -> int:
    """The retention sweep: entries older than `before` go. Returns how many."""
    count = session.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.at < before)
    )
    session.execute(delete(AuditEntry).where(AuditEntry.at < before))
    return int(count or 0)


# --- added for the Metal API's project updates ---------------------------------------------------


def rename_project(session: Session, project_id: str, name: str) -> Project:
    """A project's new name, unique in its organization as at creation."""
    check_slug(name, "name")
    project = get_project(session, project_id)
    taken = session.scalar(
        select(Project.id).where(
            Project.organization_id == project.organization_id,
            Project.name == name,
            Project.id != project_id,
        )
    )
    if taken is not None:
        raise Conflict(
            f"the organization has a project {name!r} already: choose another name", field="name"
        )
    project.name = name
    session.flush()
    return project
