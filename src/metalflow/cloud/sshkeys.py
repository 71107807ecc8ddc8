"""SSH keys: a user's own (put on the devices of every project they deploy into) or a project's
(on that project's devices only). Each call validates, then writes within the caller's
transaction, so a call that raises leaves nothing behind.

The same key twice for one owner is a 422, as Equinix Metal answered it (packet-python's
`create_project_ssh_key` reads that 422 as "it was created already" and looks the key up).
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from metalflow.cloud.sshkey_format import KeyProblem, parse_public_key
from metalflow.cloud.tables import SshKey
from metalflow.errors import Invalid, NotFound
from metalflow.tenancy import service as tenancy

MAX_LABEL = 200


def key_missing(key_id: str) -> NotFound:
    """The one 404 of a key that is not there, or not the caller's to see."""
    return NotFound(f"SSH key {key_id!r} not found", field="ssh_key")


def checked_key(text: str, field: str = "key") -> tuple[str, str]:
    """The normalised line and its fingerprint, or Invalid naming `field` and why."""
    try:
        parsed = parse_public_key(text)
    except KeyProblem as problem:
        raise Invalid(f"not an OpenSSH public key: {problem}", field=field) from None
    return parsed.line, parsed.fingerprint


def checked_label(label: str, field: str = "label") -> str:
    text = label.strip()
    if not text or len(text) > MAX_LABEL or not text.isprintable():
        raise Invalid(f"{field} must be 1-{MAX_LABEL} printable characters", field=field)
    return text


def _label_of(line: str, fingerprint: str) -> str:
    """A label for a key given without one: its comment, else its fingerprint."""
    comment = line.split(" ", 2)[2] if line.count(" ") >= 2 else ""
    return comment[:MAX_LABEL] or fingerprint


def _refuse_duplicate(
    session: Session, fingerprint: str, user_id: str | None, project_id: str | None, own: str = ""
) -> None:
    taken = session.scalar(
        select(SshKey.id).where(
            SshKey.fingerprint == fingerprint,
            SshKey.user_id == user_id if user_id is not None else SshKey.user_id.is_(None),
            SshKey.project_id == project_id
            if project_id is not None
            else SshKey.project_id.is_(None),
            SshKey.id != own,
        )
    )
    if taken is not None:
        raise Invalid(
            f"this key is there already (SSH key {taken!r}, fingerprint {fingerprint})",
            field="key",
        )


def create_key(
    session: Session,
    key: str,
    label: str | None = None,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
) -> SshKey:
    """A user's key (`user_id`) or a project's (`project_id`): give exactly one."""
    if (user_id is None) == (project_id is None):
        raise Invalid("an SSH key belongs to a user or to a project: give one", field="user_id")
    line, fingerprint = checked_key(key)
    name = checked_label(label) if label is not None else _label_of(line, fingerprint)
    if user_id is not None:
        tenancy.get_user(session, user_id)
    else:
        tenancy.get_project(session, str(project_id))
    _refuse_duplicate(session, fingerprint, user_id, project_id)
    row = SshKey(
        id=str(uuid.uuid4()),
        label=name,
        key=line,
        fingerprint=fingerprint,
        user_id=user_id,
        project_id=project_id,
    )
    session.add(row)
    session.flush()
    return row


def get_key(session: Session, key_id: str) -> SshKey:
    row = session.get(SshKey, key_id)
    if row is None:
        raise key_missing(key_id)
    return row


def list_keys(
    session: Session,
    *,
    user_id: str | None = None,
    projects: frozenset[str] | None = None,
    everyone: bool = False,
) -> list[SshKey]:
    """Oldest first: `user_id`'s own keys and the keys of `projects` (every key with
    `everyone`, the provider's view)."""
    query = select(SshKey).order_by(SshKey.created_at, SshKey.id)
    if not everyone:
        mine: list[ColumnElement[bool]] = [SshKey.project_id.in_(sorted(projects or ()))]
        if user_id is not None:
            mine.append(SshKey.user_id == user_id)
        query = query.where(or_(*mine))
    return list(session.scalars(query))


def project_keys(session: Session, project_id: str) -> list[SshKey]:
    query = select(SshKey).where(SshKey.project_id == project_id)
    return list(session.scalars(query.order_by(SshKey.created_at, SshKey.id)))


def update_key(
    session: Session, key_id: str, *, label: str | None = None, key: str | None = None
) -> SshKey:
    """A new label or a new key line (the fingerprint follows), either or both."""
    row = get_key(session, key_id)
    if label is not None:
        row.label = checked_label(label)
    if key is not None:
        line, fingerprint = checked_key(key)
        _refuse_duplicate(session, fingerprint, row.user_id, row.project_id, own=row.id)
        row.key, row.fingerprint = line, fingerprint
    session.flush()
    return row


def delete_key(session: Session, key_id: str) -> None:
    session.delete(get_key(session, key_id))
    session.flush()
