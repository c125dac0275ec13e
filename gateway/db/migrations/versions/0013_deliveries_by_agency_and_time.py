"""deliveries by agency and time: statistics over a period read only that period's rows

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_agency_id_created_at", "deliveries", ["agency_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_agency_id_created_at", table_name="deliveries")
