"""CAP alerts: which CAP message became, changed or cancelled which announcement

The table is declared in ``gateway/cap/tables.py`` on the gateway's metadata.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cap_alerts",
        sa.Column("id", Id, nullable=False),
        sa.Column("agency_id", Id, nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("identifier", sa.String(length=255), nullable=False),
        sa.Column("sent", When, nullable=False),
        sa.Column("sent_text", sa.String(length=40), nullable=False),
        sa.Column("msg_type", sa.String(length=16), nullable=False),
        sa.Column("announcement_id", Id, nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_by", Id, nullable=True),
        sa.Column("received_at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_cap_alerts_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(
            ["announcement_id"],
            ["announcements.id"],
            name=op.f("fk_cap_alerts_announcement_id_announcements"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["api_tokens.id"], name=op.f("fk_cap_alerts_created_by_api_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cap_alerts")),
        sa.UniqueConstraint(
            "agency_id",
            "sender",
            "identifier",
            "sent",
            name=op.f("uq_cap_alerts_agency_id_sender_identifier_sent"),
        ),
    )
    op.create_index("ix_cap_alerts_announcement_id", "cap_alerts", ["announcement_id"])


def downgrade() -> None:
    op.drop_index("ix_cap_alerts_announcement_id", table_name="cap_alerts")
    op.drop_table("cap_alerts")
