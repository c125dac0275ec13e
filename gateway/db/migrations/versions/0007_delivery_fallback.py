"""fallback across channels: a delivery may stand in for one that failed or went unconfirmed

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    # No foreign key, like the other references in deliveries (see gateway.db.schema).
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fallback_of", Id, nullable=True))
    op.create_index(
        "ix_deliveries_fallback_of",
        "deliveries",
        ["fallback_of"],
        **_where("fallback_of IS NOT NULL"),
    )
    op.create_index(
        "ix_deliveries_failed_finished_at",
        "deliveries",
        ["finished_at"],
        **_where("state = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_failed_finished_at", table_name="deliveries")
    op.drop_index("ix_deliveries_fallback_of", table_name="deliveries")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("fallback_of")
