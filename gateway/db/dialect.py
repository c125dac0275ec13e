"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

Dialect = Literal["sqlite", "postgresql"]


def dialect_name(conn: Connection | AsyncConnection) -> Dialect:
    """The connection's backend, as the keys of per-dialect statements name it."""
    return "sqlite" if conn.dialect.name == "sqlite" else "postgresql"


def id_in(column: sa.ColumnElement[int], name: str) -> dict[Dialect, sa.ColumnElement[bool]]:
    """``column IN ids`` per dialect, the ids bound as one value (``bound_ids``): an array on
    PostgreSQL, one JSON array unpacked by ``json_each`` on SQLite. Thousands of ids would
    otherwise be rendered and bound one by one."""
    unpacked: sa.Select[Any] = sa.select(sa.literal_column("value")).select_from(
        sa.func.json_each(sa.bindparam(f"{name}_json", type_=sa.String))
    )
    return {
        "sqlite": column.in_(unpacked),
        "postgresql": column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(sa.BigInteger))),
    }


def bound_ids(dialect: Dialect, name: str, ids: Sequence[int]) -> dict[str, Any]:
    """The values of ``id_in(…, name)`` for ``ids``."""
    return {f"{name}_json": json.dumps(list(ids))} if dialect == "sqlite" else {name: list(ids)}


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
