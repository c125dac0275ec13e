"""Rewriting a column table-wide in batches while the gateway runs (key rotations).

``walk_and_update`` pages through ``query`` in ``key`` order (keyset paging: ``key > last``,
never OFFSET), ``batch`` rows a page, each page read in its own short transaction; ``plan``
turns a page into UPDATE parameters (the cryptography happens in Python), and one UPDATE
executed with the whole page's parameters writes them. The UPDATE is expected to be
conditional on the value read, so a row changed meanwhile is left to its writer and counted
as skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(slots=True)
class Walked:
    done: int = 0
    skipped: int = 0
    statements: int = 0


async def walk_and_update(
    engine: AsyncEngine,
    *,
    query: sa.Select[*tuple[Any, ...]],
    key: sa.ColumnElement[int],
    update: sa.Update,
    plan: Callable[[Sequence[Any]], list[dict[str, Any]]],
    batch: int,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Walked:
    """Walk ``query`` (whose first column is ``key``) and apply ``plan``'s parameters."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    walked = Walked()
    after: Any = None
    while True:
        page = query.order_by(key).limit(batch)
        if after is not None:
            page = page.where(key > after)
        async with engine.connect() as conn:
            rows = (await conn.execute(page)).all()
        walked.statements += 1
        if not rows:
            return walked
        after = rows[-1][0]
        params = plan(rows)
        if params and not dry_run:
            async with engine.begin() as conn:
                result = await conn.execute(update, params)
            walked.statements += 1
            # SQLite counts an executemany exactly; asyncpg does not, so count it as done.
            changed = result.rowcount if result.rowcount >= 0 else len(params)
            walked.skipped += len(params) - changed
            walked.done += changed
        else:
            walked.done += len(params)
        if progress is not None:
            progress(walked.done)
