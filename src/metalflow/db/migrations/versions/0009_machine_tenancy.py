"""machines: the tenant project a machine is assigned to, and its metro

`machines.project` stays what it was: the operator's grouping from a manifest (a Tinkerbell
Hardware's namespace), kept for the Tinkerbell documents. Tenancy is a separate act: the
provider assigns a machine to a tenant project (`project_id`), and the assignment survives
re-applying the machine's manifest. 0007's plan to fill `project_id` from the name is dropped:
a project's name is unique only inside its organization, so a name cannot name one project.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("project_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("metro", sa.String(length=64), nullable=True))
        batch.create_foreign_key(
            op.f("fk_machines_project_id_projects"),
            "projects",
            ["project_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch.create_index(op.f("ix_machines_project_id"), ["project_id"])


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_index(op.f("ix_machines_project_id"))
        batch.drop_constraint(op.f("fk_machines_project_id_projects"), type_="foreignkey")
        batch.drop_column("metro")
        batch.drop_column("project_id")
