"""Alembic environment: runs on the connection metalflow hands it (see metalflow.db.migrate)."""

from __future__ import annotations

from alembic import context

from metalflow.db.migrate import target_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through metalflow.db.migrate.upgrade()")
context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
