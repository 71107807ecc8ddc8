"""boot services: DHCP pool leases, per-machine boot options

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dhcp_leases",
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("address", sa.String(length=15), nullable=False),
        sa.Column("subnet", sa.String(length=18), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mac", name=op.f("pk_dhcp_leases")),
        sa.UniqueConstraint("address", name=op.f("uq_dhcp_leases_address")),
    )
    with op.batch_alter_table("dhcp_leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dhcp_leases_subnet"), ["subnet"], unique=False)
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boot", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("boot")
    with op.batch_alter_table("dhcp_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dhcp_leases_subnet"))
    op.drop_table("dhcp_leases")
