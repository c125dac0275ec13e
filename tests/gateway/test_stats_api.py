"""``GET /api/v1/stats`` through the real HTTP API on both databases: deliveries per channel ×
state over a window, and the inbox's median and 90th percentile time to first response on a
data set whose answers are known."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from gateway.appkeys import CLOCK
from gateway.clock import ManualClock
from gateway.config import WartaConfig
from gateway.db.schema import deliveries, subscribers
from gateway.domain import RECEIPTLESS_CHANNELS, DeliveryState, Role
from tests.gateway.test_inbox_api import INBOX, sms_in, threads
from tests.support.config import make_config
from tests.support.sms import broadcast, import_numbers, numbers, sms_world, wait_for
from tests.support.world import World

STATS = "/api/v1/stats"
T0 = ManualClock().now()
# Seconds from the message to the first reply, one thread each.
WAITS = (10, 20, 30, 40, 100)


def stamp(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def window(since: datetime, until: datetime) -> str:
    return f"?since={stamp(since)}&until={stamp(until)}"


@pytest.fixture
async def answered(
    aiohttp_client: Any, config: WartaConfig, keys: dict[str, str]
) -> tuple[World, ManualClock]:
    """Five citizens write at T0; the operator answers each after ``WAITS`` seconds."""
    clock = ManualClock(T0)
    world = await World.start(aiohttp_client, config, clock=clock)
    for n in range(len(WAITS)):
        await sms_in(world, keys, f"+62812555000{n}", f"Pesan nomor {n}", f"s-{n}")
    oldest_first = sorted(t["id"] for t in await threads(world))
    for thread_id, wait in zip(oldest_first, WAITS, strict=True):
        clock.set(T0 + timedelta(seconds=wait))
        answer = await world.call(
            "POST", f"{INBOX}/{thread_id}/reply", role=Role.OPERATOR, json={"text": "Baik."}
        )
        assert answer.status == 202, answer.body
        assert answer.body["thread"]["response_seconds"] == wait
    clock.set(T0 + timedelta(hours=1))
    return world, clock


async def test_percentiles_and_counts_over_a_window(answered: tuple[World, ManualClock]) -> None:
    world, _clock = answered

    whole = await world.call("GET", STATS + window(T0, T0 + timedelta(hours=1)), role=Role.OPERATOR)
    assert whole.status == 200, whole.body
    assert whole.body["agency"] == "alpha"
    # No SMS channel is configured here, so the replies wait in the outbox.
    assert whole.body["deliveries"] == [{"channel": "sms", "counts": {"queued": 5}, "total": 5}]
    # Sorted 10, 20, 30, 40, 100: median 30; p90 at rank 3.6 -> 40 + 0.6 × 60 = 76.
    assert whole.body["inbox"] == {
        "threads_opened": 5,
        "threads_answered": 5,
        "response_seconds_median": 30.0,
        "response_seconds_p90": 76.0,
    }

    # Answered before T0 + 35 s: 10, 20, 30 -> median 20, p90 20 + 0.8 × 10 = 28.
    early = await world.call(
        "GET", STATS + window(T0, T0 + timedelta(seconds=35)), role=Role.AUTHOR
    )
    assert early.body["inbox"]["threads_answered"] == 3
    assert early.body["inbox"]["response_seconds_median"] == 20.0
    assert early.body["inbox"]["response_seconds_p90"] == pytest.approx(28.0)
    # One answered thread: both percentiles are its time.
    one = await world.call(
        "GET",
        STATS + window(T0 + timedelta(seconds=95), T0 + timedelta(seconds=200)),
        role=Role.OPERATOR,
    )
    assert one.body["inbox"]["threads_answered"] == 1
    assert one.body["inbox"]["threads_opened"] == 0
    assert (
        one.body["inbox"]["response_seconds_median"],
        one.body["inbox"]["response_seconds_p90"],
    ) == (100.0, 100.0)
    assert one.body["deliveries"] == [{"channel": "sms", "counts": {"queued": 1}, "total": 1}]

    before = await world.call("GET", STATS + window(T0 - timedelta(days=1), T0), role=Role.OPERATOR)
    assert before.body["deliveries"] == []
    assert before.body["inbox"] == {
        "threads_opened": 0,
        "threads_answered": 0,
        "response_seconds_median": None,
        "response_seconds_p90": None,
    }
    # The default window is the last seven days, up to now.
    default = await world.call("GET", STATS, role=Role.OPERATOR)
    assert default.body["inbox"]["threads_answered"] == 5
    # Another agency sees its own (empty) figures.
    other = await world.call("GET", STATS, role=Role.OPERATOR, agency=1)
    assert (other.body["agency"], other.body["deliveries"]) == ("beta", [])
    assert other.body["inbox"]["threads_answered"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?since=yesterday", "since"),
        ("?since=2026-01-05T00:00:00", "since"),  # no time zone
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?since=2026-01-05T00:00:00Z&until=2026-01-05T00:00:00Z", "until"),
        ("?since=2026-01-06T00:00:00Z&until=2026-01-05T00:00:00Z", "until"),
        ("?since=2020-01-01T00:00:00Z&until=2026-01-05T00:00:00Z", "since"),
        ("?area=31", "area"),
    ],
)
async def test_bad_windows_are_422_naming_the_parameter(
    world: World, query: str, field: str
) -> None:
    answer = await world.call("GET", STATS + query, role=Role.OPERATOR)
    assert (answer.status, answer.body["error"]["field"]) == (422, field), answer.body


async def test_a_period_of_days_per_channel_state_and_area_with_reach(
    aiohttp_client: Any, database_url: str, keys: dict[str, str]
) -> None:
    """Two SMS broadcasts to the same citizens: every delivery counts, each citizen reached
    counts once; the number the simulator refuses is failed and reaches nobody."""
    async with sms_world(aiohttp_client, make_config, database_url, keys) as (world, _sim):
        # Area 31.71: three good numbers and one ending in 0000 (refused by the simulator).
        await import_numbers(world, numbers(3, start=55510001), area_code="31.71")
        await import_numbers(world, ["+6281255510000"], area_code="31.71")
        await import_numbers(world, numbers(2, start=55520001), area_code="32.73")
        for _ in range(2):
            sent = await broadcast(world)
            await wait_for(world, sent["id"], lambda counts, _b: counts.get("delivered", 0) == 5)
        today = world.app[CLOCK].now().astimezone(ZoneInfo("Asia/Jakarta")).date()
        period = f"?from={today.isoformat()}&to={today.isoformat()}"
        answer = await world.call("GET", STATS + period, role=Role.OPERATOR)
        assert answer.status == 200, answer.body
        body = answer.body
        assert body["timezone"] == "Asia/Jakarta"
        assert body["since"] == f"{today.isoformat()}T00:00:00+07:00"
        assert body["deliveries"] == [
            {"channel": "sms", "counts": {"delivered": 10, "failed": 2}, "total": 12}
        ]
        assert body["areas"] == [
            {"area": "31.71", "deliveries": 8, "delivered": 6, "reach": 3},
            {"area": "32.73", "deliveries": 4, "delivered": 4, "reach": 2},
        ]
        assert body["reach"] == 5

        yesterday = (today - timedelta(days=1)).isoformat()
        before = await world.call(
            "GET", f"{STATS}?from={yesterday}&to={yesterday}", role=Role.AUTHOR
        )
        assert (before.body["deliveries"], before.body["areas"], before.body["reach"]) == (
            [],
            [],
            0,
        )
        # Telegram never confirms delivery ("ok" is its last word): a sent Telegram message
        # reaches its citizen; an SMS still waiting for its report, or a message still being
        # sent, reaches nobody yet; a citizen reached on two channels counts once.
        await import_numbers(world, numbers(2, start=55530001), area_code="32.73")
        async with world.engine.begin() as conn:
            reached = (
                (
                    await conn.execute(
                        sa.select(deliveries).where(
                            deliveries.c.area_code == "31.71", deliveries.c.state == "delivered"
                        )
                    )
                )
                .mappings()
                .first()
            )
            assert reached is not None
            fresh, waiting = (
                await conn.scalars(
                    sa.select(subscribers.c.id).order_by(subscribers.c.id.desc()).limit(2)
                )
            ).all()
            common = {
                "agency_id": reached["agency_id"],
                "language": "id",
                "priority": 0,
                "next_attempt_at": reached["created_at"],
                "created_at": reached["created_at"],
            }
            await conn.execute(
                sa.insert(deliveries),
                [
                    {**common, "subscriber_id": reached["subscriber_id"], "area_code": "31.71",
                     "channel": "telegram", "state": "sent"},
                    {**common, "subscriber_id": fresh, "area_code": "32.73",
                     "channel": "telegram", "state": "sent"},
                    {**common, "subscriber_id": waiting, "area_code": "32.73",
                     "channel": "telegram", "state": "sending"},
                    {**common, "subscriber_id": waiting, "area_code": "32.73",
                     "channel": "sms", "state": "sent"},
                ],
            )  # fmt: skip
        again = (await world.call("GET", STATS + period, role=Role.OPERATOR)).body
        assert again["areas"] == [
            {"area": "31.71", "deliveries": 9, "delivered": 6, "reach": 3},
            {"area": "32.73", "deliveries": 7, "delivered": 4, "reach": 3},
        ]
        assert again["reach"] == 6

        other = await world.call("GET", STATS + period, role=Role.OPERATOR, agency=1)
        assert (other.body["agency"], other.body["areas"], other.body["reach"]) == (
            "beta",
            [],
            0,
        )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?from=2026-02-30", "from"),
        ("?from=yesterday", "from"),
        ("?to=2026-13-01", "to"),
        ("?from=2026-01-06&to=2026-01-05", "to"),
        ("?from=2024-01-01&to=2026-01-05", "from"),
        ("?from=2026-01-01&since=2026-01-01T00:00:00Z", "from"),
        ("?to=2026-01-01&until=2026-01-01T00:00:00Z", "to"),
        ("?to=9999-12-31", "to"),
    ],
)
async def test_bad_periods_are_422_naming_the_parameter(
    world: World, query: str, field: str
) -> None:
    answer = await world.call("GET", STATS + query, role=Role.OPERATOR)
    assert (answer.status, answer.body["error"]["field"]) == (422, field), answer.body


def test_receiptless_channels_are_the_personal_ones_whose_provider_never_says_delivered() -> None:
    from channels.sms.adapter import SmsChannel
    from channels.telegram import TelegramChannel
    from channels.voice.adapter import VoiceChannel
    from channels.whatsapp.adapter import WhatsAppChannel

    personal = [SmsChannel, TelegramChannel, WhatsAppChannel, VoiceChannel]
    never_delivered = {
        c.name for c in personal if DeliveryState.DELIVERED not in set(c.status_map.values())
    }
    assert never_delivered == RECEIPTLESS_CHANNELS == {"telegram"}
