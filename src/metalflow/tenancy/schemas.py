"""Tenancy's input and output shapes (pydantic) for the API and the CLI.

Secrets go in (a password, at user creation and sign-in) and come out once (a new key's secret,
in `KeyCreated` and `LoginAnswer` only); no other model has a field that could carry one.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from metalflow.tenancy.keys import KeyKind
from metalflow.tenancy.passwords import MAX_PASSWORD_LENGTH
from metalflow.tenancy.policy import OrgRole, ProjectRole
from metalflow.tenancy.tables import (
    ApiKey,
    AuditEntry,
    Organization,
    OrganizationMember,
    Project,
    ProjectMember,
    User,
)

Id = str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganizationCreate(Strict):
    name: str = Field(max_length=200, examples=["acme"])
    owner_id: Id | None = Field(
        default=None,
        max_length=32,
        description="the user who owns it from the start; none: the signed-in user who creates it",
    )


class OrganizationPublic(BaseModel):
    id: Id
    name: str
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Organization) -> OrganizationPublic:
        return cls(id=row.id, name=row.name, created_at=row.created_at)


class OrganizationList(BaseModel):
    items: list[OrganizationPublic]
    count: int


class OrganizationMemberCreate(Strict):
    user_id: Id = Field(max_length=32)
    role: OrgRole = OrgRole.MEMBER


class OrganizationMemberUpdate(Strict):
    role: OrgRole


class OrganizationMemberPublic(BaseModel):
    organization_id: Id
    user_id: Id
    role: OrgRole
    created_at: dt.datetime

    @classmethod
    def of(cls, row: OrganizationMember) -> OrganizationMemberPublic:
        return cls(
            organization_id=row.organization_id,
            user_id=row.user_id,
            role=OrgRole(row.role),
            created_at=row.created_at,
        )


class OrganizationMemberList(BaseModel):
    items: list[OrganizationMemberPublic]
    count: int


class ProjectCreate(Strict):
    name: str = Field(max_length=200, examples=["web"])


class ProjectPublic(BaseModel):
    id: Id
    organization_id: Id
    name: str
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Project) -> ProjectPublic:
        return cls(
            id=row.id, organization_id=row.organization_id, name=row.name, created_at=row.created_at
        )


class ProjectList(BaseModel):
    items: list[ProjectPublic]
    count: int


class ProjectMemberCreate(Strict):
    user_id: Id = Field(max_length=32)
    role: ProjectRole = ProjectRole.VIEWER


class ProjectMemberUpdate(Strict):
    role: ProjectRole


class ProjectMemberPublic(BaseModel):
    project_id: Id
    user_id: Id
    role: ProjectRole
    created_at: dt.datetime

    @classmethod
    def of(cls, row: ProjectMember) -> ProjectMemberPublic:
        return cls(
            project_id=row.project_id,
            user_id=row.user_id,
            role=ProjectRole(row.role),
            created_at=row.created_at,
        )


class ProjectMemberList(BaseModel):
    items: list[ProjectMemberPublic]
    count: int


class UserCreate(Strict):
    email: str = Field(max_length=320, examples=["ada@example.com"])
    name: str = Field(max_length=200, examples=["Ada Lovelace"])
    password: str | None = Field(
        default=None,
        max_length=MAX_PASSWORD_LENGTH,
        description="none: the user signs in with keys only",
    )
    provider: bool = Field(default=False, description="the operator's staff, above every tenant")


class UserPublic(BaseModel):
    id: Id
    email: str
    name: str
    provider: bool
    has_password: bool
    created_at: dt.datetime

    @classmethod
    def of(cls, row: User) -> UserPublic:
        return cls(
            id=row.id,
            email=row.email,
            name=row.name,
            provider=row.provider,
            has_password=row.password_hash is not None,
            created_at=row.created_at,
        )


class UserList(BaseModel):
    items: list[UserPublic]
    count: int


class KeyCreate(Strict):
    """A user key (`user_id`) or a project key (`project_id`): at most one of them; neither is
    a key of the signed-in user who asks."""

    name: str = Field(max_length=200, examples=["ci"])
    user_id: Id | None = Field(default=None, max_length=32)
    project_id: Id | None = Field(default=None, max_length=32)
    read_only: bool = False
    expires_at: AwareDatetime | None = Field(
        default=None, description="with its zone (`Z` for UTC): a bare time is ambiguous"
    )


class KeyPublic(BaseModel):
    id: Id
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    kind: KeyKind
    user_id: Id | None
    project_id: Id | None
    read_only: bool
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    last_used_address: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, row: ApiKey) -> KeyPublic:
        return cls(
            id=row.id,
            name=row.name,
            prefix=row.display_prefix,
            kind=KeyKind(row.kind),
            user_id=row.user_id,
            project_id=row.project_id,
            read_only=row.read_only,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            last_used_address=row.last_used_address,
            created_at=row.created_at,
        )


class KeyCreated(KeyPublic):
    secret: str = Field(description="the key itself: shown this once, stored only as its hash")


class KeyList(BaseModel):
    items: list[KeyPublic]
    count: int


class AuditEntryPublic(BaseModel):
    id: int
    at: dt.datetime
    actor_kind: str
    actor_id: str | None
    actor_name: str
    key_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    project_id: str | None
    summary: dict[str, Any]
    address: str | None
    result: str
    status: int | None
    error_code: str | None

    @classmethod
    def of(cls, row: AuditEntry) -> AuditEntryPublic:
        return cls(
            id=row.id,
            at=row.at,
            actor_kind=row.actor_kind,
            actor_id=row.actor_id,
            actor_name=row.actor_name,
            key_id=row.key_id,
            action=row.action,
            resource_type=row.resource_type,
            resource_id=row.resource_id,
            project_id=row.project_id,
            summary=row.summary,
            address=row.address,
            result=row.result,
            status=row.status,
            error_code=row.error_code,
        )


class AuditList(BaseModel):
    items: list[AuditEntryPublic]
    count: int


class LoginRequest(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)


class LoginAnswer(BaseModel):
    key: KeyCreated
    user: UserPublic


class WhoamiOrganization(BaseModel):
    id: Id
    name: str
    role: OrgRole


class WhoamiProject(BaseModel):
    id: Id
    name: str
    organization_id: Id
    role: ProjectRole
    """The stronger of the user's own role and the one their organization role gives."""


class Whoami(BaseModel):
    name: str
    role: str
    machine: str | None
    user_id: Id | None = Field(default=None, description="a user's key, or a provider user's")
    key_id: Id | None = Field(default=None, description="the API key that was sent")
    read_only: bool = False
    organizations: list[WhoamiOrganization] = Field(default_factory=list)
    projects: list[WhoamiProject] = Field(
        default_factory=list, description="a tenant's projects; a project key's one project"
    )
