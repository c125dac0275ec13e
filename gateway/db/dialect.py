"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def insert_ignoring_conflicts(
    conn: Connection | AsyncConnection | str,
    table: Table,
    conflict_columns: Sequence[str] | None = None,
) -> Any:
    """``INSERT … ON CONFLICT (cols) DO NOTHING`` for the connection's backend (or the
    dialect so named)."""
    name = conn if isinstance(conn, str) else conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
