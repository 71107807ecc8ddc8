"""The migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from metalflow.config import Settings
from metalflow.db.engine import Database
from metalflow.db.migrate import target_metadata, upgrade


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
