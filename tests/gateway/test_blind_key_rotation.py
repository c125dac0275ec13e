"""Rotating the blind index key while a broadcast runs and citizens text and dial in."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.app import create_app, vault_from_config
from gateway.appkeys import CONFIG
from gateway.blind_keys import MESSAGES, SUBSCRIBERS, THREADS, rotate_blind_index
from gateway.config import DatabaseConfig
from gateway.db.engine import create_engine
from gateway.db.schema import (
    audit_events,
    inbound_messages,
    inbox_threads,
    subscriber_channels,
    subscribers,
)
from gateway.domain import Role
from gateway.personal import PhoneVault
from gateway.store import inbox
from tests.conftest import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for
from tests.support.world import World

WARTA = str(Path(sys.executable).with_name("warta"))
STRANGER = "+6281399887766"
NEWCOMER = "+6281377665544"
QUIET_STRANGER = "+6281355443322"
_ids = itertools.count(1)


async def _sms(world: World, keys: dict[str, str], phone: str, text: str) -> None:
    form = {
        "from": phone,
        "to": "21234",
        "text": text,
        "date": "2026-01-05 10:00:00",
        "id": f"ATXid_{next(_ids)}",
        "linkId": "",
    }
    path = f"/callbacks/africastalking/{keys['callback_token']}/sms/inbound"
    async with world.client.post(path, data=form) as response:
        assert response.status == 200, await response.text()


async def _ussd(world: World, keys: dict[str, str], phone: str, text: str) -> str:
    form = {
        "sessionId": f"ATUid_{next(_ids)}",
        "serviceCode": "*384*123#",
        "phoneNumber": phone,
        "networkCode": "51010",
        "text": text,
    }
    path = f"/callbacks/africastalking/{keys['callback_token']}/ussd"
    async with world.client.post(path, data=form) as response:
        assert response.status == 200
        return await response.text()


async def _world(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], base_url: str, first: World
) -> World:
    config = make_config(
        database_url,
        keys,
        africastalking={"base_url": base_url, "request_timeout_s": 2.0},
        dispatch={"idle_poll_s": 0.05, "claim_batch": 50, "workers_per_channel": 2},
    )
    app = create_app(config)
    return World(
        client=await aiohttp_client(app), app=app, tokens=first.tokens, agency_ids=first.agency_ids
    )


async def _stopped_sms(world: World, vault: PhoneVault) -> set[str]:
    """Numbers whose SMS channel is opted out."""
    async with world.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(subscribers.c.phone_ciphertext)
                .join(subscriber_channels, subscriber_channels.c.subscriber_id == subscribers.c.id)
                .where(
                    subscriber_channels.c.channel == "sms",
                    subscriber_channels.c.opted_out_at.is_not(None),
                )
            )
        ).scalars()
        return {vault.decrypt(row) for row in rows}


async def _open_threads_of(world: World, key: str) -> int:
    async with world.engine.connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(inbox_threads)
            .where(inbox_threads.c.citizen_key == key, inbox_threads.c.status == inbox.OPEN)
        )
    return int(count or 0)


async def test_blind_key_rotation_under_a_broadcast_and_citizen_traffic_loses_no_look_up(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    phones = numbers(1000)
    old_key = keys["blind_index_key"]
    new_key = PhoneVault.generate_key()
    # Before: every index under the old key; a stranger's thread and a subscriber's message.
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (first, _):
        await import_numbers(first, phones)
        await _sms(first, keys, STRANGER, "halo, kapan air surut?")
        await _sms(first, keys, QUIET_STRANGER, "jalan ditutup?")
        await _sms(first, keys, phones[0], "terima kasih infonya")
        await first.client.close()

    sim = AfricasTalkingSimulator(
        replace(SimulatorConfig(latency=0.02), api_key=keys["africastalking_api_key"])
    )
    base_url = await sim.start()
    rotating = {**keys, "blind_index_key": f"{new_key},{old_key}"}
    try:
        world = await _world(aiohttp_client, database_url, rotating, base_url, first)
        vault = vault_from_config(world.app[CONFIG])
        approved = await broadcast(world)

        # Both keys configured, nothing rotated yet: every look-up must still find the rows.
        await _sms(world, keys, phones[1], "STOP")
        assert "END" in (ussd := await _ussd(world, keys, phones[2], "4*1"))
        assert "belum terdaftar" not in ussd
        await _sms(world, keys, phones[3], "DAFTAR 3171")
        await _sms(world, keys, STRANGER, "halo lagi")

        async def citizens() -> list[str]:
            screens = []
            for i in range(4, 10):
                await _sms(world, keys, phones[i], "STOP")
                screens.append(await _ussd(world, keys, phones[i + 6], "4*1"))
                await _sms(world, keys, phones[i + 12], "DAFTAR 3171")
            await _sms(world, keys, NEWCOMER, "DAFTAR 3171")
            await _sms(world, keys, STRANGER, "masih banjir")
            return screens

        rotation, screens = await asyncio.gather(
            rotate_blind_index(world.engine, vault, batch=100), citizens()
        )
        await wait_for(
            world, approved["id"], lambda _counts, body: body["status"] == "done", timeout=120
        )

        newest = PhoneVault.from_secrets(keys["phone_keys"], new_key)
        assert rotation.reindexed[SUBSCRIBERS] == len(phones)
        # The stranger who wrote again had their thread carried over at once; the quiet one's
        # thread waited for the rotation.
        assert rotation.reindexed[THREADS] == 1
        assert await _open_threads_of(world, inbox.phone_key(newest.blind_index(QUIET_STRANGER)))
        assert rotation.skipped == 0
        assert rotation.statements >= len(phones) // 100  # batches, not a statement per row
        assert rotation.statements <= 3 * (len(phones) // 100 + 3)
        assert all("belum terdaftar" not in screen for screen in screens)
        stopped = {phones[1], phones[2], *phones[4:10], *phones[10:16]}
        assert await _stopped_sms(world, vault) == stopped
        # Nobody subscribed twice; the newcomer got a row of their own.
        async with world.engine.connect() as conn:
            indexes = (await conn.execute(sa.select(subscribers.c.phone_index))).scalars().all()
            assert len(indexes) == len(set(indexes)) == len(phones) + 1
        assert set(indexes) == {newest.blind_index(p) for p in [*phones, NEWCOMER]}
        # The stranger's three messages are in one thread, now keyed under the new index.
        assert await _open_threads_of(world, inbox.phone_key(newest.blind_index(STRANGER))) == 1
        async with world.engine.connect() as conn:
            stranger = (
                await conn.execute(
                    sa.select(inbound_messages.c.thread_id, inbound_messages.c.phone_index).where(
                        inbound_messages.c.text.in_(["halo, kapan air surut?", "halo lagi"])
                    )
                )
            ).all()
        assert len({row.thread_id for row in stranger}) == 1
        assert {row.phone_index for row in stranger} == {newest.blind_index(STRANGER)}
        # Every citizen was reached once by the broadcast (those who wrote also got answers).
        quiet = set(phones) - stopped - set(phones[:22])
        counts = dict(sim.sent_count.items())
        assert all(counts.get(p) == 1 for p in quiet)
        # Nothing left under the old key: a second run has nothing to do.
        left = await rotate_blind_index(world.engine, vault, batch=100, dry_run=True)
        assert left.total == 0
        assert left.unrecoverable == 0
        assert left.reindexed[MESSAGES] == 0
        await world.client.close()

        # The old key removed: look-ups by number work with the new key alone.
        alone = await _world(
            aiohttp_client, database_url, {**keys, "blind_index_key": new_key}, base_url, first
        )
        found = await alone.call(
            "POST", "/api/v1/subscribers/search", role=Role.OPERATOR, json={"phone": phones[500]}
        )
        assert found.status == 200
        assert len(found.body["items"]) == 1
        await _sms(alone, keys, STRANGER, "sudah surut")
        assert await _open_threads_of(alone, inbox.phone_key(newest.blind_index(STRANGER))) == 1
        assert "belum terdaftar" not in await _ussd(alone, keys, phones[600], "4*1")
        assert phones[600] in await _stopped_sms(alone, vault)
    finally:
        await sim.stop()


def _env(database_url: str, keys: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARTA_")}
    env["WARTA_DATABASE__URL"] = database_url
    env["WARTA_SECRETS__PHONE_KEYS"] = keys["phone_keys"]
    env["WARTA_SECRETS__BLIND_INDEX_KEY"] = keys["blind_index_key"]
    return env


async def test_keys_rotate_command_recomputes_the_blind_index_and_says_the_old_key_can_go(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _):
        await import_numbers(world, numbers(25))
        await world.client.close()
    new_key = PhoneVault.generate_key()
    rotating = {**keys, "blind_index_key": f"{new_key},{keys['blind_index_key']}"}

    done = subprocess.run(
        [WARTA, "keys", "rotate", "--batch", "10"],
        env=_env(database_url, rotating),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "subscribers.phone_index: 25 re-indexed" in done.stdout
    assert "older blind index keys may now be removed" in done.stdout
    assert "+62812" not in done.stdout + done.stderr
    assert new_key not in done.stdout + done.stderr
    # The rotation is in the audit log, with counts only.
    engine = create_engine(DatabaseConfig(url=database_url))
    try:
        async with engine.connect() as conn:
            events = (
                await conn.execute(
                    sa.select(audit_events.c.actor, audit_events.c.after).where(
                        audit_events.c.action == "keys.rotate"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(actor, after["re_indexed"], after["left"]) for actor, after in events] == [
        ("cli", 25, 0)
    ]


async def test_telegram_threads_are_rekeyed_and_a_taken_index_is_skipped_not_a_crash(
    world: World, keys: dict[str, str]
) -> None:
    old_key, new_key = keys["blind_index_key"], PhoneVault.generate_key()
    old = PhoneVault.from_secrets(keys["phone_keys"], old_key)
    vault = PhoneVault.from_secrets(keys["phone_keys"], f"{new_key},{old_key}")
    agency = world.agency_ids[0]
    chat_label = inbox.telegram_chat_label(777001)
    now = sa.func.now()
    async with world.engine.begin() as conn:
        thread_id = await conn.scalar(
            sa.insert(inbox_threads)
            .values(
                agency_id=agency,
                citizen_key=inbox.chat_key(old.blind_index(chat_label)),
                reply_ciphertext=old.encrypt("777001"),
                channel="telegram",
                status=inbox.OPEN,
                opened_at=now,
                last_message_at=now,
            )
            .returning(inbox_threads.c.id)
        )
        # A stale gateway (old key only) and a rotated one each stored the same number: the
        # rotation must not break the unique (agency, phone_index) constraint over it.
        for index in (old.blind_index(STRANGER), vault.blind_index(STRANGER)):
            await conn.execute(
                sa.insert(subscribers).values(
                    agency_id=agency,
                    phone_ciphertext=vault.encrypt(STRANGER),
                    phone_index=index,
                    phone_masked="+62 813-****-766",
                    language="id",
                    topics=[],
                    created_at=now,
                )
            )

    report = await rotate_blind_index(world.engine, vault, batch=10)

    assert report.reindexed[THREADS] == 1
    assert report.skipped == 1  # the duplicate kept its old index, reported, not overwritten
    async with world.engine.connect() as conn:
        key = await conn.scalar(
            sa.select(inbox_threads.c.citizen_key).where(inbox_threads.c.id == thread_id)
        )
        stored = (await conn.execute(sa.select(subscribers.c.phone_index))).scalars().all()
    assert key == inbox.chat_key(vault.blind_index(chat_label))
    assert sorted(stored) == sorted([old.blind_index(STRANGER), vault.blind_index(STRANGER)])


def test_a_vault_with_two_blind_index_keys_writes_under_the_newest_and_matches_both(
    keys: dict[str, str],
) -> None:
    old_key, new_key = keys["blind_index_key"], PhoneVault.generate_key()
    before = PhoneVault.from_secrets(keys["phone_keys"], old_key)
    during = PhoneVault.from_secrets(keys["phone_keys"], f"{new_key}, {old_key}")
    after = PhoneVault.from_secrets(keys["phone_keys"], new_key)
    assert during.blind_index(STRANGER) == after.blind_index(STRANGER)
    assert during.blind_indexes(STRANGER) == (
        after.blind_index(STRANGER),
        before.blind_index(STRANGER),
    )
    assert during.index_keys_in_use == 2 and before.index_keys_in_use == 1
    assert new_key not in repr(during) and old_key not in repr(during)
