"""The tenancy service on SQLite and PostgreSQL: what an operator or a tenant's admin sees when
they create organizations, projects, users, memberships and keys, and read the audit log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.db.migrate import upgrade
from metalflow.errors import Conflict, Invalid, NotFound
from metalflow.tenancy import service
from metalflow.tenancy.keys import KeyKind
from metalflow.tenancy.passwords import Passwords
from metalflow.tenancy.policy import Action, OrgRole, Outcome, PrincipalKind, ProjectRole, decide
from metalflow.tenancy.service import ActorKind
from metalflow.tenancy.tables import ApiKey, OrganizationMember, User

NOW = dt.datetime(2026, 12, 7, 11, 0, tzinfo=dt.UTC)
FAST = Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
PASSWORD = "correct horse battery"


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    settings.data_dir.mkdir(parents=True)
    database = Database(settings.database_url)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def acme(db: Database) -> dict[str, str]:
    """An organization with its owner, one project and a second user."""
    with db.write() as session:
        ada = service.create_user(
            session, "Ada@Example.com", "Ada", password=PASSWORD, passwords=FAST
        )
        bob = service.create_user(session, "bob@example.com", "Bob")
        org = service.create_organization(session, "acme", ada.id)
        web = service.create_project(session, org.id, "web")
        return {"ada": ada.id, "bob": bob.id, "org": org.id, "web": web.id}


def count(db: Database, table: type[object]) -> int:
    with db.read() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def test_organization_project_and_memberships(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session:
        service.add_project_member(session, acme["web"], acme["bob"], ProjectRole.VIEWER)
        service.change_project_member(session, acme["web"], acme["bob"], ProjectRole.EDITOR)
    with db.read() as session:
        assert [o.name for o in service.list_organizations(session)] == ["acme"]
        assert [p.name for p in service.list_projects(session, acme["org"])] == ["web"]
        members = service.list_project_members(session, acme["web"])
        assert [(m.user_id, m.role) for m in members] == [(acme["bob"], "editor")]
        bob = service.principal_for_user(session, service.get_user(session, acme["bob"]))
        ada = service.principal_for_user(session, service.get_user(session, acme["ada"]))
    assert decide(bob, Action.POWER, acme["web"]).allowed
    assert decide(bob, Action.MANAGE_MEMBERS, acme["web"]).outcome is Outcome.FORBIDDEN
    assert decide(ada, Action.MANAGE_MEMBERS, acme["web"]).allowed, "the org owner owns it"
    assert decide(ada, Action.READ, "another-project").outcome is Outcome.NOT_FOUND

    with db.write() as session, pytest.raises(Conflict, match="member already"):
        service.add_project_member(session, acme["web"], acme["bob"], ProjectRole.OWNER)
    with db.write() as session:
        service.remove_project_member(session, acme["web"], acme["bob"])
    with db.read() as session:
        assert service.list_project_members(session, acme["web"]) == []


def test_bad_names_are_refused_naming_the_field(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session, pytest.raises(Invalid, match="lower-case letters") as raised:
        service.create_project(session, acme["org"], "Web Site")
    assert raised.value.field == "name"
    with db.write() as session, pytest.raises(Invalid, match=r"name@example\.com") as raised:
        service.create_user(session, "not-an-address", "X")
    assert raised.value.field == "email"
    with db.write() as session, pytest.raises(Conflict, match="has a project 'web' already"):
        service.create_project(session, acme["org"], "web")
    with db.read() as session, pytest.raises(NotFound, match="project 'nope' not found"):
        service.get_project(session, "nope")


def test_the_last_owner_of_an_organization_stays(db: Database, acme: dict[str, str]) -> None:
    org, ada, bob = acme["org"], acme["ada"], acme["bob"]
    with db.write() as session, pytest.raises(Conflict, match="last owner of organization 'acme'"):
        service.remove_org_member(session, org, ada)
    with db.write() as session, pytest.raises(Conflict, match="last owner"):
        service.change_org_member(session, org, ada, OrgRole.ADMIN)
    with db.write() as session, pytest.raises(Conflict, match="last owner"):
        service.delete_user(session, ada)
    with db.write() as session:
        service.add_org_member(session, org, bob, OrgRole.OWNER)
    with db.write() as session:
        service.remove_org_member(session, org, ada)
    with db.read() as session:
        members = service.list_org_members(session, org)
        assert [(m.user_id, m.role) for m in members] == [(bob, "owner")]


def test_an_organization_with_projects_is_not_deleted(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session, pytest.raises(Conflict, match=r"still has projects \(web\)"):
        service.delete_organization(session, acme["org"])
    with db.write() as session:
        service.create_key(session, "ci", now=NOW, project_id=acme["web"])
        service.delete_project(session, acme["web"], quarantine=dt.timedelta(hours=1))
        service.delete_organization(session, acme["org"])
    assert count(db, ApiKey) == 0
    assert count(db, OrganizationMember) == 0


def test_passwords_verify_and_are_never_stored_in_clear(db: Database, acme: dict[str, str]) -> None:
    with db.read() as session:
        user = service.verify_password(session, "ADA@example.com", PASSWORD, FAST)
        assert user is not None and user.id == acme["ada"]
        assert service.verify_password(session, "ada@example.com", "wrong password!", FAST) is None
        assert service.verify_password(session, "bob@example.com", PASSWORD, FAST) is None
        assert service.verify_password(session, "eve@example.com", PASSWORD, FAST) is None
    with db.engine.connect() as connection:
        dump = str(connection.execute(sa.text("SELECT * FROM users")).all())
    assert PASSWORD not in dump
    with db.write() as session:
        service.set_password(session, acme["bob"], "another long password", FAST)
    with db.read() as session:
        assert service.verify_password(session, "bob@example.com", "another long password", FAST)


def test_a_duplicate_email_in_another_case_is_a_clear_error_and_leaves_nothing(
    db: Database, acme: dict[str, str]
) -> None:
    users_before = count(db, User)
    with pytest.raises(Conflict, match="exists already") as raised, db.write() as session:
        carol = service.create_user(session, "carol@example.com", "Carol")
        service.add_org_member(session, acme["org"], carol.id, OrgRole.MEMBER)
        service.create_user(session, "  ADA@example.COM ", "Ada again")
    assert raised.value.field == "email"
    assert count(db, User) == users_before
    assert count(db, OrganizationMember) == 1


def test_the_database_itself_refuses_a_mixed_case_or_duplicate_email(
    db: Database, acme: dict[str, str]
) -> None:
    with pytest.raises(sa.exc.IntegrityError), db.write() as session:
        session.add(User(id="u" * 32, email="Eve@example.com", name="Eve"))
    with pytest.raises(sa.exc.IntegrityError), db.write() as session:
        session.add(User(id="u" * 32, email="ada@example.com", name="Ada"))


def test_key_create_authenticate_revoke(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session:
        created = service.create_key(session, "laptop", now=NOW, user_id=acme["ada"])
        key_id = created.key.id
    assert created.secret.startswith("mfu_")
    with db.read() as session:
        listed = service.list_keys(session, user_id=acme["ada"])
        assert [(k.id, k.display_prefix) for k in listed] == [(key_id, created.secret[:12])]
        assert created.secret not in str([vars(k) for k in listed])

    later = NOW + dt.timedelta(minutes=5)
    with db.write() as session:
        identity = service.authenticate_key(session, created.secret, "198.51.100.7", later)
        assert identity is not None
        assert (identity.kind, identity.user_id, identity.read_only) == (
            KeyKind.USER,
            acme["ada"],
            False,
        )
        principal = service.principal_for_key(session, identity)
    assert principal.kind is PrincipalKind.USER
    assert decide(principal, Action.DELETE, acme["web"]).allowed
    with db.read() as session:
        key = service.list_keys(session, user_id=acme["ada"])[0]
        assert (key.last_used_at, key.last_used_address) == (later, "198.51.100.7")
    soon = later + dt.timedelta(seconds=10)
    with db.write() as session:
        assert service.authenticate_key(session, created.secret, "198.51.100.7", soon)
    with db.read() as session:
        assert service.list_keys(session, user_id=acme["ada"])[0].last_used_at == later
    with db.write() as session:
        assert service.authenticate_key(session, created.secret, "203.0.113.9", soon)
    with db.read() as session:
        key = service.list_keys(session, user_id=acme["ada"])[0]
        assert (key.last_used_at, key.last_used_address) == (soon, "203.0.113.9")

    with db.write() as session:
        service.revoke_key(session, key_id, later)
    with db.write() as session:
        assert service.authenticate_key(session, created.secret, None, later) is None
        assert (
            service.revoke_key(session, key_id, later + dt.timedelta(hours=1)).revoked_at == later
        )


def test_unknown_and_mistyped_keys_are_refused(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session:
        created = service.create_key(session, "ci", now=NOW, project_id=acme["web"])
        typo = created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B")
        assert service.authenticate_key(session, typo, None, NOW) is None
        assert service.authenticate_key(session, created.secret[:20], None, NOW) is None
        assert service.authenticate_key(session, "mf_admin-token", None, NOW) is None


def test_a_key_expires(db: Database, acme: dict[str, str]) -> None:
    expires = NOW + dt.timedelta(days=1)
    with db.write() as session:
        created = service.create_key(
            session, "ci", now=NOW, project_id=acme["web"], expires_at=expires
        )
    with db.write() as session:
        before = expires - dt.timedelta(seconds=1)
        assert service.authenticate_key(session, created.secret, None, before) is not None
        assert service.authenticate_key(session, created.secret, None, expires) is None
    with db.write() as session, pytest.raises(Invalid, match="expires_at is in the past"):
        service.create_key(session, "old", now=NOW, user_id=acme["ada"], expires_at=NOW)


def test_a_read_only_project_key_carries_its_scope(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session:
        created = service.create_key(
            session, "monitoring", now=NOW, project_id=acme["web"], read_only=True
        )
    assert created.secret.startswith("mfp_")
    with db.write() as session:
        identity = service.authenticate_key(session, created.secret, None, NOW)
        assert identity is not None and identity.read_only
        principal = service.principal_for_key(session, identity)
    assert (principal.kind, principal.project, principal.read_only) == (
        PrincipalKind.PROJECT_KEY,
        acme["web"],
        True,
    )
    assert decide(principal, Action.READ, acme["web"]).allowed
    assert decide(principal, Action.POWER, acme["web"]).needed == "read-write"


def test_a_key_needs_exactly_one_owner(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session, pytest.raises(Invalid, match="not both") as raised:
        service.create_key(session, "k", now=NOW, user_id=acme["ada"], project_id=acme["web"])
    assert raised.value.field == "user_id"
    with db.write() as session, pytest.raises(Invalid, match="user_id or project_id"):
        service.create_key(session, "k", now=NOW)


def test_audit_append_query_purge(db: Database, acme: dict[str, str]) -> None:
    with db.write() as session:
        for hours, project in ((48, acme["web"]), (2, acme["web"]), (1, None)):
            service.append_audit(
                session,
                actor_kind=ActorKind.USER,
                actor_id=acme["ada"],
                actor_name="ada@example.com",
                action="POST /metal/v1/projects/{id}/devices",
                resource_type="device",
                resource_id=f"d{hours}",
                project_id=project,
                summary={"after": {"hostname": "web1", "root_password": "hunter2"}},
                address="198.51.100.7",
                at=NOW - dt.timedelta(hours=hours),
            )
        service.append_audit(
            session,
            actor_kind=ActorKind.SYSTEM,
            actor_name="controller",
            action="machine power",
            result="error",
            status=409,
            error_code="conflict",
            at=NOW,
        )
    with db.read() as session:
        newest = service.query_audit(session)
        assert [e.resource_id for e in newest] == [None, "d1", "d2", "d48"]
        assert newest[0].result == "error" and newest[0].status == 409
        assert newest[1].summary == {"after": {"hostname": "web1", "root_password": "[redacted]"}}
        in_web = service.query_audit(session, project_id=acme["web"])
        assert [e.resource_id for e in in_web] == ["d2", "d48"]
        recent = service.query_audit(session, since=NOW - dt.timedelta(hours=3))
        assert [e.resource_id for e in recent] == [None, "d1", "d2"]
        by_ada = service.query_audit(
            session, actor_id=acme["ada"], since=NOW - dt.timedelta(hours=3)
        )
        assert [e.resource_id for e in by_ada] == ["d1", "d2"]
    with db.write() as session:
        assert service.prune_audit(session, NOW - dt.timedelta(days=1)) == 1
    with db.read() as session:
        assert [e.resource_id for e in service.query_audit(session)] == [None, "d1", "d2"]
    with db.write() as session, pytest.raises(Invalid, match="'ok' or 'error'"):
        service.append_audit(
            session, actor_kind=ActorKind.USER, actor_name="x", action="y", result="maybe"
        )
