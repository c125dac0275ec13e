"""replies through the outbox, and post URLs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("announcement_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True)
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="announcement", nullable=False))
        batch_op.add_column(sa.Column("body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("recipient_ciphertext", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("reply_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("url", sa.String(length=300), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_deliveries_channel_reply_key"), ["channel", "reply_key"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_deliveries_channel_reply_key"), type_="unique")
        batch_op.drop_column("url")
        batch_op.drop_column("reply_key")
        batch_op.drop_column("recipient_ciphertext")
        batch_op.drop_column("body")
        batch_op.drop_column("kind")
        batch_op.alter_column("announcement_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)
