"""What every benchmark shares: the machine, fresh databases, quick seeding, child processes.

Seeding is never measured. Subscribers get real AES-GCM ciphertexts of distinct numbers
(``+<prefix><8 digits>``), so the dispatcher decrypts exactly what it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.db.migrate import upgrade_async
from gateway.db.schema import agencies, announcements, deliveries
from gateway.db.types import UtcDateTime
from gateway.personal import PhoneVault

PG_URL_FILE = Path("/tmp/pgurl")  # noqa: S108 - where the bench is told to find PostgreSQL
CHUNK = 100_000
TEXT_FACTS = {"what": "Pemadaman listrik", "where": "Kecamatan Gambir"}


def keys() -> dict[str, str]:
    """Fresh secrets for one bench run (never printed)."""
    return {
        "phone_keys": PhoneVault.generate_key(),
        "blind_index_key": PhoneVault.generate_key(),
        "africastalking_api_key": "bench-at-" + uuid.uuid4().hex,
        "callback_token": "bench-cb-" + uuid.uuid4().hex,
    }


def vault_of(secrets: dict[str, str]) -> PhoneVault:
    return PhoneVault.from_secrets(secrets["phone_keys"], secrets["blind_index_key"])


def phone(prefix: str, i: int) -> str:
    return f"+{prefix}{i:08d}"


# -- the machine ----------------------------------------------------------------------------


def machine_lines(command: str) -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    packages = ["aiohttp", "SQLAlchemy", "asyncpg", "aiosqlite", "africastalking", "requests"]
    versions = ", ".join(f"{p} {importlib_metadata.version(p)}" for p in packages)
    return [
        f"command: {command}",
        f"machine: nproc={os.cpu_count()}, CPU {cpu}, RAM {ram_gib:.1f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {versions}",
    ]


def say_machine(command: str) -> None:
    """The first lines of every bench's output: the command and the machine it ran on."""
    for line in machine_lines(command):
        say(line)


async def say_postgres(url: str | None = None) -> None:
    """The version of the PostgreSQL server a bench uses (``postgres_base_url`` by default)."""
    version = await postgres_version(url or postgres_base_url())
    say(f"PostgreSQL {version} (same machine, loopback)")


@contextlib.contextmanager
def work_folder(given: Path | None, name: str) -> Iterator[Path]:
    """Where a bench keeps its SQLite files and logs: ``given`` (``--workdir``), kept
    afterwards, else a new temporary folder removed when the bench ends."""
    folder = given or Path(tempfile.mkdtemp(prefix=f"warta-bench-{name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if given is None:
            shutil.rmtree(folder, ignore_errors=True)


async def postgres_version(url: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return str(await conn.scalar(sa.text("SHOW server_version")))
    finally:
        await engine.dispose()


def vm_hwm_mib() -> float:
    """Peak resident set of this process (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- databases ------------------------------------------------------------------------------


def postgres_base_url() -> str:
    from_env = os.environ.get("WARTA_TEST_POSTGRES_URL") or os.environ.get(
        "WARTA_BENCH_POSTGRES_URL"
    )
    if from_env:
        return from_env
    if not PG_URL_FILE.exists():
        raise SystemExit(
            f"PostgreSQL: set WARTA_TEST_POSTGRES_URL (e.g. from .ci/pg-up) or write {PG_URL_FILE}"
        )
    return PG_URL_FILE.read_text().strip()


async def _pg_admin(statement: str) -> None:
    engine = create_async_engine(postgres_base_url(), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def fresh_database(backend: str, name: str, workdir: Path) -> str:
    """A new, migrated, empty database; returns its SQLAlchemy URL."""
    if backend == "sqlite":
        path = workdir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        db = f"bench_{name}"
        await _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await _pg_admin(f'CREATE DATABASE "{db}"')
        url = make_url(postgres_base_url()).set(database=db).render_as_string(hide_password=False)
    await upgrade_async(url)
    return url


async def drop_database(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
    else:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def engine_for(url: str) -> AsyncEngine:
    from gateway.config import DatabaseConfig
    from gateway.db.engine import create_engine

    return create_engine(DatabaseConfig(url=url))


async def seed_agency(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        agency_id = await conn.scalar(
            sa.insert(agencies)
            .values(slug=f"bench-{uuid.uuid4().hex[:6]}", name="BPBD Bench", created_at=now())
            .returning(agencies.c.id)
        )
    assert agency_id is not None
    return int(agency_id)


async def add_announcement(engine: AsyncEngine, agency_id: int, *, status: str) -> dict[str, Any]:
    """One SMS announcement to the whole agency, stored with ``status``; returns the row."""
    stamp = now()
    values: dict[str, Any] = {
        "agency_id": agency_id,
        "language": "id",
        "title": "Pemadaman listrik",
        "body": "Listrik padam pukul 10.00-14.00 untuk perbaikan jaringan.",
        "facts": TEXT_FACTS,
        "translations": {},
        "areas": [],
        "topics": [],
        "channels": ["sms"],
        "urgency": "normal",
        "keep_gsm7": False,
        "verification_code": uuid.uuid4().hex[:10].upper(),
        "status": status,
        "created_at": stamp,
        "updated_at": stamp,
    }
    async with engine.begin() as conn:
        row = (
            (await conn.execute(sa.insert(announcements).values(values).returning(announcements)))
            .mappings()
            .one()
        )
    return dict(row)


def now() -> datetime:
    return datetime.now(UTC)


def _ciphertexts(vault: PhoneVault, prefix: str, n: int) -> Iterator[list[bytes]]:
    for start in range(1, n + 1, CHUNK):
        yield [vault.encrypt(phone(prefix, i)) for i in range(start, min(start + CHUNK, n + 1))]


async def seed_subscribers(
    url: str, agency_id: int, n: int, vault: PhoneVault, *, prefix: str
) -> None:
    """``n`` SMS subscribers of one agency (subscribers + subscriber_channels), in bulk."""
    stamp = now()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = sqlite3.connect(str(parsed.database))
        try:
            db.execute("PRAGMA journal_mode=WAL")
            first = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM subscribers").fetchone()[0]
            text_stamp = stamp.strftime("%Y-%m-%d %H:%M:%S.%f")
            for chunk in _ciphertexts(vault, prefix, n):
                ids = range(first, first + len(chunk))
                first += len(chunk)
                db.executemany(
                    "INSERT INTO subscribers (id, agency_id, phone_ciphertext, country, language,"
                    " area_code, topics, created_at)"
                    " VALUES (?, ?, ?, 'KE', 'id', '47.01', '[]', ?)",
                    ((i, agency_id, c, text_stamp) for i, c in zip(ids, chunk, strict=True)),
                )
                db.executemany(
                    "INSERT INTO subscriber_channels (subscriber_id, channel, preference,"
                    " opted_in_at) VALUES (?, 'sms', 0, ?)",
                    ((i, text_stamp) for i in ids),
                )
                db.commit()
            db.execute("ANALYZE")
            db.commit()
        finally:
            db.close()
        return
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        first = int(await conn.fetchval("SELECT COALESCE(MAX(id), 0) + 1 FROM subscribers"))
        for chunk in _ciphertexts(vault, prefix, n):
            ids = range(first, first + len(chunk))
            first += len(chunk)
            await conn.copy_records_to_table(
                "subscribers",
                columns=["id", "agency_id", "phone_ciphertext", "country", "language",
                         "area_code", "topics", "created_at"],
                records=[(i, agency_id, c, "KE", "id", "47.01", "[]", stamp)
                         for i, c in zip(ids, chunk, strict=True)],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "subscriber_channels",
                columns=["subscriber_id", "channel", "preference", "opted_in_at"],
                records=[(i, "sms", 0, stamp) for i in ids],
            )
        await conn.execute("SELECT setval('subscribers_id_seq', (SELECT MAX(id) FROM subscribers))")
        await conn.execute("VACUUM ANALYZE subscribers")
        await conn.execute("VACUUM ANALYZE subscriber_channels")
    finally:
        await conn.close()


# -- child processes ------------------------------------------------------------------------

_SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Child:
    """A spawned process that talks over a pipe: it sends a first message when ready."""

    process: Any
    pipe: Connection
    ready: Any

    def ask(self, message: str, timeout: float = 600.0) -> Any:
        self.pipe.send(message)
        if not self.pipe.poll(timeout):
            raise TimeoutError(f"child did not answer {message!r} within {timeout}s")
        return self.pipe.recv()

    def finish(self, timeout: float = 600.0) -> Any:
        """Wait for the child's last message (its result), then for it to exit."""
        if not self.pipe.poll(timeout):
            self.process.kill()
            raise TimeoutError(f"child gave no result within {timeout}s")
        result = self.pipe.recv()
        self.process.join(30)
        return result

    def stop(self) -> Any:
        result = self.ask("stop")
        self.process.join(30)
        return result


def spawn(target: Callable[..., None], *args: Any, ready_timeout: float = 60.0) -> Child:
    """Start ``target(pipe, *args)`` in a fresh interpreter; wait for its 'ready' message."""
    parent, child = _SPAWN.Pipe()
    process = _SPAWN.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    deadline = ready_timeout
    while not parent.poll(0.2):
        deadline -= 0.2
        if not process.is_alive() or deadline <= 0:
            process.kill()
            raise RuntimeError(f"{target.__name__} did not start (exit code {process.exitcode})")
    return Child(process, parent, parent.recv())


async def wait_for_command(pipe: Connection) -> str:
    """In a child's event loop: the parent's next command."""
    return str(await asyncio.get_running_loop().run_in_executor(None, pipe.recv))


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)
    sys.stdout.flush()


# -- fan-out floors, delivery-report fixtures and load ----------------------------------------


def copy_table(name: str, *, indexed: bool) -> sa.Table:
    """``deliveries``' columns under another name; ``indexed`` adds its constraints too."""
    metadata = sa.MetaData()
    columns = [sa.Column(c.name, c.type, primary_key=c.primary_key) for c in deliveries.columns]
    extra: list[Any] = []
    if indexed:
        for fk in deliveries.foreign_key_constraints:
            extra.append(
                sa.ForeignKeyConstraint(
                    [c.name for c in fk.columns], [e.column for e in fk.elements]
                )
            )
        for uc in deliveries.constraints:
            if isinstance(uc, sa.UniqueConstraint):
                extra.append(sa.UniqueConstraint(*[c.name for c in uc.columns]))
    table = sa.Table(name, metadata, *columns, *extra)
    if indexed:
        for ix in deliveries.indexes:
            where = {
                f"{d}_where": ix.dialect_options[d]["where"]
                for d in ("sqlite", "postgresql")
                if ix.dialect_options[d]["where"] is not None
            }
            sa.Index(
                f"{name}_{ix.name}"[:63],
                *[table.c[c.name] for c in ix.columns],
                unique=ix.unique,
                **where,
            )
    return table


def plain_select(table: sa.Table) -> sa.TextClause:
    """The same rows fan_out selects, with the same values, as literal SQL (no ON CONFLICT)."""
    return sa.text(
        f"INSERT INTO {table.name} (announcement_id, agency_id, subscriber_id, channel, language,"
        " area_code, state, priority, attempts, next_attempt_at, created_at, segments, cost)"
        " SELECT :announcement, s.agency_id, s.id, 'sms', s.language, s.area_code, 'queued',"
        " 1, 0, :now, :now, 1, 12 FROM subscribers AS s JOIN subscriber_channels AS c"
        " ON c.subscriber_id = s.id WHERE c.channel = 'sms' AND c.opted_out_at IS NULL"
        " AND s.agency_id = :agency AND s.erased_at IS NULL"
    ).bindparams(sa.bindparam("now", type_=UtcDateTime()))


def integers(sqlite: bool) -> str:
    """``SELECT i FROM …``: 1 to ``:count`` in one statement (a recursive CTE on SQLite,
    generate_series on PostgreSQL)."""
    if sqlite:
        return (
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :count) "
            "SELECT i FROM g"
        )
    return "SELECT i FROM generate_series(1, :count) AS i"


async def seed_sent(url: str, count: int) -> None:
    """``count`` deliveries in state 'sent' whose ids the simulated reports name, in one
    statement (recursive CTE on SQLite, generate_series on PostgreSQL)."""
    engine = engine_for(url)
    try:
        agency_id = await seed_agency(engine)
        ann = await add_announcement(engine, agency_id, status="sending")
        sqlite = engine.dialect.name == "sqlite"
        pmid = "printf('ATXid_%032x', i)" if sqlite else "'ATXid_' || lpad(to_hex(i), 32, '0')"
        series = f"SELECT i, {pmid} AS pmid FROM ({integers(sqlite)}) AS n"
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO deliveries (announcement_id, agency_id, account, channel,"
                    " language, state, priority, attempts, next_attempt_at, created_at,"
                    f" provider_message_id) SELECT {ann['id']}, {agency_id}, 'a' || i, 'sms',"
                    f" 'id', 'sent', 1, 1, :now, :now, pmid FROM ({series}) AS s"
                ).bindparams(sa.bindparam("now", type_=UtcDateTime())),
                {"count": count, "now": now()},
            )
    finally:
        await engine.dispose()


WRK_SCRIPT = """
local n = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) step = tonumber(args[1]) end
function request()
  n = n + 1
  local id = string.format("ATXid_%032x", (n - 1) * step + tid + 1)
  local body = "id=" .. id .. "&status=Success&phoneNumber=%2B254700000001&networkCode=63902"
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""


async def run_wrk(url: str, seconds: int, connections: int, workdir: Any) -> dict[str, Any]:
    script = workdir / "reports.lua"
    script.write_text(WRK_SCRIPT)
    threads = 1
    proc = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
        str(script), url, "--", str(threads),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(proc.communicate(), seconds + 60))[0].decode()
    fields: dict[str, Any] = {"raw": output}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            fields["rate"] = float(parts[1])
        elif "requests in" in line:
            fields["requests"] = int(parts[0])
        elif line.startswith("Non-2xx"):
            fields["errors"] = int(parts[-1])
        elif parts[:1] == ["50%"]:
            fields["p50"] = parts[1]
        elif parts[:1] == ["99%"]:
            fields["p99"] = parts[1]
    return fields


async def wait_sending(engine: Any, announcement_id: int, timeout: float) -> float:
    """perf_counter time at which the announcement is first seen ``sending`` (or later)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        async with engine.connect() as conn:
            status = await conn.scalar(
                sa.select(announcements.c.status).where(announcements.c.id == announcement_id)
            )
        if status not in ("approved", None):
            return time.perf_counter()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"announcement {announcement_id} not started in {timeout:.0f} s")
