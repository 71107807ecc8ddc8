"""run tokens: a workflow's start count and the boot token exchanged in its current start

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-16 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("starts", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("boot_token_issued", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("agent_key_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("agent_key_hash")
        batch.drop_column("boot_token_issued")
        batch.drop_column("starts")
