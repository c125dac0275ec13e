"""Storage that stops taking writes while the gateway runs: a clear 503, nothing half-written.

- SQLite, the database file made read-only: writes answer 503 and say so, reads still answer;
  once the file is writable again the data is intact and writes work.
- SQLite, the disk full (``max_page_count`` held at the database's current size, so the next
  write that needs a page fails with SQLITE_FULL): 503, no announcement left half-written, and
  writes work again once the limit is raised.
- PostgreSQL, the database switched to read-only transactions: 503 as well.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.db.engine import reading
from gateway.db.schema import announcements, audit_events, subscribers
from gateway.domain import Role
from tests.support.ci import unavailable
from tests.support.world import Answer, World

# About 30 kB: a row that needs pages of its own, more than a free list of a few can give.
LONG = ("Banjir setinggi satu meter di Jalan Merdeka. " * 120)[:5000]
BIG_ANNOUNCEMENT = {
    "title": "Banjir",
    "body": LONG,
    "channels": ["sms"],
    "translations": {
        language: {"title": f"Banjir ({language})", "body": LONG}
        for language in ("en", "jv", "su", "ban", "bug")
    },
}


def assert_unavailable(answer: Answer, *, says: str) -> None:
    assert answer.status == 503, answer.body
    error = answer.body["error"]
    assert error["code"] == "unavailable"
    assert says in error["message"]
    assert "field" in error


async def counts(world: World) -> dict[str, int]:
    async with reading(world.engine) as conn:
        return {
            table.name: int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (announcements, audit_events, subscribers)
        }


async def integrity(world: World) -> str:
    async with reading(world.engine) as conn:
        return str(await conn.scalar(sa.text("PRAGMA integrity_check")))


def sqlite_file(database_url: str) -> Path:
    return Path(make_url(database_url).database or "")


@contextmanager
def read_only(database: Path) -> Iterator[None]:
    """The database file and its write-ahead log refuse writes until the block ends.

    Root writes through mode 0444, so as root the files are made immutable instead. The shared
    memory index (``-shm``) stays writable: readers need it, and it is mapped into memory, so
    taking it away under a running connection kills the process (SIGBUS) instead of failing.
    """
    files = [p for p in (database, database.with_name(database.name + "-wal")) if p.exists()]
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True, text=True)
        if made.returncode != 0:
            unavailable(f"this filesystem cannot make a file immutable: {made.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *map(str, files)], check=True)
        return
    modes = {p: p.stat().st_mode for p in files}
    for path in files:
        path.chmod(0o444)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


async def write_announcement(world: World, **fields: Any) -> Answer:
    body = {"title": "Jalan ditutup", "body": "Jalan Merdeka ditutup.", "channels": ["sms"]}
    body.update(fields)
    return await world.call("POST", "/api/v1/announcements", role=Role.AUTHOR, json=body)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_read_only_file_refuses_writes_and_keeps_reads(
    world: World, database_url: str
) -> None:
    first = await world.announce()
    assert (await world.subscribe("0812-3456-7890")).status == 201
    listed = await world.call("GET", "/api/v1/announcements")
    before = await counts(world)

    with read_only(sqlite_file(database_url)):
        # Connections already open keep their write access (a file's mode is checked when it
        # is opened): the gateway meets the fault on its next connections.
        await world.engine.dispose()
        assert_unavailable(await write_announcement(world), says="read-only")
        assert_unavailable(await world.subscribe("0812-3456-7891"), says="read-only")
        assert (await world.call("GET", "/api/v1/announcements")).body == listed.body
        one = await world.call("GET", f"/api/v1/announcements/{first['id']}")
        assert one.status == 200
        assert one.body["title"] == first["title"]
        assert (await world.call("GET", "/api/v1/subscribers")).status == 200
        assert await counts(world) == before

    assert await counts(world) == before
    assert await integrity(world) == "ok"
    # Connections opened during the fault stay read-only (see the test after this one).
    await world.engine.dispose()
    again = await write_announcement(world, title="Jalan dibuka")
    assert again.status == 201, again.body
    assert (await world.subscribe("0812-3456-7891")).status == 201
    assert await counts(world) == {
        "announcements": before["announcements"] + 1,
        "audit_events": before["audit_events"] + 2,
        "subscribers": before["subscribers"] + 1,
    }


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_writes_work_again_without_a_restart(world: World, database_url: str) -> None:
    await world.announce()
    with read_only(sqlite_file(database_url)):
        await world.engine.dispose()
        assert_unavailable(await write_announcement(world), says="read-only")
    # The write that meets a stale connection may fail; the client's retry must not.
    await write_announcement(world, title="Jalan dibuka")
    again = await write_announcement(world, title="Jalan dibuka")
    assert again.status == 201, again.body


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_read_only_file_still_serves_reads_to_an_idle_token(
    world: World, database_url: str
) -> None:
    await world.announce()
    with read_only(sqlite_file(database_url)):
        await world.engine.dispose()
        # The approver's token was never used: reading records its first use.
        answer = await world.call("GET", "/api/v1/announcements", role=Role.APPROVER)
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_full_disk_refuses_writes_whole_and_recovers(world: World) -> None:
    await world.announce()
    limit: dict[str, int] = {}

    def hold_size(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # max_page_count belongs to the connection, so every checkout sets it.
        if "pages" in limit:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA max_page_count = {limit['pages']}")
            cursor.close()

    event.listen(world.engine.sync_engine, "checkout", hold_size)
    try:
        async with world.engine.begin() as conn:
            pages = int(await conn.scalar(sa.text("PRAGMA page_count")) or 0)
            free = int(await conn.scalar(sa.text("PRAGMA freelist_count")) or 0)
        # The big announcement needs more pages than the free list can give back.
        assert free < 4, free
        before = await counts(world)
        limit["pages"] = pages

        for _ in range(2):
            assert_unavailable(await write_announcement(world, **BIG_ANNOUNCEMENT), says="full")
        assert await counts(world) == before
        assert (await world.call("GET", "/api/v1/announcements")).status == 200

        limit["pages"] = 1_073_741_823
        again = await write_announcement(world, **BIG_ANNOUNCEMENT)
        assert again.status == 201, again.body
        stored = await world.call("GET", f"/api/v1/announcements/{again.body['id']}")
        assert stored.body["body"] == BIG_ANNOUNCEMENT["body"]
        assert {lang: t["body"] for lang, t in stored.body["translations"].items()} == {
            lang: LONG for lang in BIG_ANNOUNCEMENT["translations"]
        }
        assert await counts(world) == {
            **before,
            "announcements": before["announcements"] + 1,
            "audit_events": before["audit_events"] + 1,
        }
        assert await integrity(world) == "ok"
    finally:
        event.remove(world.engine.sync_engine, "checkout", hold_size)


async def _set_read_only(database_url: str, on: bool) -> None:
    name = make_url(database_url).database
    setting = "SET" if on else "RESET"
    value = " = on" if on else ""
    # The server's own URL (the fixture's), not the test database: ALTER DATABASE runs outside.
    admin = create_async_engine(os.environ["WARTA_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(
                sa.text(f'ALTER DATABASE "{name}" {setting} default_transaction_read_only{value}')
            )
    finally:
        await admin.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_read_only_postgres_refuses_writes_and_keeps_reads(
    world: World, database_url: str
) -> None:
    first = await world.announce()
    assert (await world.subscribe("0812-3456-7890")).status == 201
    listed = await world.call("GET", "/api/v1/announcements")
    before = await counts(world)

    # The database fixture made a throwaway database for this test; the setting is its own.
    await _set_read_only(database_url, on=True)
    try:
        await world.engine.dispose()
        assert_unavailable(await write_announcement(world), says="read-only")
        assert_unavailable(await world.subscribe("0812-3456-7891"), says="read-only")
        assert (await world.call("GET", "/api/v1/announcements")).body == listed.body
        one = await world.call("GET", f"/api/v1/announcements/{first['id']}")
        assert one.status == 200
        assert await counts(world) == before
    finally:
        await _set_read_only(database_url, on=False)
    await world.engine.dispose()

    again = await write_announcement(world, title="Jalan dibuka")
    assert again.status == 201, again.body
    assert await counts(world) == {
        "announcements": before["announcements"] + 1,
        "audit_events": before["audit_events"] + 1,
        "subscribers": before["subscribers"],
    }
