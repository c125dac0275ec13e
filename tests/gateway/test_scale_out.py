"""Several ``warta serve`` processes on one PostgreSQL: roles, one shared provider rate.

Two ``--role worker`` processes dispatch one broadcast that a ``--role api`` process accepted;
the Africa's Talking simulator runs in this test's process and records when each request
arrived, so the combined rate is measured where a provider would measure it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from channels.africastalking.simconfig import SimulatorConfig
from channels.africastalking.simulator import AfricasTalkingSimulator, ReceivedRequest
from gateway.app import create_app
from gateway.config import DatabaseConfig, WartaConfig
from gateway.db.engine import create_engine
from gateway.domain import Role
from tests.support.processes import free_port, seed_tokens
from tests.support.sms import csv_of, numbers

RECIPIENTS = 5_000
RATE = 400  # messages per second, for all processes together
BATCH = 50  # recipients per provider request: the burst the rate may be exceeded by


def gateway_env(
    database_url: str, keys: dict[str, str], sim_url: str, **settings: str
) -> dict[str, str]:
    """The environment of a ``warta serve`` child; ``settings`` are extra ``WARTA_*``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("WARTA_")},
        "WARTA_DATABASE__URL": database_url,
        "WARTA_AFRICASTALKING__BASE_URL": sim_url,
        "WARTA_AFRICASTALKING__RATE_PER_SECOND": str(RATE),
        "WARTA_AFRICASTALKING__BATCH_SIZE": str(BATCH),
        "WARTA_DISPATCH__SHARED_RATE_LIMIT": "true",
        "WARTA_DISPATCH__WORKERS_PER_CHANNEL": "2",
        "WARTA_DISPATCH__CLAIM_BATCH": "100",
        "WARTA_DISPATCH__LEASE_SECONDS": "5",
        "WARTA_DISPATCH__IDLE_POLL_S": "0.05",
        "WARTA_LOG_LEVEL": "WARNING",
        # Throughput and faults at any hour: at night in Jakarta a normal broadcast would wait
        # for 06:00 (quiet hours have their own tests in tests/scheduler/test_quiet_hours.py).
        "WARTA_SCHEDULER__QUIET_HOURS": "off",
        **{f"WARTA_SECRETS__{k.upper()}": v for k, v in keys.items()},
        **{f"WARTA_{k.upper()}": v for k, v in settings.items()},
    }


class Process:
    """``warta serve --role ROLE`` in a child process, on its own port."""

    def __init__(self, env: dict[str, str], log_path: Path, *, role: str) -> None:
        self.port = free_port()
        self.env = {
            **env,
            "WARTA_HTTP__PORT": str(self.port),
            "WARTA_HTTP__PUBLIC_URL": f"http://127.0.0.1:{self.port}",
        }
        self.role = role
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    async def start(self, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--role", self.role],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log_path.read_text()[-2000:]
                try:
                    async with http.get(self.base + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.role} did not start: " + self.log_path.read_text()[-2000:])

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Api:
    """The agency's side: bearer-token calls to the ``--role api`` process."""

    def __init__(self, http: aiohttp.ClientSession, tokens: dict[Role, str]) -> None:
        self.http = http
        self.tokens = tokens

    async def call(self, method: str, path: str, role: Role, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}", **kwargs.pop("headers", {})}
        async with self.http.request(method, "/api/v1" + path, headers=headers, **kwargs) as r:
            body = await r.json()
            assert r.status < 300, body
            return body

    async def broadcast(self, phones: list[str]) -> int:
        """Import ``phones``, then create, submit and approve an SMS; returns its id."""
        report = await self.call(
            "POST",
            "/subscribers/import",
            Role.OPERATOR,
            data=csv_of(phones),
            headers={"Content-Type": "text/csv"},
        )
        assert report["imported"] == len(phones)
        created = await self.call(
            "POST",
            "/announcements",
            Role.AUTHOR,
            json={"title": "Uji skala", "body": "Pesan uji.", "channels": ["sms"]},
        )
        await self.call("POST", f"/announcements/{created['id']}/submit", Role.AUTHOR)
        await self.call("POST", f"/announcements/{created['id']}/approve", Role.APPROVER)
        return int(created["id"])

    async def wait_done(self, announcement_id: int, *, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = await self.call(
                "GET", f"/announcements/{announcement_id}", Role.OPERATOR
            )
            if body["status"] == "done":
                return body
            assert time.monotonic() < deadline, f"not done in {timeout:.0f} s: {body['stats']}"
            await asyncio.sleep(0.2)


def per_second(records: Iterable[ReceivedRequest]) -> Counter[int]:
    """Messages the provider accepted in each wall-clock second."""
    counts: Counter[int] = Counter()
    for record in records:
        if 200 <= record.http_status < 300:
            counts[int(record.received_at)] += len(record.recipients)
    return counts


def sent_total(body: dict[str, Any]) -> int:
    counts = {c["channel"]: c["counts"] for c in body["stats"]}
    return int(counts["sms"].get("sent", 0) + counts["sms"].get("delivered", 0))


# -- roles, in process ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_roles_choose_what_a_process_serves(config: WartaConfig) -> None:
    def paths(app: Any) -> set[str]:
        return {r.canonical for r in app.router.resources()}

    worker = create_app(config, role="worker")
    assert paths(worker) - {"/metrics"} == {"/healthz", "/readyz"}
    from gateway.appkeys import CONFIG

    assert worker[CONFIG].dispatch.enabled is True
    assert worker[CONFIG].scheduler.enabled is True

    api = create_app(config, role="api")
    assert "/api/v1/announcements" in paths(api)
    assert api[CONFIG].dispatch.enabled is False
    assert api[CONFIG].scheduler.enabled is False

    both = create_app(config)
    assert paths(both) == paths(api)
    assert both[CONFIG].dispatch == config.dispatch


# -- two workers, one API, one provider rate --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres"])
async def test_two_workers_share_one_rate_and_send_each_once(
    database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    sim = AfricasTalkingSimulator(
        SimulatorConfig(
            api_key=keys["africastalking_api_key"], latency=0.005, seed=1, max_records=100_000
        )
    )
    sim_url = await sim.start()
    env = gateway_env(database_url, keys, sim_url)
    tokens = await seed_tokens(database_url, slug="scale")
    api = Process(env, tmp_path / "api.log", role="api")
    workers = [Process(env, tmp_path / f"worker{n}.log", role="worker") for n in (1, 2)]
    phones = [n for n in numbers(RECIPIENTS) if not n.endswith("0000")]
    try:
        await asyncio.gather(api.start(), *(w.start() for w in workers))
        async with aiohttp.ClientSession() as http:
            # A worker has only the health endpoints; the API process has everything else.
            async with http.get(workers[0].base + "/api/v1/openapi.json") as r:
                assert r.status == 404
            async with http.get(api.base + "/api/v1/openapi.json") as r:
                assert r.status == 200
        async with aiohttp.ClientSession(api.base) as http:
            agency = Api(http, tokens)
            announcement_id = await agency.broadcast(phones)
            started = time.monotonic()
            body = await agency.wait_done(announcement_id, timeout=90)
            elapsed = time.monotonic() - started
    finally:
        for process in (api, *workers):
            process.stop()
        await sim.stop()

    assert sim.sent_count.duplicates() == {}
    assert set(dict(sim.sent_count.items())) == set(phones)
    assert sent_total(body) == len(phones)
    seconds = per_second(sim.received)
    worker_logs = [w.log_path.read_text() for w in workers]
    assert all("Traceback" not in text for text in worker_logs), worker_logs
    # Each process may send one request (a batch) a little late into the next second.
    assert max(seconds.values()) <= RATE + len(workers) * BATCH, sorted(seconds.items())
    # Over the whole run the rate held, and the broadcast was not throttled far below it.
    assert elapsed >= len(phones) / RATE - 1.5
    busy = [n for n in seconds.values() if n >= RATE // 2]
    assert len(busy) >= len(phones) // RATE - 2, sorted(seconds.items())


# -- the shared budget itself -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"])
async def test_shared_budget_never_books_a_window_beyond_its_limit(database_url: str) -> None:
    from gateway.outbox.shared_rate import SharedRateLimit, window_for
    from gateway.outbox.shared_rate_tables import rate_budgets

    engine = create_engine(DatabaseConfig(url=database_url))
    frozen = 1_000_000.0  # windows far from now, so nothing is pruned
    try:
        # Two "processes" booking 30 requests of 7 at 20/s, all at the same instant.
        limits = [SharedRateLimit(engine, clock=lambda: frozen) for _ in range(2)]
        starts = await asyncio.gather(
            *(limits[i % 2].reserve("sms", 7, rate=20) for i in range(30))
        )
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(rate_budgets.c.window_start, rate_budgets.c.used))
            rows = {start: used for start, used in result}
        assert sum(rows.values()) == 30 * 7
        assert max(rows.values()) <= 20
        assert set(starts) == set(rows)
        # Larger than a window: whole windows one after another, sent at the last one's start.
        start = await limits[0].reserve("voice", 12, rate=5)
        assert start == frozen + 2
        # Slower than one a second: two-second windows of one message.
        assert window_for(0.5) == (2, 1)
        assert window_for(200) == (1, 200)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_batchs_requests_booking_together_do_not_each_try_every_full_window(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimed batch's requests book at once. They book one after the other, each from
    where the one before left off: one attempt each here, where each used to try every
    window the others had filled (2,460 attempts for these 120; Telegram batches on
    PostgreSQL sent their first messages seconds late)."""
    from gateway.outbox.shared_rate import SharedRateLimit

    attempts = 0
    take = SharedRateLimit._take

    async def counted(*args: Any) -> int | None:
        nonlocal attempts
        attempts += 1
        return await take(*args)

    monkeypatch.setattr(SharedRateLimit, "_take", staticmethod(counted))
    engine = create_engine(DatabaseConfig(url=database_url))
    try:
        limit = SharedRateLimit(engine, clock=lambda: 4_000_000.0)
        starts = await asyncio.gather(*(limit.reserve("telegram", 1, rate=3) for _ in range(120)))
        assert sorted(starts) == [4_000_000 + i // 3 for i in range(120)]
        assert attempts == 120
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_window_one_process_gives_back_is_booked_again_by_another(
    database_url: str,
) -> None:
    """Process A books five one-message windows ahead and gives the third back (its message
    was cancelled); process B, which had booked past them, books that window next instead of
    one further on. Before, only A looked back."""
    from gateway.outbox.shared_rate import LOOK_BACK_EVERY_S, SharedRateLimit
    from gateway.ratelimit import TokenBucket

    engine = create_engine(DatabaseConfig(url=database_url))
    now = [5_000_000.0]
    local = TokenBucket(rate=1, burst=1)
    try:
        a, b = (SharedRateLimit(engine, clock=lambda: now[0]) for _ in range(2))
        booked = [await a.book("telegram", 1, rate=1, local=local) for _ in range(5)]
        assert [k.window for k in booked] == [5_000_000 + i for i in range(5)]
        assert await b.reserve("telegram", 1, rate=1) == 5_000_005
        await a.give_back(booked[2], 1)
        assert await b.reserve("telegram", 1, rate=1) == 5_000_002
        # Every window is full again: B goes on from where it was, not from the start.
        assert await b.reserve("telegram", 1, rate=1) == 5_000_006
        # A window that came free meanwhile is found at the next look back, a second on.
        await a.give_back(booked[3], 1)
        assert await b.reserve("telegram", 1, rate=1) == 5_000_007
        now[0] += LOOK_BACK_EVERY_S
        assert await b.reserve("telegram", 1, rate=1) == 5_000_003
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_pruning_keeps_the_window_of_a_slow_channel_under_way(database_url: str) -> None:
    """One message per 1,000 s: its window began long before the last minute, yet it is not
    over; pruning must not free it for a second message. Windows over for a minute go."""
    from gateway.outbox.shared_rate import KEEP_SECONDS, SharedRateLimit
    from gateway.outbox.shared_rate_tables import rate_budgets

    engine = create_engine(DatabaseConfig(url=database_url))
    now = 3_000_500.0  # half way through the window that began at 3,000,000
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(rate_budgets),
                [  # 1 s windows, over 61 s and 30 s ago
                    {"channel": "sms", "window_start": int(now) - KEEP_SECONDS - 2, "used": 1},
                    {"channel": "sms", "window_start": int(now) - 31, "used": 1},
                ],
            )
        processes = [SharedRateLimit(engine, clock=lambda: now) for _ in range(2)]
        assert await processes[0].reserve("slow", 1, rate=0.001) == 3_000_000
        assert await processes[1].reserve("slow", 1, rate=0.001) == 3_001_000
        assert await processes[0].reserve("sms", 1, rate=1) == int(now)
        async with engine.connect() as conn:
            kept = await conn.execute(
                sa.select(rate_budgets.c.channel, rate_budgets.c.window_start)
            )
            assert sorted(kept) == [
                ("slow", 3_000_000), ("slow", 3_001_000), ("sms", int(now) - 31), ("sms", int(now))
            ]  # fmt: skip
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("late_times", [1, 3])
async def test_a_request_that_oversleeps_its_window_books_again(
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    late_times: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker whose sleep until its booked window overran the window (an event loop held
    up by load) must not send then: it would land on the next window's bookings. It books
    again; after three overruns in a row it sends anyway, and says so, rather than never."""
    import logging

    from gateway.appkeys import DISPATCHER
    from gateway.db.schema import deliveries
    from gateway.outbox.shared_rate import SharedRateLimit
    from tests.support.config import make_config
    from tests.support.sms import broadcast, import_numbers, sms_world

    caplog.set_level(logging.WARNING, logger="warta.dispatch")
    waits: list[float] = []
    # A clock of the test's own (an hour ahead, whole seconds), moved only by the waits.
    now = [float(int(time.time()) + 3600)]

    async def oversleep(seconds: float, wake: object = None) -> None:
        # The first ``late_times`` waits overrun their window by a whole second.
        extra = 1.0 if len(waits) < late_times else 0.0
        waits.append(seconds)
        now[0] += seconds + extra

    phones = numbers(20)
    async with sms_world(
        aiohttp_client,
        make_config,
        database_url,
        keys,
        dispatch={"enabled": False, "shared_rate_limit": True},
        africastalking={"rate_per_second": 20, "batch_size": 20},
    ) as (world, sim):
        await import_numbers(world, phones)
        await broadcast(world)
        dispatcher = world.app[DISPATCHER]
        assert await dispatcher.start_due() == 1
        limit = SharedRateLimit(world.engine, clock=lambda: now[0], sleep=oversleep)
        dispatcher._shared_rate = limit
        # Every booking lands in a window that is full up to now, so each one must wait.
        real_reserve = limit.reserve

        async def reserve_ahead(channel: str, n: int, *, rate: float) -> float:
            await real_reserve(channel, 20, rate=rate)
            return await real_reserve(channel, n, rate=rate)

        limit.reserve = reserve_ahead  # type: ignore[method-assign]

        assert await dispatcher.run_once("sms") == 20
        async with world.engine.connect() as conn:
            rows = (await conn.execute(sa.select(deliveries.c.state, deliveries.c.attempts))).all()

    # Sent once each; the simulator reports at once, so some may be delivered already.
    assert {attempts for _, attempts in rows} == {1}
    assert {state for state, _ in rows} <= {"sent", "delivered"}
    assert sim.sent_count.duplicates() == {}
    assert set(dict(sim.sent_count.items())) == set(phones)
    warned = [r.getMessage() for r in caplog.records if "booked rate window" in r.getMessage()]
    if late_times < 3:
        # Booked again after each overrun, and sent in a window of its own.
        assert len(waits) == late_times + 1 and warned == []
    else:
        assert len(waits) == 3 and len(warned) == 1
        assert all(p not in warned[0] for p in phones)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_booking_must_leave_within_half_a_window_and_before_it_ends(
    database_url: str,
) -> None:
    from gateway.outbox.shared_rate import SharedRateLimit
    from gateway.ratelimit import TokenBucket

    engine = create_engine(DatabaseConfig(url=database_url))
    now = [2_000_000.7]  # far from the present, so nothing is pruned

    async def sleep(seconds: float, wake: object = None) -> None:
        now[0] += seconds

    limit = SharedRateLimit(engine, clock=lambda: now[0], sleep=sleep)
    local = TokenBucket(10, 10)
    try:
        # Into the window under way (2,000,000), booked at .7: by its end, not .7 + .5.
        assert await limit.acquire("sms", 6, rate=10, local=local) == 2_000_001.0
        # That window has 4 left: the next 6 go in the next one, half a window into it.
        assert await limit.acquire("sms", 6, rate=10, local=local) == 2_000_001.5
        assert now[0] == 2_000_001.0
    finally:
        await engine.dispose()
