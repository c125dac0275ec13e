"""What each database plans for the statements a piece of the gateway runs.

``captured(engine, …)`` collects every SELECT/UPDATE/INSERT/DELETE run inside it with its
parameters, on each engine given (an async engine, or the sync one of a ``Writer``);
``plans(engine, statements)`` asks the database to EXPLAIN each (SQLite's ``EXPLAIN QUERY
PLAN``, PostgreSQL's ``EXPLAIN``) and returns the plan's lines. SQLite keeps no statistics
here (Warta never runs ANALYZE on it), so its plans do not depend on how many rows a test made;
PostgreSQL's do, so tests that read them there fill and analyse the tables first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

Statement = tuple[str, Any]


@contextmanager
def captured(*engines: AsyncEngine | sa.Engine | None) -> Iterator[list[Statement]]:
    statements: list[Statement] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH")):
            statements.append((statement, parameters))

    watched = [e.sync_engine if isinstance(e, AsyncEngine) else e for e in engines if e]
    for engine in watched:
        sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        for engine in watched:
            sa.event.remove(engine, "before_cursor_execute", keep)


async def plans(engine: AsyncEngine, statements: list[Statement]) -> list[tuple[str, list[str]]]:
    sqlite = engine.dialect.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    out: list[tuple[str, list[str]]] = []
    async with engine.connect() as conn:
        for statement, parameters in statements:
            result = await conn.exec_driver_sql(prefix + statement, parameters)
            out.append((statement, [str(row[-1] if sqlite else row[0]).strip() for row in result]))
    return out
