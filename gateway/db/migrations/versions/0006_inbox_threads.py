"""operator inbox: threads per citizen, operator replies, messages filed in threads

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbox_threads",
        sa.Column("id", Id, nullable=False),
        sa.Column("agency_id", Id, nullable=False),
        sa.Column("citizen_key", sa.String(length=80), nullable=False),
        sa.Column("subscriber_id", Id, nullable=True),
        sa.Column("phone_masked", sa.String(length=32), nullable=True),
        sa.Column("reply_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column("assigned_token_id", Id, nullable=True),
        sa.Column("announcement_id", Id, nullable=True),
        sa.Column("opened_at", When, nullable=False),
        sa.Column("last_message_at", When, nullable=False),
        sa.Column("first_response_at", When, nullable=True),
        sa.Column("response_seconds", sa.Integer(), nullable=True),
        sa.Column("closed_at", When, nullable=True),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_inbox_threads_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_inbox_threads_subscriber_id_subscribers"),
        ),
        sa.ForeignKeyConstraint(
            ["assigned_token_id"],
            ["api_tokens.id"],
            name=op.f("fk_inbox_threads_assigned_token_id_api_tokens"),
        ),
        sa.ForeignKeyConstraint(
            ["announcement_id"],
            ["announcements.id"],
            name=op.f("fk_inbox_threads_announcement_id_announcements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_threads")),
    )
    op.create_index(
        "uq_inbox_threads_agency_id_citizen_key_open",
        "inbox_threads",
        ["agency_id", "citizen_key"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(
        "ix_inbox_threads_agency_id_status_id", "inbox_threads", ["agency_id", "status", "id"]
    )
    op.create_index(
        "ix_inbox_threads_agency_id_first_response_at",
        "inbox_threads",
        ["agency_id", "first_response_at"],
    )
    op.create_index("ix_inbox_threads_subscriber_id", "inbox_threads", ["subscriber_id"])
    op.create_table(
        "inbox_replies",
        sa.Column("id", Id, nullable=False),
        sa.Column("thread_id", Id, nullable=False),
        sa.Column("delivery_id", Id, nullable=False),
        sa.Column("token_id", Id, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["inbox_threads.id"], name=op.f("fk_inbox_replies_thread_id_inbox_threads")
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], name=op.f("fk_inbox_replies_delivery_id_deliveries")
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_tokens.id"], name=op.f("fk_inbox_replies_token_id_api_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_replies")),
    )
    op.create_index("ix_inbox_replies_thread_id", "inbox_replies", ["thread_id"])
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("thread_id", Id, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_inbound_messages_thread_id_inbox_threads"),
            "inbox_threads",
            ["thread_id"],
            ["id"],
        )
        batch_op.create_index("ix_inbound_messages_thread_id", ["thread_id"])


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_messages_thread_id")
        batch_op.drop_constraint(
            batch_op.f("fk_inbound_messages_thread_id_inbox_threads"), type_="foreignkey"
        )
        batch_op.drop_column("thread_id")
    op.drop_index("ix_inbox_replies_thread_id", table_name="inbox_replies")
    op.drop_table("inbox_replies")
    op.drop_index("ix_inbox_threads_subscriber_id", table_name="inbox_threads")
    op.drop_index("ix_inbox_threads_agency_id_first_response_at", table_name="inbox_threads")
    op.drop_index("ix_inbox_threads_agency_id_status_id", table_name="inbox_threads")
    op.drop_index("uq_inbox_threads_agency_id_citizen_key_open", table_name="inbox_threads")
    op.drop_table("inbox_threads")
