"""machines.project_assigned_at: when the machine last changed tenant project

A tenant sees a machine's workflows and power jobs from its assignment on. That bound was read
from the latest `machine.assigned` event, which pruning the event log removes, and with it the
bound: a machine's next tenant would then see what the one before did. The machine now keeps
the time itself. Filled from the latest `machine.assigned` event where one is left; a machine
without one (never assigned, or its event pruned already) stays unbounded, as before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(
            sa.Column("project_assigned_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE machines SET project_assigned_at = (SELECT events.time FROM events"
        " WHERE events.kind = 'machine.assigned' AND events.machine_id = machines.id"
        " ORDER BY events.id DESC LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("project_assigned_at")
