"""lighter outbox: no per-row foreign key triggers, partial indexes for rare columns

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None



def _where(condition: str) -> dict[str, Any]:
    clause = sa.text(condition)
    return {"sqlite_where": clause, "postgresql_where": clause}


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("fk_deliveries_announcement_id_announcements", type_="foreignkey")
        batch_op.drop_constraint("fk_deliveries_agency_id_agencies", type_="foreignkey")
        batch_op.drop_constraint("fk_deliveries_subscriber_id_subscribers", type_="foreignkey")
        batch_op.drop_constraint("uq_deliveries_announcement_id_channel_account", type_="unique")
        batch_op.drop_constraint("uq_deliveries_channel_reply_key", type_="unique")
        batch_op.drop_index("ix_deliveries_channel_provider_message_id")
        batch_op.drop_index("ix_deliveries_subscriber_id_state")
    op.create_index(
        "uq_deliveries_announcement_id_channel_account", "deliveries",
        ["announcement_id", "channel", "account"], unique=True, **_where("account IS NOT NULL"),
    )
    op.create_index(
        "uq_deliveries_channel_reply_key", "deliveries", ["channel", "reply_key"],
        unique=True, **_where("reply_key IS NOT NULL"),
    )
    op.create_index(
        "ix_deliveries_channel_provider_message_id", "deliveries",
        ["channel", "provider_message_id"], **_where("provider_message_id IS NOT NULL"),
    )
    op.create_index(
        "ix_deliveries_subscriber_id_queued", "deliveries", ["subscriber_id"],
        **_where("state = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_subscriber_id_queued", table_name="deliveries")
    op.drop_index("ix_deliveries_channel_provider_message_id", table_name="deliveries")
    op.drop_index("uq_deliveries_channel_reply_key", table_name="deliveries")
    op.drop_index("uq_deliveries_announcement_id_channel_account", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_subscriber_id_state", ["subscriber_id", "state"])
        batch_op.create_index(
            "ix_deliveries_channel_provider_message_id", ["channel", "provider_message_id"]
        )
        batch_op.create_unique_constraint("uq_deliveries_channel_reply_key", ["channel", "reply_key"])
        batch_op.create_unique_constraint(
            "uq_deliveries_announcement_id_channel_account", ["announcement_id", "channel", "account"]
        )
        batch_op.create_foreign_key(
            "fk_deliveries_subscriber_id_subscribers", "subscribers", ["subscriber_id"], ["id"]
        )
        batch_op.create_foreign_key(
            "fk_deliveries_agency_id_agencies", "agencies", ["agency_id"], ["id"]
        )
        batch_op.create_foreign_key(
            "fk_deliveries_announcement_id_announcements", "announcements", ["announcement_id"], ["id"]
        )
