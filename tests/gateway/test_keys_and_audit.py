"""Key rotation under a running broadcast, and ``warta audit verify`` catching a tampered row."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator
from gateway.app import create_app, vault_from_config
from gateway.appkeys import CONFIG
from gateway.config import DatabaseConfig
from gateway.db.engine import create_engine
from gateway.db.schema import audit_events, subscribers
from gateway.domain import Role
from gateway.keys import encrypted_columns, remaining_under_old_keys, rotate_phone_keys
from gateway.personal import PhoneVault
from tests.conftest import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for
from tests.support.world import World

WARTA = str(Path(sys.executable).with_name("warta"))


async def _prefixes(engine: AsyncEngine) -> set[bytes]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(subscribers.c.phone_ciphertext).where(
                subscribers.c.phone_ciphertext.is_not(None)
            )
        )
        return {bytes(row[0][:4]) for row in rows}


async def test_rotation_while_a_broadcast_runs_loses_no_number_and_no_look_up(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    old_key = keys["phone_keys"]
    phones = numbers(1500)
    # Numbers stored under the old key only (the gateway before the operator added a new one).
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (first, _):
        await import_numbers(first, phones)
        tokens, agency_ids = first.tokens, first.agency_ids
        await first.client.close()

    # The operator restarts the gateways with the new key first, then rotates while they run.
    new_keys = {**keys, "phone_keys": PhoneVault.generate_key() + "," + old_key}
    sim = AfricasTalkingSimulator(
        replace(SimulatorConfig(latency=0.02), api_key=keys["africastalking_api_key"])
    )
    base_url = await sim.start()
    config = make_config(
        database_url,
        new_keys,
        africastalking={"base_url": base_url, "request_timeout_s": 2.0},
        dispatch={"idle_poll_s": 0.05, "claim_batch": 50, "workers_per_channel": 2},
    )
    app = create_app(config)
    world = World(client=await aiohttp_client(app), app=app, tokens=tokens, agency_ids=agency_ids)
    try:
        vault = vault_from_config(world.app[CONFIG])
        old_prefix = PhoneVault.from_secrets(old_key, keys["blind_index_key"]).current_fingerprint
        assert await _prefixes(world.engine) == {old_prefix}

        approved = await broadcast(world)
        seen: list[int] = []
        report = await rotate_phone_keys(
            world.engine, vault, batch=200, progress=lambda _column, done: seen.append(done)
        )
        await wait_for(
            world, approved["id"], lambda counts, body: body["status"] == "done", timeout=120
        )

        assert report.re_encrypted["subscribers.phone_ciphertext"] == len(phones)
        assert len(seen) >= len(phones) // 200  # batches, not one statement per number
        assert report.statements <= 2 * (len(phones) // 200 + 2) * len(list(encrypted_columns()))
        assert await _prefixes(world.engine) == {vault.current_fingerprint}
        assert sum((await remaining_under_old_keys(world.engine, vault)).values()) == 0
        # Every citizen was reached exactly with their own number, during the rotation.
        assert sorted(number for number, _ in sim.sent_count.items()) == sorted(phones)
        assert sim.sent_count.duplicates() == {}
        # Look-ups by number still work (the blind index did not change).
        found = await world.call(
            "POST", "/api/v1/subscribers/search", role=Role.OPERATOR, json={"phone": phones[7]}
        )
        assert found.status == 200
        assert len(found.body["items"]) == 1

        # A second run has nothing to do; the old key can now go: the new key alone decrypts.
        again = await rotate_phone_keys(world.engine, vault, batch=200)
        assert again.total == 0
        alone = PhoneVault.from_secrets(
            new_keys["phone_keys"].split(",")[0], keys["blind_index_key"]
        )
        async with world.engine.connect() as conn:
            stored = (await conn.execute(sa.select(subscribers.c.phone_ciphertext))).scalars()
            assert sorted(alone.decrypt(c) for c in stored) == sorted(phones)
    finally:
        await sim.stop()


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WARTA, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _env(database_url: str, keys: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARTA_")}
    env["WARTA_DATABASE__URL"] = database_url
    env["WARTA_SECRETS__PHONE_KEYS"] = keys["phone_keys"]
    env["WARTA_SECRETS__BLIND_INDEX_KEY"] = keys["blind_index_key"]
    return env


async def test_audit_verify_passes_then_catches_an_edited_and_a_deleted_event(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _):
        await import_numbers(world, numbers(3))
        for _ in range(2):
            approved = await broadcast(world)
            await wait_for(world, approved["id"], lambda _c, body: body["status"] == "done")
        await world.client.close()

    engine = create_engine(DatabaseConfig(url=database_url))
    try:
        async with engine.connect() as conn:
            events = (
                (await conn.execute(sa.select(audit_events.c.id).order_by(audit_events.c.id)))
                .scalars()
                .all()
            )
        assert len(events) >= 6
        env = _env(database_url, keys)

        intact = _run(["audit", "verify"], env)
        assert intact.returncode == 0, intact.stderr
        assert f"intact: {len(events)} events" in intact.stdout

        # Someone with database access rewrites who approved an announcement.
        async with engine.begin() as conn:
            await conn.execute(
                sa.update(audit_events)
                .where(audit_events.c.id == events[3])
                .values(actor="token:999:approver")
            )
        edited = _run(["audit", "verify"], env)
        assert edited.returncode == 4
        assert f"event {events[3]}: its content was changed" in edited.stderr

        # ...or deletes an event outright.
        async with engine.begin() as conn:
            await conn.execute(sa.delete(audit_events).where(audit_events.c.id == events[3]))
        deleted = _run(["audit", "verify"], env)
        assert deleted.returncode == 4
        assert f"event {events[4]}: does not follow the previous event" in deleted.stderr
        assert keys["phone_keys"] not in deleted.stdout + deleted.stderr
    finally:
        await engine.dispose()


async def test_keys_rotate_command_reports_and_finishes(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _):
        await import_numbers(world, numbers(25))
        await world.client.close()
    rotated_keys = {**keys, "phone_keys": PhoneVault.generate_key() + "," + keys["phone_keys"]}

    done = _run(["keys", "rotate", "--batch", "10"], _env(database_url, rotated_keys))

    assert done.returncode == 0, done.stderr
    assert "subscribers.phone_ciphertext: 25 re-encrypted" in done.stdout
    assert "+62812" not in done.stdout + done.stderr
    again = _run(["keys", "rotate"], _env(database_url, rotated_keys))
    assert "subscribers.phone_ciphertext: 0 re-encrypted" in again.stdout
