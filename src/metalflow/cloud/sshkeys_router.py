"""SSH keys on the Metal API: `/ssh-keys` (the caller's own, and the keys of the projects it
sees, as packet-python's `create_project_ssh_key` expects when it looks a key up there) and
`/projects/{id}/ssh-keys`, in Equinix Metal's shape.

Read off equinix-metal 0.11.0's `models/ssh_key*.py` (`entity`) and packet-python 1.44.3's
`SSHKey` (`owner`): both are sent. A user's key is theirs alone; a project's is read by its
members and written by its editors (a project key is one), decided by `services.require`.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, Response
from pydantic import Field, field_validator
from sqlalchemy.orm import Session

from metalflow.cloud import sshkeys
from metalflow.cloud.identity_router import acting, current
from metalflow.cloud.identity_schemas import project_link, user_link
from metalflow.cloud.metal import Href, MetalModel, href
from metalflow.cloud.sshkey_format import MAX_LINE, KeyProblem, parse_public_key
from metalflow.cloud.tables import SshKey
from metalflow.errors import Invalid
from metalflow.services import ProjectReader, ProjectWriter, ServicesDep, note_audit, require
from metalflow.tenancy import policy
from metalflow.tenancy import service as tenancy
from metalflow.tenancy.auth import Principal
from metalflow.tenancy.policy import PrincipalKind

router = APIRouter(tags=["metal"])

KEY_FIELD = Field(
    max_length=MAX_LINE,
    description="an OpenSSH public key line: ssh-ed25519, ssh-rsa (2048 bits or more),"
    " ecdsa-sha2-nistp256/384/521 or sk-*",
    examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILv6PTaKFgZMRh/e8PXab7wT445CwXm00syKx6y0puU9"],
)


class MetalSshKey(MetalModel):
    id: str | None = None
    label: str | None = None
    key: str | None = None
    fingerprint: str | None = None
    tags: list[str] | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    owner: Href | None = None
    entity: Href | None = None
    href: str | None = None


class MetalSshKeyList(MetalModel):
    ssh_keys: list[MetalSshKey] | None = None


def _public_key(value: str | None) -> str | None:
    """Checked where the body is read, so the 422 names `body.key` and says why."""
    if value is None:
        return None
    try:
        return parse_public_key(value).line
    except KeyProblem as problem:
        raise ValueError(f"not an OpenSSH public key: {problem}") from None


def _no_tags(value: list[str] | None) -> list[str] | None:
    if value:
        raise ValueError("metalflow keeps no tags for SSH keys: leave tags out")
    return value


class MetalSshKeyCreate(MetalModel):
    key: str = KEY_FIELD
    label: str | None = Field(default=None, max_length=sshkeys.MAX_LABEL)
    tags: list[str] | None = None
    instances_ids: list[str] | None = Field(
        default=None,
        description="Equinix's devices to add the key to at once: not taken (a key reaches a"
        " device at its create or reinstall)",
    )

    _key = field_validator("key")(_public_key)
    _tags = field_validator("tags")(_no_tags)

    @field_validator("instances_ids")
    @classmethod
    def _no_instances(cls, value: list[str] | None) -> list[str] | None:
        if value:
            raise ValueError(
                "keys reach devices when they are created or reinstalled: leave instances_ids out"
            )
        return value


class MetalSshKeyUpdate(MetalModel):
    key: str | None = Field(default=None, max_length=MAX_LINE)
    label: str | None = Field(default=None, max_length=sshkeys.MAX_LABEL)
    tags: list[str] | None = None

    _key = field_validator("key")(_public_key)
    _tags = field_validator("tags")(_no_tags)


def key_document(row: SshKey) -> MetalSshKey:
    owner = user_link(row.user_id) if row.user_id is not None else project_link(str(row.project_id))
    return MetalSshKey(
        id=row.id,
        label=row.label,
        key=row.key,
        fingerprint=row.fingerprint,
        tags=[],
        created_at=row.created_at,
        updated_at=row.updated_at,
        owner=owner,
        entity=owner,
        href=href(f"/ssh-keys/{row.id}"),
    )


def _summary(row: SshKey) -> dict[str, str]:
    return {"label": row.label, "fingerprint": row.fingerprint}


@router.get("/ssh-keys", response_model=MetalSshKeyList, response_model_exclude_unset=True)
def list_ssh_keys(services: ServicesDep, principal: ProjectReader) -> MetalSshKeyList:
    """The caller's own keys and those of the projects it sees (the provider: every key)."""
    with services.db.read() as session:
        caller = acting(current(session, principal))
        projects = policy.visible_projects(caller)
        rows = sshkeys.list_keys(
            session, user_id=caller.user_id, projects=projects, everyone=projects is None
        )
        return MetalSshKeyList(ssh_keys=[key_document(row) for row in rows])


@router.post(
    "/ssh-keys", status_code=201, response_model=MetalSshKey, response_model_exclude_unset=True
)
def create_ssh_key(
    body: MetalSshKeyCreate, request: Request, services: ServicesDep, principal: ProjectWriter
) -> MetalSshKey:
    """A user key's person gets a key of their own; a project key's project gets one."""
    with services.db.write() as session:
        caller = current(session, principal)
        policy_caller = acting(caller)
        if policy_caller.user_id is not None:
            row = sshkeys.create_key(session, body.key, body.label, user_id=policy_caller.user_id)
        elif policy_caller.kind is PrincipalKind.PROJECT_KEY and policy_caller.project:
            project_id = policy_caller.project
            require(caller, policy.Action.WRITE, project_id, tenancy.project_missing(project_id))
            row = sshkeys.create_key(session, body.key, body.label, project_id=project_id)
        else:
            raise Invalid(
                "the admin token is nobody's: add the key to a project"
                " (POST /metal/v1/projects/{id}/ssh-keys) or use the user's key",
                field="x-auth-token",
            )
        note_audit(request, "ssh_key", row.id, project_id=row.project_id, summary=_summary(row))
        return key_document(row)


def _check_key(
    session: Session, principal: Principal, action: policy.Action, key_id: str
) -> SshKey:
    """The key once the caller may do `action` on it: a user's own, or one of a project the
    caller may do it in (else the 404 of a missing key, or a 403)."""
    caller = current(session, principal)
    missing = sshkeys.key_missing(key_id)
    row = session.get(SshKey, key_id)
    if row is None:
        raise missing
    if row.user_id is not None and row.user_id == acting(caller).user_id:
        return row
    require(caller, action, row.project_id, missing)
    return row


@router.get("/ssh-keys/{key_id}", response_model=MetalSshKey, response_model_exclude_unset=True)
def show_ssh_key(key_id: str, services: ServicesDep, principal: ProjectReader) -> MetalSshKey:
    with services.db.read() as session:
        return key_document(_check_key(session, principal, policy.Action.READ, key_id))


def _update(
    key_id: str,
    body: MetalSshKeyUpdate,
    request: Request,
    services: ServicesDep,
    principal: Principal,
) -> MetalSshKey:
    with services.db.write() as session:
        row = _check_key(session, principal, policy.Action.WRITE, key_id)
        before = _summary(row)
        row = sshkeys.update_key(session, key_id, label=body.label, key=body.key)
        note_audit(
            request,
            "ssh_key",
            key_id,
            project_id=row.project_id,
            summary={"before": before, "after": _summary(row)},
        )
        return key_document(row)


@router.put("/ssh-keys/{key_id}", response_model=MetalSshKey, response_model_exclude_unset=True)
def replace_ssh_key(
    key_id: str,
    body: MetalSshKeyUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> MetalSshKey:
    """equinix-metal's `update_ssh_key` (PUT)."""
    return _update(key_id, body, request, services, principal)


@router.patch("/ssh-keys/{key_id}", response_model=MetalSshKey, response_model_exclude_unset=True)
def update_ssh_key(
    key_id: str,
    body: MetalSshKeyUpdate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> MetalSshKey:
    """packet-python's `SSHKey.update()` (PATCH)."""
    return _update(key_id, body, request, services, principal)


@router.delete("/ssh-keys/{key_id}", status_code=204)
def delete_ssh_key(
    key_id: str, request: Request, services: ServicesDep, principal: ProjectWriter
) -> Response:
    """Devices made with the key keep it: it was written into them at their create."""
    with services.db.write() as session:
        row = _check_key(session, principal, policy.Action.DELETE, key_id)
        project_id, summary = row.project_id, _summary(row)
        sshkeys.delete_key(session, key_id)
        note_audit(request, "ssh_key", key_id, project_id=project_id, summary=summary)
    return Response(status_code=204)


@router.get(
    "/projects/{project_id}/ssh-keys",
    response_model=MetalSshKeyList,
    response_model_exclude_unset=True,
)
def list_project_ssh_keys(
    project_id: str, services: ServicesDep, principal: ProjectReader
) -> MetalSshKeyList:
    with services.db.read() as session:
        caller = current(session, principal)
        require(caller, policy.Action.READ, project_id, tenancy.project_missing(project_id))
        tenancy.get_project(session, project_id)
        rows = sshkeys.project_keys(session, project_id)
        return MetalSshKeyList(ssh_keys=[key_document(row) for row in rows])


@router.post(
    "/projects/{project_id}/ssh-keys",
    status_code=201,
    response_model=MetalSshKey,
    response_model_exclude_unset=True,
)
def create_project_ssh_key(
    project_id: str,
    body: MetalSshKeyCreate,
    request: Request,
    services: ServicesDep,
    principal: ProjectWriter,
) -> MetalSshKey:
    """The project's editors (and its project keys) add keys for its devices."""
    with services.db.write() as session:
        caller = current(session, principal)
        require(caller, policy.Action.WRITE, project_id, tenancy.project_missing(project_id))
        row = sshkeys.create_key(session, body.key, body.label, project_id=project_id)
        note_audit(request, "ssh_key", row.id, project_id=project_id, summary=_summary(row))
        return key_document(row)
