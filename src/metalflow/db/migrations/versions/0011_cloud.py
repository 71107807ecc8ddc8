"""the metal cloud: metros, plans, operating systems, hardware reservations, SSH keys, devices,
BGP configs and sessions; machines.plan_id

A machine's plan is stored, not computed per request: a device create takes a ready machine of a
plan in a metro with one indexed, row-locked query (`ix_machines_plan_id_metro_state`).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "metros",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("bgp_peers", sa.JSON(), nullable=False),
        *_times(),
        sa.UniqueConstraint("code", name=op.f("uq_metros_code")),
    )
    op.create_table(
        "plans",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan_class", sa.String(64), nullable=False),
        sa.Column("line", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("specs", sa.JSON(), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("wipe", sa.String(16), nullable=False),
        *_times(),
        sa.UniqueConstraint("slug", name=op.f("uq_plans_slug")),
    )
    op.create_table(
        "operating_systems",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("distro", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("provisionable_on", sa.JSON(), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("image_checksum", sa.String(200), nullable=True),
        sa.Column("template", sa.String(200), nullable=True),
        sa.Column("cloud_init", sa.Boolean(), nullable=False),
        *_times(),
        sa.UniqueConstraint("slug", name=op.f("uq_operating_systems_slug")),
    )
    op.create_table(
        "hardware_reservations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "machine_id",
            sa.String(32),
            sa.ForeignKey("machines.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "project_id",
            sa.String(32),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("machine_id", name=op.f("uq_hardware_reservations_machine_id")),
    )
    op.create_index(
        op.f("ix_hardware_reservations_project_id"), "hardware_reservations", ["project_id"]
    )
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column(
            "user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column(
            "project_id",
            sa.String(32),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=True,
        ),
        *_times(),
        sa.CheckConstraint("(user_id IS NULL) <> (project_id IS NULL)", name="one_owner"),
    )
    op.create_index(op.f("ix_ssh_keys_user_id"), "ssh_keys", ["user_id"])
    op.create_index(op.f("ix_ssh_keys_project_id"), "ssh_keys", ["project_id"])
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("short_id", sa.String(8), nullable=False),
        sa.Column(
            "project_id",
            sa.String(32),
            sa.ForeignKey("projects.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column(
            "machine_id",
            sa.String(32),
            sa.ForeignKey("machines.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "plan_id", sa.String(36), sa.ForeignKey("plans.id", ondelete="RESTRICT"), nullable=False
        ),
        sa.Column("metro", sa.String(64), nullable=False),
        sa.Column(
            "operating_system_id",
            sa.String(36),
            sa.ForeignKey("operating_systems.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("workflow_id", sa.String(32), nullable=True),
        sa.Column("userdata", sa.Text(), nullable=False),
        sa.Column("customdata", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("ssh_key_ids", sa.JSON(), nullable=False),
        sa.Column("always_pxe", sa.Boolean(), nullable=False),
        sa.Column("ipxe_script_url", sa.Text(), nullable=True),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("hardware_reservation_id", sa.String(36), nullable=True),
        *_times(),
        sa.UniqueConstraint("short_id", name=op.f("uq_devices_short_id")),
        sa.UniqueConstraint("machine_id", name=op.f("uq_devices_machine_id")),
    )
    op.create_index("ix_devices_project_id_state", "devices", ["project_id", "state"])
    op.create_table(
        "bgp_configs",
        sa.Column(
            "project_id",
            sa.String(32),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("deployment_type", sa.String(16), nullable=False),
        sa.Column("asn", sa.Integer(), nullable=False),
        sa.Column("md5_encrypted", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "bgp_sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "device_id",
            sa.String(36),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("address_family", sa.String(8), nullable=False),
        sa.Column("default_route", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("device_id", "address_family", name=op.f("uq_bgp_sessions_device_id")),
    )
    with op.batch_alter_table("machines") as batch:
        batch.add_column(sa.Column("plan_id", sa.String(36), nullable=True))
        batch.create_foreign_key(
            op.f("fk_machines_plan_id_plans"), "plans", ["plan_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_machines_plan_id_metro_state", ["plan_id", "metro", "state"])


def downgrade() -> None:
    with op.batch_alter_table("machines") as batch:
        batch.drop_index("ix_machines_plan_id_metro_state")
        batch.drop_constraint(op.f("fk_machines_plan_id_plans"), type_="foreignkey")
        batch.drop_column("plan_id")
    for table in (
        "bgp_sessions",
        "bgp_configs",
        "devices",
        "ssh_keys",
        "hardware_reservations",
        "operating_systems",
        "plans",
        "metros",
    ):
        op.drop_table(table)
