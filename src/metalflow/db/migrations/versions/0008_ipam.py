"""ipam: IP blocks and their free space; on PostgreSQL, children of one block never overlap

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

NETWORK = sa.String(length=43).with_variant(postgresql.CIDR(), "postgresql")
DISJOINT = "ex_ipam_blocks_children_disjoint"


def upgrade() -> None:
    op.create_table(
        "ipam_blocks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("cidr", NETWORK, nullable=False),
        sa.Column("family", sa.Integer(), nullable=False),
        sa.Column("prefixlen", sa.Integer(), nullable=False),
        sa.Column("first", sa.String(length=32), nullable=False),
        sa.Column("last", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=True),
        sa.Column("machine_id", sa.String(length=32), nullable=True),
        sa.Column("metro", sa.String(length=64), nullable=True),
        sa.Column("provisioning", sa.Boolean(), nullable=False),
        sa.Column("byo", sa.Boolean(), nullable=False),
        sa.Column("allowed_projects", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("quarantine_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("family IN (4, 6)", name=op.f("ck_ipam_blocks_family")),
        sa.CheckConstraint(
            "(family = 4 AND prefixlen BETWEEN 0 AND 32) OR (family = 6 AND prefixlen BETWEEN 0"
            " AND 128)",
            name=op.f("ck_ipam_blocks_prefixlen"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["ipam_blocks.id"],
            name=op.f("fk_ipam_blocks_parent_id_ipam_blocks"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ipam_blocks")),
    )
    op.create_index("ix_ipam_blocks_parent_first", "ipam_blocks", ["parent_id", "family", "first"])
    op.create_index("ix_ipam_blocks_project_status", "ipam_blocks", ["project_id", "status"])
    op.create_index(op.f("ix_ipam_blocks_machine_id"), "ipam_blocks", ["machine_id"])
    op.create_table(
        "ipam_free_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("block_id", sa.String(length=32), nullable=False),
        sa.Column("cidr", NETWORK, nullable=False),
        sa.Column("prefixlen", sa.Integer(), nullable=False),
        sa.Column("first", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_id"],
            ["ipam_blocks.id"],
            name=op.f("fk_ipam_free_blocks_block_id_ipam_blocks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ipam_free_blocks")),
    )
    op.create_index(
        "ix_ipam_free_blocks_by_size",
        "ipam_free_blocks",
        ["block_id", "prefixlen", "first"],
        unique=True,
    )
    op.create_index(
        "ix_ipam_free_blocks_by_address", "ipam_free_blocks", ["block_id", "first"], unique=True
    )
    if op.get_bind().dialect.name == "postgresql":
        # btree_gist gives GiST the `=` on text that the parent needs; it is a trusted extension,
        # so the database's owner may create it without being a superuser. Checked at commit:
        # a new prefix over existing ones is inserted before they move under it.
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            f"ALTER TABLE ipam_blocks ADD CONSTRAINT {DISJOINT} EXCLUDE USING gist"
            " ((COALESCE(parent_id, '')) WITH =, cidr inet_ops WITH &&)"
            " DEFERRABLE INITIALLY DEFERRED"
        )


def downgrade() -> None:
    op.drop_table("ipam_free_blocks")
    op.drop_table("ipam_blocks")
