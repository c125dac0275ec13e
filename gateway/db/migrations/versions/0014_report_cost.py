"""delivery reports carry what the provider charged (a voice call's amount)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost", sa.Numeric(14, 4), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_reports", schema=None) as batch_op:
        batch_op.drop_column("cost")
