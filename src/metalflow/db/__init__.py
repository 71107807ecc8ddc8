"""Storage: SQLAlchemy 2 engine and sessions, tables, Alembic migrations (SQLite or PostgreSQL)."""

from metalflow.db.base import Base
from metalflow.db.engine import Database

__all__ = ["Base", "Database"]
