"""``DELETE /api/v1/subscribers/{id}``: erasure through the real HTTP API on both databases.

The person's number (plain, national and masked), chat id and words appear nowhere in the
database afterwards, nor in the logs; what stays are anonymous counts."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from gateway.appkeys import DISPATCHER
from gateway.db.schema import audit_events, deliveries, metadata
from gateway.domain import Role
from gateway.personal import mask
from tests.gateway.test_inbox_api import INBOX, sms_in, threads
from tests.gateway.test_no_secrets_in_logs import record_text
from tests.support.plans import captured, plans
from tests.support.sms import broadcast, wait_for
from tests.support.world import World

SUBSCRIBERS = "/api/v1/subscribers"
ANI = "+6281277001234"
ANI_CHAT = 7_123_456_789
ANI_WORDS = "Saya Ani dari Gang Kelinci nomor 7"
BUDI = "+6281299005678"
DRIVER_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy")


async def dump(world: World) -> str:
    """Every value of every table, as text."""
    parts: list[str] = []
    async with world.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(sa.select(table)):
                parts.extend(
                    value.hex() + value.decode("latin-1")
                    if isinstance(value, bytes)
                    else str(value)
                    for value in row
                )
    return "\n".join(parts)


def traces_of_ani(text: str) -> list[str]:
    traces = (ANI, ANI[1:], "0" + ANI[3:], ANI[3:], mask(ANI), str(ANI_CHAT), ANI_WORDS)
    return [trace for trace in traces if trace in text]


async def test_erasure_removes_the_person_and_keeps_the_counts(
    world: World, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ani = await world.subscribe(ANI, channels=["sms", "telegram"], telegram_chat_id=ANI_CHAT)
    budi = await world.subscribe(BUDI)
    assert (ani.status, budi.status) == (201, 201)
    approved = await broadcast(world, channels=["sms", "telegram"])
    await world.app[DISPATCHER].start_due()  # or the starter loop did; no channel: all queued
    await wait_for(world, approved["id"], lambda counts, _body: counts.get("queued") == 3)
    await sms_in(world, keys, ANI, ANI_WORDS, "e-1")
    (thread,) = await threads(world)
    reply = await world.call(
        "POST", f"{INBOX}/{thread['id']}/reply", role=Role.OPERATOR, json={"text": "Baik, Bu Ani."}
    )
    assert reply.status == 202, reply.body
    before = await dump(world)
    assert set(traces_of_ani(before)) >= {mask(ANI), ANI_WORDS}

    path = f"{SUBSCRIBERS}/{ani.body['id']}"
    assert (await world.call("DELETE", path, role=Role.OPERATOR)).status == 403
    assert (await world.call("DELETE", path, role=Role.ADMIN, agency=1)).status == 404
    with captured(world.engine) as statements:
        erased = await world.call("DELETE", path, role=Role.ADMIN)
    assert erased.status == 204, erased.body
    if world.engine.dialect.name == "sqlite":
        # Their deliveries are found by index, not by reading all of the agency's (SQLite's
        # plans need no data).
        scans = [
            (statement, line)
            for statement, lines in await plans(world.engine, statements)
            for line in lines
            if line.startswith("SCAN deliveries") or "ix_deliveries_agency_id_created_at" in line
        ]
        assert scans == []
    again = await world.call("DELETE", path, role=Role.ADMIN)
    assert again.status == 204  # idempotent, and audited once

    after = await dump(world)
    assert traces_of_ani(after) == []
    assert mask(BUDI) in after  # the other subscriber is untouched
    # Our logs hold no trace of the person at any level. The database driver's own DEBUG echo
    # repeats statement parameters (the masked number and chat id as they were stored, never
    # the plain number, which is only ever encrypted); it is off unless asked for.
    ours = [r for r in caplog.records if not r.name.startswith(DRIVER_LOGGERS)]
    assert [r.name for r in ours if traces_of_ani(record_text(r))] == []
    plain = (ANI, ANI[1:], "0" + ANI[3:])
    assert [r.name for r in caplog.records if any(p in record_text(r) for p in plain)] == []

    # Counts stay: every delivery is still there, the person's queued ones cancelled.
    announcement = await world.call(
        "GET", f"/api/v1/announcements/{approved['id']}", role=Role.OPERATOR
    )
    counts = {
        c["channel"]: {state: n for state, n in c["counts"].items() if n}
        for c in announcement.body["stats"]
    }
    assert counts == {"sms": {"queued": 1, "cancelled": 1}, "telegram": {"cancelled": 1}}
    async with world.engine.connect() as conn:
        linked = await conn.scalar(
            sa.select(sa.func.count()).where(deliveries.c.subscriber_id == ani.body["id"])
        )
        reply_row = (
            await conn.execute(
                sa.select(
                    deliveries.c.state, deliveries.c.body, deliveries.c.recipient_ciphertext
                ).where(deliveries.c.id == reply.body["delivery_id"])
            )
        ).one()
        audits = (
            await conn.execute(
                sa.select(audit_events.c.action, audit_events.c.after).where(
                    audit_events.c.action == "subscriber.erase"
                )
            )
        ).all()
    assert linked == 0
    assert tuple(reply_row) == ("cancelled", None, None)
    assert len(audits) == 1
    assert audits[0].after == {
        "cancelled": 3,
        "deliveries_unlinked": 3,
        "messages_blanked": 1,
        "threads_closed": 1,
    }

    listed = await world.call("GET", SUBSCRIBERS, role=Role.OPERATOR)
    assert [(s["phone"], s["erased"]) for s in listed.body["items"]] == [
        (None, True),
        (mask(BUDI), False),
    ]
    detail = await world.call("GET", f"{INBOX}/{thread['id']}", role=Role.OPERATOR)
    assert (detail.body["status"], detail.body["phone"], detail.body["subscriber_id"]) == (
        "closed",
        None,
        None,
    )
    assert [(m["direction"], m["text"]) for m in detail.body["messages"]] == [
        ("in", ""),
        ("out", None),
    ]
    assert detail.body["response_seconds"] is not None  # the inbox's figures keep it
    refused = await world.call(
        "POST", f"{INBOX}/{thread['id']}/reply", role=Role.OPERATOR, json={"text": "Halo"}
    )
    assert refused.status == 409
    # The number may come back as a new person.
    assert (await world.subscribe(ANI)).status == 201


async def test_erasing_an_unknown_subscriber_is_404(world: World) -> None:
    answer = await world.call("DELETE", f"{SUBSCRIBERS}/424242", role=Role.ADMIN)
    assert (answer.status, answer.body["error"]["field"]) == (404, "id")


async def test_an_earlier_thread_from_the_number_is_erased_too(
    world: World, keys: dict[str, str]
) -> None:
    await sms_in(world, keys, ANI, "STOP", "u-0")  # answered "not subscribed", by number
    await sms_in(world, keys, ANI, ANI_WORDS, "u-1")  # unknown sender yet
    ani = await world.subscribe(ANI)
    await sms_in(world, keys, ANI, "Dan satu lagi", "u-2")
    # The unknown sender's open thread became the subscriber's.
    (thread,) = await threads(world)
    assert (thread["subscriber_id"], thread["messages_in"]) == (ani.body["id"], 2)
    assert (await world.call("DELETE", f"{SUBSCRIBERS}/{ani.body['id']}")).status == 204
    assert traces_of_ani(await dump(world)) == []
    async with world.engine.connect() as conn:
        replies = (
            await conn.execute(
                sa.select(deliveries.c.reply_key, deliveries.c.state, deliveries.c.body).where(
                    deliveries.c.recipient_ciphertext.is_not(None)
                    | deliveries.c.subscriber_id.is_not(None)
                )
            )
        ).all()
        automatic = (
            await conn.execute(
                sa.select(deliveries.c.state, deliveries.c.error_reason).where(
                    deliveries.c.reply_key == "u-0"
                )
            )
        ).all()
    assert replies == []  # no address of the person is left, encrypted or not
    assert [tuple(row) for row in automatic] == [("cancelled", "erased")]
