"""Rotating the blind index key while the gateway runs (``warta keys rotate``).

The blind index (HMAC of a number under ``secrets.blind_index_key``) is how a number is found
without decrypting: subscribers (``subscribers.phone_index``, unique per agency), inbox threads
of citizens who are not subscribers (``inbox_threads.citizen_key`` ``p:<index>`` for a number,
``t:<index>`` for a Telegram chat) and inbound messages (``inbound_messages.phone_index``).

An operator puts a new key first in ``WARTA_SECRETS__BLIND_INDEX_KEY`` (comma-separated,
newest first; the old one stays after it) and restarts the gateways. From then on new rows get
the newest key's index, and every look-up computes the index under each configured key and
matches any of them (``IN (…)``), so nothing is lost while rows carry either. This module then
recomputes the stored indexes, ``batch`` rows at a time per table: one SELECT (in id order)
of the rows with what they need to be recomputed from (the encrypted number), decryption and
HMAC in Python, and one UPDATE executed with the whole batch's parameters. Each row's UPDATE
is conditional on the index being the one read, so a row changed meanwhile is left to its
writer; and on the new index not being taken already (a subscriber, or an open thread, of the
same agency), so a unique constraint never breaks mid-rotation: such a row is counted as
skipped. An inbound message has no number of its own; its number is found through its
subscriber, its inbox thread, or the automatic reply it got. When a run reports nothing left,
the old key can be removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import deliveries, inbound_messages, inbox_threads, subscribers
from gateway.db.walk import walk_and_update
from gateway.personal import KeyProblem, PhoneVault
from gateway.store import inbox

Progress = Callable[[str, int], None]

SUBSCRIBERS = "subscribers.phone_index"
THREADS = "inbox_threads.citizen_key"
MESSAGES = "inbound_messages.phone_index"


@dataclass(slots=True)
class IndexRotationReport:
    """What a run did (or, with ``dry_run``, would do) per column."""

    reindexed: dict[str, int] = field(default_factory=dict)
    # Changed meanwhile by another writer, or the new index already taken by another row.
    skipped: int = 0
    # Inbound messages whose number is kept nowhere (no subscriber, thread or reply): their
    # index cannot be recomputed and stays under the key it was written with.
    unrecoverable: int = 0
    statements: int = 0

    @property
    def total(self) -> int:
        return sum(self.reindexed.values())


def _decrypt(vault: PhoneVault, ciphertext: bytes | None) -> str | None:
    if ciphertext is None:
        return None
    try:
        return vault.decrypt(bytes(ciphertext))
    except KeyProblem:
        return None


def _thread_key(vault: PhoneVault, citizen_key: str, plain: str | None) -> str | None:
    """The thread's key under the newest index key, from the address its replies go to."""
    if plain is None:
        return None
    if citizen_key.startswith("p:") and plain.startswith("+"):
        return inbox.phone_key(vault.blind_index(plain))
    if citizen_key.startswith("t:") and plain.lstrip("-").isdigit():
        return inbox.chat_key(vault.blind_index(inbox.telegram_chat_label(int(plain))))
    return None


async def _walk(
    engine: AsyncEngine,
    *,
    name: str,
    report: IndexRotationReport,
    progress: Progress | None,
    **walk: Any,
) -> None:
    def tell(done: int) -> None:
        if progress is not None:
            progress(name, done)

    walked = await walk_and_update(engine, progress=tell, **walk)
    report.statements += walked.statements
    report.skipped += walked.skipped
    report.reindexed[name] = walked.done


async def rotate_blind_index(
    engine: AsyncEngine,
    vault: PhoneVault,
    *,
    batch: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> IndexRotationReport:
    """Recompute every stored blind index under the vault's newest key; see the module doc.

    With ``dry_run`` nothing is written: the report counts what is still under older keys.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    report = IndexRotationReport()

    # -- subscribers --------------------------------------------------------------------
    other = subscribers.alias("other")
    subscriber_update = (
        sa.update(subscribers)
        .where(
            subscribers.c.id == sa.bindparam("b_id"),
            subscribers.c.phone_index == sa.bindparam("b_old"),
            ~sa.exists().where(
                other.c.agency_id == subscribers.c.agency_id,
                other.c.phone_index == sa.bindparam("b_new"),
            ),
        )
        .values(phone_index=sa.bindparam("b_new"))
    )

    def plan_subscribers(rows: Sequence[Any]) -> list[dict[str, Any]]:
        params = []
        for sub_id, old, plain in zip(
            (row[0] for row in rows),
            (row[1] for row in rows),
            vault.decrypt_many([row[2] for row in rows]),
            strict=True,
        ):
            assert plain is not None
            new = vault.blind_index(plain)
            if new != old:
                params.append({"b_id": sub_id, "b_old": old, "b_new": new})
        return params

    await _walk(
        engine,
        query=sa.select(
            subscribers.c.id, subscribers.c.phone_index, subscribers.c.phone_ciphertext
        ).where(subscribers.c.phone_ciphertext.is_not(None)),
        key=subscribers.c.id,
        update=subscriber_update,
        plan=plan_subscribers,
        name=SUBSCRIBERS,
        batch=batch,
        report=report,
        dry_run=dry_run,
        progress=progress,
    )

    # -- inbox threads of citizens who are not subscribers -------------------------------
    open_other = inbox_threads.alias("open_other")
    thread_update = (
        sa.update(inbox_threads)
        .where(
            inbox_threads.c.id == sa.bindparam("b_id"),
            inbox_threads.c.citizen_key == sa.bindparam("b_old"),
            sa.or_(
                inbox_threads.c.status != inbox.OPEN,
                ~sa.exists().where(
                    open_other.c.agency_id == inbox_threads.c.agency_id,
                    open_other.c.citizen_key == sa.bindparam("b_new"),
                    open_other.c.status == inbox.OPEN,
                ),
            ),
        )
        .values(citizen_key=sa.bindparam("b_new"))
    )

    def plan_threads(rows: Sequence[Any]) -> list[dict[str, Any]]:
        params = []
        for thread_id, old, ciphertext in rows:
            new = _thread_key(vault, old, _decrypt(vault, ciphertext))
            if new is None:
                report.unrecoverable += 1
            elif new != old:
                params.append({"b_id": thread_id, "b_old": old, "b_new": new})
        return params

    await _walk(
        engine,
        query=sa.select(
            inbox_threads.c.id, inbox_threads.c.citizen_key, inbox_threads.c.reply_ciphertext
        ).where(
            sa.or_(
                inbox_threads.c.citizen_key.startswith("p:"),
                inbox_threads.c.citizen_key.startswith("t:"),
            )
        ),
        key=inbox_threads.c.id,
        update=thread_update,
        plan=plan_threads,
        name=THREADS,
        batch=batch,
        report=report,
        dry_run=dry_run,
        progress=progress,
    )

    # -- inbound messages: the number is their subscriber's, their thread's, or the reply's --
    message_update = (
        sa.update(inbound_messages)
        .where(
            inbound_messages.c.id == sa.bindparam("b_id"),
            inbound_messages.c.phone_index == sa.bindparam("b_old"),
        )
        .values(phone_index=sa.bindparam("b_new"))
    )
    m = inbound_messages.c
    message_query = (
        sa.select(
            m.id,
            m.phone_index,
            subscribers.c.phone_ciphertext,
            inbox_threads.c.reply_ciphertext,
            deliveries.c.recipient_ciphertext,
        )
        .select_from(
            inbound_messages.outerjoin(subscribers, subscribers.c.id == m.subscriber_id)
            .outerjoin(inbox_threads, inbox_threads.c.id == m.thread_id)
            .outerjoin(
                deliveries,
                sa.and_(
                    deliveries.c.channel == m.channel,
                    deliveries.c.reply_key == m.provider_message_id,
                ),
            )
        )
        .where(m.phone_index.is_not(None))
    )

    def plan_messages(rows: Sequence[Any]) -> list[dict[str, Any]]:
        params = []
        for row in rows:
            message_id, old = row[0], row[1]
            new = None
            for ciphertext in row[2:]:
                plain = _decrypt(vault, ciphertext)
                if plain is not None and plain.startswith("+"):
                    indexes = vault.blind_indexes(plain)
                    if old in indexes:
                        new = indexes[0]
                        break
            if new is None:
                report.unrecoverable += 1
            elif new != old:
                params.append({"b_id": message_id, "b_old": old, "b_new": new})
        return params

    await _walk(
        engine,
        query=message_query,
        key=m.id,
        update=message_update,
        plan=plan_messages,
        name=MESSAGES,
        batch=batch,
        report=report,
        dry_run=dry_run,
        progress=progress,
    )
    return report
