"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 08:42:18.571024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=True),
        sa.Column("machine_name", sa.String(length=200), nullable=True),
        sa.Column("workflow_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_machine", ["machine_id", "id"], unique=False)
        batch_op.create_index("ix_events_workflow", ["workflow_id", "id"], unique=False)
        batch_op.create_index("ix_events_time", ["time"], unique=False)

    op.create_table(
        "machines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("arch", sa.String(length=32), nullable=False),
        sa.Column("uefi", sa.Boolean(), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("disks", sa.JSON(), nullable=False),
        sa.Column("bmc_driver", sa.String(length=32), nullable=True),
        sa.Column("bmc_address", sa.String(length=255), nullable=True),
        sa.Column("bmc_username", sa.String(length=255), nullable=True),
        sa.Column("bmc_password_encrypted", sa.Text(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("instance_metadata", sa.JSON(), nullable=False),
        sa.Column("user_data", sa.Text(), nullable=True),
        sa.Column("applied", sa.JSON(), nullable=False),
        sa.Column("agent_token_generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
        sa.UniqueConstraint("name", name=op.f("uq_machines_name")),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_machines_state"), ["state"], unique=False)

    op.create_table(
        "templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("action_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_templates_name")),
    )
    op.create_table(
        "interfaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("netmask", sa.String(length=45), nullable=True),
        sa.Column("gateway", sa.String(length=45), nullable=True),
        sa.Column("nameservers", sa.JSON(), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column("vlan", sa.Integer(), nullable=True),
        sa.Column("lease_time", sa.Integer(), nullable=True),
        sa.Column("allow_pxe", sa.Boolean(), nullable=False),
        sa.Column("allow_workflow", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_interfaces_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interfaces")),
        sa.UniqueConstraint("ip", name=op.f("uq_interfaces_ip")),
        sa.UniqueConstraint("mac", name=op.f("uq_interfaces_mac")),
    )
    with op.batch_alter_table("interfaces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_interfaces_machine_id"), ["machine_id"], unique=False)

    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        sa.Column("template_name", sa.String(length=200), nullable=False),
        sa.Column("template_data", sa.Text(), nullable=False),
        sa.Column("hardware_map", sa.JSON(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("global_timeout", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_workflows_machine_id_machines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("name", name=op.f("uq_workflows_name")),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workflows_deadline"), ["deadline"], unique=False)
        batch_op.create_index(batch_op.f("ix_workflows_machine_id"), ["machine_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_workflows_state"), ["state"], unique=False)
        batch_op.create_index(
            "uq_workflows_one_active_per_machine",
            ["machine_id"],
            unique=True,
            sqlite_where=sa.text("state IN ('PENDING', 'PREPARING', 'RUNNING', 'POST')"),
            postgresql_where=sa.text("state IN ('PENDING', 'PREPARING', 'RUNNING', 'POST')"),
        )

    op.create_table(
        "workflow_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(length=32), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("volumes", sa.JSON(), nullable=False),
        sa.Column("pid", sa.String(length=64), nullable=True),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("retry_backoff", sa.Double(), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("budget_start", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_actions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_actions")),
    )
    with op.batch_alter_table("workflow_actions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflow_actions_deadline"), ["deadline"], unique=False
        )
        batch_op.create_index(
            "ix_workflow_actions_workflow_run", ["workflow_id", "run", "position"], unique=False
        )

    op.create_table(
        "action_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("log_tail", sa.JSON(), nullable=False),
        sa.Column("log_lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["workflow_actions.id"],
            name=op.f("fk_action_attempts_action_id_workflow_actions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_attempts")),
    )
    with op.batch_alter_table("action_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_action_attempts_action_id"), ["action_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("action_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_action_attempts_action_id"))

    op.drop_table("action_attempts")
    with op.batch_alter_table("workflow_actions", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_actions_workflow_run")
        batch_op.drop_index(batch_op.f("ix_workflow_actions_deadline"))

    op.drop_table("workflow_actions")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_workflows_one_active_per_machine",
            sqlite_where=sa.text("state IN ('PENDING', 'PREPARING', 'RUNNING', 'POST')"),
            postgresql_where=sa.text("state IN ('PENDING', 'PREPARING', 'RUNNING', 'POST')"),
        )
        batch_op.drop_index(batch_op.f("ix_workflows_state"))
        batch_op.drop_index(batch_op.f("ix_workflows_machine_id"))
        batch_op.drop_index(batch_op.f("ix_workflows_deadline"))

    op.drop_table("workflows")
    with op.batch_alter_table("interfaces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interfaces_machine_id"))

    op.drop_table("interfaces")
    op.drop_table("templates")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machines_state"))

    op.drop_table("machines")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_workflow")
        batch_op.drop_index("ix_events_time")
        batch_op.drop_index("ix_events_machine")

    op.drop_table("events")
    op.drop_table("api_tokens")
