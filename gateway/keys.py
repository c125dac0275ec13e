"""Rotating the phone-number encryption key while the gateway runs (``warta keys rotate``).

An operator puts a new key first in ``WARTA_SECRETS__PHONE_KEYS`` (the old ones stay after
it, so everything stays readable), restarts the gateways, then runs ``warta keys rotate``.
Rotation walks every encrypted column of the schema (every ``*_ciphertext`` column) in id
order, ``batch`` rows at a time: one SELECT of the rows whose ciphertext is not under the
newest key (its 4-byte fingerprint prefix), decryption and re-encryption in Python (the
cryptography happens here, not in the database), and one UPDATE statement per batch executed
with the whole batch's parameters. Each row's UPDATE is conditional on the ciphertext being the
one read, so a row changed meanwhile (a citizen re-subscribing, an erasure blanking it) is
left to its writer, never overwritten with a stale number. Running it twice is harmless; when
it reports nothing left, the old keys can be removed from the environment.

The blind index key rotates in ``gateway.blind_keys`` (the same command runs both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import metadata
from gateway.db.walk import walk_and_update
from gateway.personal import PhoneVault


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    table: sa.Table
    column: sa.Column[bytes]

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


@dataclass(slots=True)
class RotationReport:
    re_encrypted: dict[str, int]
    skipped_changed: int = 0
    statements: int = 0

    @property
    def total(self) -> int:
        return sum(self.re_encrypted.values())


def encrypted_columns() -> Iterator[EncryptedColumn]:
    """Every column holding AEAD ciphertext of personal data, in a stable order."""
    for table in metadata.sorted_tables:
        primary = list(table.primary_key.columns)
        if len(primary) != 1:
            continue
        for column in table.columns:
            if column.name.endswith("_ciphertext") and isinstance(column.type, sa.LargeBinary):
                yield EncryptedColumn(table, column)


def _primary(table: sa.Table) -> sa.Column[int]:
    (column,) = table.primary_key.columns
    return column


async def rotate_phone_keys(
    engine: AsyncEngine,
    vault: PhoneVault,
    *,
    batch: int = 1000,
    progress: Callable[[str, int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every stored ciphertext under the vault's newest key; see the module doc."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    current = vault.current_fingerprint
    report = RotationReport(re_encrypted={})
    for target in encrypted_columns():
        table, column = target.table, target.column
        key = _primary(table)
        prefix = sa.func.substr(column, 1, len(current))
        update = (
            sa.update(table)
            .where(key == sa.bindparam("b_id"), column == sa.bindparam("b_old"))
            .values({column.name: sa.bindparam("b_new")})
        )
        walked = await walk_and_update(
            engine,
            query=sa.select(key, column).where(
                column.is_not(None), prefix != sa.literal(current, sa.LargeBinary)
            ),
            key=key,
            update=update,
            plan=lambda rows: [
                {"b_id": row[0], "b_old": row[1], "b_new": vault.reencrypt(bytes(row[1]))}
                for row in rows
            ],
            batch=batch,
            progress=None if progress is None else partial(progress, target.name),
        )
        report.statements += walked.statements
        report.skipped_changed += walked.skipped
        report.re_encrypted[target.name] = walked.done
    return report


async def remaining_under_old_keys(engine: AsyncEngine, vault: PhoneVault) -> dict[str, int]:
    """How many ciphertexts per column are not yet under the newest key."""
    current = vault.current_fingerprint
    left: dict[str, int] = {}
    async with engine.connect() as conn:
        for target in encrypted_columns():
            column = target.column
            count = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(target.table)
                .where(
                    column.is_not(None),
                    sa.func.substr(column, 1, len(current)) != sa.literal(current, sa.LargeBinary),
                )
            )
            left[target.name] = int(count or 0)
    return left
