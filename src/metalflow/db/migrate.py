"""Schema upgrades on start: Alembic to head, under a lock when several processes start at once."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text

from metalflow.db.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_KEY = 0x6D66_6C77  # "mflw"


def target_metadata() -> MetaData:
    """Every domain's tables, imported here so Alembic sees the whole schema."""
    from metalflow import events  # noqa: F401
    from metalflow.boot.dhcp import tables as _dhcp  # noqa: F401
    from metalflow.cloud import tables as _cloud  # noqa: F401
    from metalflow.db.base import Base
    from metalflow.inventory import tables as _inventory  # noqa: F401
    from metalflow.ipam import tables as _ipam  # noqa: F401
    from metalflow.power import tables as _power  # noqa: F401
    from metalflow.templates import tables as _templates  # noqa: F401
    from metalflow.tenancy import tables as _tenancy  # noqa: F401
    from metalflow.workflows import tables as _workflows  # noqa: F401

    return Base.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(db: Database) -> None:
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        command.upgrade(alembic_config(connection), "head")
