"""Opening the database: one async engine, tuned per backend, and the migration guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.config import DatabaseConfig

READ_ONLY = "warta_read_only"


class DatabaseNotReady(Exception):
    """The database is missing, unreachable or not migrated to this version's schema."""


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(config: DatabaseConfig) -> AsyncEngine:
    """Create the engine for ``config.url``.

    SQLite: WAL (readers never block the writer), ``synchronous=NORMAL`` (durable at each
    checkpoint, safe with WAL), a busy timeout, foreign keys on; transactions start with
    ``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of failing mid-way.
    PostgreSQL: a bounded pool with liveness checks, so a restarted server is reconnected.
    """
    url = make_url(config.url)
    kwargs: dict[str, Any] = {"echo": config.echo}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["poolclass"] = NullPool if url.database == ":memory:" else None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        kwargs["connect_args"] = {"timeout": config.busy_timeout_ms / 1000}
        engine = create_async_engine(url, **kwargs)
        tune_sqlite(engine.sync_engine, config.busy_timeout_ms)
        return engine
    kwargs.update(pool_size=config.pool_size, max_overflow=config.pool_size, pool_pre_ping=True)
    return create_async_engine(url, **kwargs)


def tune_sqlite(sync_engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, the busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for every write."""
    from gateway.db.errors import invalidate_stale_connection

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # A connection opened while the file was read-only stays read-only: drop such ones, so
    # writes come back by themselves once the storage does.
    event.listen(sync_engine, "handle_error", invalidate_stale_connection)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that later writes fails at once (SQLITE_BUSY_SNAPSHOT) when
        # another writer got in first; IMMEDIATE waits its turn on the busy timeout instead.
        if connection.get_execution_options().get(READ_ONLY, False):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction: on SQLite it takes no write lock, so it never waits on one."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{READ_ONLY: True})
        async with conn.begin():
            yield conn


async def current_revision(engine: AsyncEngine) -> str | None:
    """The alembic revision the database is at, or None when it was never migrated."""
    async with engine.connect() as conn:
        # A read: on SQLite it must not queue for the write lock behind running gateways.
        conn = await conn.execution_options(**{READ_ONLY: True})

        def _read(sync_conn: Any) -> str | None:
            from sqlalchemy import inspect

            if not inspect(sync_conn).has_table("alembic_version"):
                return None
            row = sync_conn.execute(text("SELECT version_num FROM alembic_version")).first()
            return None if row is None else str(row[0])

        return await conn.run_sync(_read)


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Refuse to run on a database this version cannot use.

    Raises:
        DatabaseNotReady: with the command that fixes it.
    """
    from gateway.db.migrate import head_revision

    try:
        revision = await current_revision(engine)
    except OSError as exc:
        raise DatabaseNotReady(f"cannot reach the database: {exc.strerror or exc}") from None
    head = head_revision()
    if revision is None:
        raise DatabaseNotReady("the database has no Warta schema yet: run `warta db upgrade` first")
    if revision != head:
        raise DatabaseNotReady(
            f"the database schema is at revision {revision}, this Warta needs {head}: "
            "run `warta db upgrade`"
        )
