"""The migrations build exactly the schema the code declares, on both databases, and carry the
data already stored through each change of a column's type."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from metalflow.config import Settings
from metalflow.db.base import UTCDateTime
from metalflow.db.engine import Database
from metalflow.db.migrate import alembic_config, target_metadata, upgrade

CLOUD_CONFIG = "#cloud-config\nhostname: web1\nruncmd: [[touch, /root/été]]\n"


def test_migrated_schema_matches_the_tables(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.database_url)
    try:
        upgrade(db)
        upgrade(db)
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, target_metadata()) == []
    finally:
        db.dispose()


def migrate(db: Database, revision: str, *, down: bool = False) -> None:
    with db.engine.begin() as connection:
        run = command.downgrade if down else command.upgrade
        run(alembic_config(connection), revision)


def user_data(db: Database) -> dict[str, object]:
    with db.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, user_data FROM machines ORDER BY name"))
        return {name: data for name, data in rows}


def test_text_user_data_becomes_its_utf8_bytes_and_back(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.database_url)
    try:
        migrate(db, "0003")
        insert = sa.text(
            "INSERT INTO machines (id, name, project, labels, arch, uefi, state, disks,"
            " attributes, instance_metadata, user_data, applied, agent_token_generation,"
            " created_at, updated_at, boot) VALUES (:id, :name, 'default', :doc, 'x86_64',"
            " true, 'ready', :list, :doc, :doc, :user_data, :doc, 0, :at, :at, :doc)"
        ).bindparams(
            sa.bindparam("doc", {}, type_=sa.JSON()),
            sa.bindparam("list", [], type_=sa.JSON()),
            sa.bindparam("at", dt.datetime.now(dt.UTC), type_=sa.DateTime(timezone=True)),
        )
        with db.engine.begin() as connection:
            connection.execute(insert, {"id": "a" * 32, "name": "web1", "user_data": CLOUD_CONFIG})
            connection.execute(insert, {"id": "b" * 32, "name": "web2", "user_data": None})

        migrate(db, "head")
        assert user_data(db) == {"web1": CLOUD_CONFIG.encode(), "web2": None}

        with db.engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE machines SET user_data = :data WHERE name = 'web2'").bindparams(
                    sa.bindparam("data", type_=sa.LargeBinary())
                ),
                {"data": b"\x1f\x8b\x08\x00\xff binary"},
            )
        with pytest.raises(RuntimeError, match="the user-data of web2 is not UTF-8 text"):
            migrate(db, "0003", down=True)
        assert user_data(db)["web2"] == b"\x1f\x8b\x08\x00\xff binary", "nothing changed"

        with db.engine.begin() as connection:
            connection.execute(sa.text("UPDATE machines SET user_data = NULL WHERE name = 'web2'"))
        migrate(db, "0003", down=True)
        assert user_data(db) == {"web1": CLOUD_CONFIG, "web2": None}
    finally:
        db.dispose()


def test_an_assigned_machine_keeps_the_time_of_its_latest_assignment_event(
    settings: Settings,
) -> None:
    settings.data_dir.mkdir(parents=True)
    db = Database(settings.database_url)
    first, latest = (dt.datetime(2026, 12, day, 9, 30, tzinfo=dt.UTC) for day in (1, 5))
    at = sa.bindparam("at", type_=sa.DateTime(timezone=True))
    try:
        migrate(db, "0009")
        with db.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO organizations (id, name, created_at) VALUES ('o', 'acme', :at)"
                ).bindparams(at),
                {"at": first},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO projects (id, organization_id, name, created_at)"
                    " VALUES ('p', 'o', 'web', :at)"
                ).bindparams(at),
                {"at": first},
            )
            machine = sa.text(
                "INSERT INTO machines (id, name, project, labels, arch, uefi, state, disks,"
                " attributes, instance_metadata, applied, agent_token_generation, created_at,"
                " updated_at, boot, project_id) VALUES (:id, :id, 'default', '{}', 'x86_64',"
                " true, 'ready', '[]', '{}', '{}', '{}', 0, :at, :at, '{}', :project)"
            ).bindparams(at)
            connection.execute(machine, {"id": "assigned", "at": first, "project": "p"})
            connection.execute(machine, {"id": "never", "at": first, "project": None})
            event = sa.text(
                "INSERT INTO events (time, machine_id, machine_name, kind, data)"
                " VALUES (:at, 'assigned', 'assigned', :kind, '{}')"
            ).bindparams(at)
            for time, kind in ((first, "machine.assigned"), (latest, "machine.assigned")):
                connection.execute(event, {"at": time, "kind": kind})
            connection.execute(event, {"at": latest + dt.timedelta(hours=1), "kind": "power.on"})

        migrate(db, "head")

        with db.engine.connect() as connection:
            query = sa.select(
                sa.column("id", sa.String()), sa.column("project_assigned_at", UTCDateTime())
            ).select_from(sa.table("machines"))
            found = {machine_id: when for machine_id, when in connection.execute(query)}
        assert found == {"assigned": latest, "never": None}

        migrate(db, "0009", down=True)
        migrate(db, "head")
    finally:
        db.dispose()
