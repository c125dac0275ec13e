"""unconfirmed sends on the data channels: the fallback sweep reads only those, not every delivery

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# Spelled as gateway.db.schema spells it: the sweep's WHERE must imply this one, term by term.
_WHERE = "state = 'sent' AND channel IN ('telegram', 'whatsapp')"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_unconfirmed",
        "deliveries",
        ["sent_at"],
        sqlite_where=text(_WHERE),
        postgresql_where=text(_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_unconfirmed", table_name="deliveries")
