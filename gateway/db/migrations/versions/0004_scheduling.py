"""scheduling: recurring announcements and per-agency quiet hours

The tables are declared in ``scheduler/tables.py`` on the gateway's metadata.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recurrences",
        sa.Column("id", Id, nullable=False),
        sa.Column("template_id", Id, nullable=False),
        sa.Column("agency_id", Id, nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_count", sa.Integer(), nullable=True),
        sa.Column("valid_for_s", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued", sa.Integer(), server_default="0", nullable=False),
        sa.Column("skipped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_recurrences_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["announcements.id"],
            name=op.f("fk_recurrences_template_id_announcements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recurrences")),
        sa.UniqueConstraint("template_id", name=op.f("uq_recurrences_template_id")),
    )
    op.create_index(
        "ix_recurrences_status_next_run_at", "recurrences", ["status", "next_run_at"]
    )
    op.create_table(
        "recurrence_instances",
        sa.Column("announcement_id", Id, nullable=False),
        sa.Column("recurrence_id", Id, nullable=False),
        sa.Column("occurrence_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["announcement_id"], ["announcements.id"],
            name=op.f("fk_recurrence_instances_announcement_id_announcements"),
        ),
        sa.ForeignKeyConstraint(
            ["recurrence_id"], ["recurrences.id"],
            name=op.f("fk_recurrence_instances_recurrence_id_recurrences"),
        ),
        sa.PrimaryKeyConstraint("announcement_id", name=op.f("pk_recurrence_instances")),
        sa.UniqueConstraint(
            "recurrence_id", "occurrence_at",
            name=op.f("uq_recurrence_instances_recurrence_id_occurrence_at"),
        ),
    )
    op.create_table(
        "agency_quiet_hours",
        sa.Column("agency_id", Id, nullable=False),
        sa.Column("starts_minute", sa.Integer(), nullable=False),
        sa.Column("ends_minute", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_agency_quiet_hours_agency_id_agencies")
        ),
        sa.PrimaryKeyConstraint("agency_id", name=op.f("pk_agency_quiet_hours")),
    )


def downgrade() -> None:
    op.drop_table("agency_quiet_hours")
    op.drop_table("recurrence_instances")
    op.drop_index("ix_recurrences_status_next_run_at", table_name="recurrences")
    op.drop_table("recurrences")
