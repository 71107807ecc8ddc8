"""power: BMC jobs, each machine's power state and BMC options, workflow boot options

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "power_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("workflow_id", sa.String(length=32), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_power_jobs_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_power_jobs")),
    )
    with op.batch_alter_table("power_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_power_jobs_machine_id"), ["machine_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_power_jobs_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_power_jobs_workflow_id"), ["workflow_id"], unique=False
        )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bmc_options", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.add_column(sa.Column("power_state", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("power_state_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("power_error", sa.Text(), nullable=True))
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("boot_options", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("boot_options")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("power_error")
        batch_op.drop_column("power_state_at")
        batch_op.drop_column("power_state")
        batch_op.drop_column("bmc_options")
    with op.batch_alter_table("power_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_power_jobs_workflow_id"))
        batch_op.drop_index(batch_op.f("ix_power_jobs_state"))
        batch_op.drop_index(batch_op.f("ix_power_jobs_machine_id"))
    op.drop_table("power_jobs")
