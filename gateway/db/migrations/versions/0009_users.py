"""dashboard users: e-mail and argon2 password per agency, each acting through its own token row

The table is declared in ``gateway/db/schema.py``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", Id, nullable=False),
        sa.Column("agency_id", Id, nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("token_id", Id, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("last_login_at", When, nullable=True),
        sa.Column("disabled_at", When, nullable=True),
        sa.Column("sessions_valid_after", When, nullable=True),
        sa.ForeignKeyConstraint(
            ["agency_id"], ["agencies.id"], name=op.f("fk_users_agency_id_agencies")
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_tokens.id"], name=op.f("fk_users_token_id_api_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("agency_id", "email", name=op.f("uq_users_agency_id_email")),
    )


def downgrade() -> None:
    op.drop_table("users")
