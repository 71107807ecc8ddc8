"""machines.user_data holds bytes: gzip'd or any other binary user-data, not only text

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 10:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Text becomes its UTF-8 bytes (SQLite's batch copy casts to BLOB, which is exactly that)."""
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.alter_column(
            "user_data",
            existing_type=sa.Text(),
            type_=sa.LargeBinary(),
            existing_nullable=True,
            postgresql_using="convert_to(user_data, 'UTF8')",
        )


def downgrade() -> None:
    """Refused while any machine's user-data is not UTF-8 text, which a text column would
    garble; the message names those machines."""
    rows = op.get_bind().execute(
        sa.text("SELECT name, user_data FROM machines WHERE user_data IS NOT NULL")
    )
    binary = []
    for name, data in rows:
        try:
            bytes(data).decode()
        except UnicodeDecodeError:
            binary.append(name)
    if binary:
        raise RuntimeError(
            f"cannot downgrade below 0004: the user-data of {', '.join(sorted(binary))} is not"
            " UTF-8 text; re-apply those machines with text userData (or none) first"
        )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.alter_column(
            "user_data",
            existing_type=sa.LargeBinary(),
            type_=sa.Text(),
            existing_nullable=True,
            postgresql_using="convert_from(user_data, 'UTF8')",
        )
