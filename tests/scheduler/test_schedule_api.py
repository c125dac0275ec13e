"""The scheduler through the public API: recurrences on create, approval and cancellation of a
series, moving a send time (PATCH …/schedule), the series on GET, an agency's quiet hours, and
every error naming its field. A running scheduler is woken by each change, not by a sweep."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.clock import ManualClock
from gateway.db.schema import agencies, announcements, audit_events
from gateway.domain import Role
from gateway.store.audit import verify_chain
from scheduler.service import SCHEDULER, SchedulerSettings
from scheduler.tables import recurrence_instances, recurrences
from tests.scheduler.support import (
    approve,
    create_and_submit,
    delivery_states,
    scheduled_world,
    scheduler_of,
    status_of,
)
from tests.support.sms import import_numbers, numbers
from tests.support.world import World

ANNOUNCEMENTS = "/api/v1/announcements"
QUIET_HOURS = "/api/v1/agency/quiet-hours"
START = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)  # ManualClock's default: Monday 10:00 WIB
FIRST_MONDAY = datetime(2026, 1, 12, 0, 0, tzinfo=UTC)  # Monday 07:00 WIB
WEEKLY = {"cron": "0 7 * * 1", "timezone": "WIB"}


def at(delta: timedelta) -> str:
    return (START + delta).isoformat()


def draft(**fields: Any) -> dict[str, Any]:
    body = {"title": "Posyandu", "body": "Posyandu buka pukul 08.00.", "channels": ["sms"]}
    body.update(fields)
    return body


async def row_counts(world: World) -> dict[str, int]:
    async with world.engine.connect() as conn:
        return {
            table.name: int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in (announcements, recurrences, audit_events)
        }


async def audit_of(world: World, action: str) -> list[dict[str, Any]]:
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(audit_events)
            .where(audit_events.c.action == action)
            .order_by(audit_events.c.id)
        )
        return [dict(r) for r in rows.mappings()]


async def ticked_since(world: World, before: int, timeout: float = 10.0) -> None:
    """Wait until the scheduler finished a tick it was not asked for by the test."""
    scheduler = scheduler_of(world)
    deadline = time.monotonic() + timeout
    while scheduler.ticks <= before:
        assert time.monotonic() < deadline, "the scheduler was not woken"
        await asyncio.sleep(0.02)


async def wait_for_status(world: World, announcement_id: int, wanted: str) -> None:
    deadline = time.monotonic() + 10
    while (status := await status_of(world, announcement_id)) != wanted:
        assert time.monotonic() < deadline, f"still {status}, never {wanted}"
        await asyncio.sleep(0.02)


async def create_recurring(world: World, **recurrence: Any) -> dict[str, Any]:
    created = await world.call(
        "POST",
        ANNOUNCEMENTS,
        role=Role.AUTHOR,
        json=draft(send_at=at(timedelta(hours=1)), recurrence={**WEEKLY, **recurrence}),
    )
    assert created.status == 201, created.body
    body: dict[str, Any] = created.body
    return body


async def submit(world: World, announcement_id: int) -> None:
    answer = await world.call("POST", f"{ANNOUNCEMENTS}/{announcement_id}/submit", role=Role.AUTHOR)
    assert answer.status == 200, answer.body


# -- 1. recurrence on create ----------------------------------------------------------------


async def test_a_recurrence_is_stored_with_the_announcement(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await create_recurring(world, cron="0  7 * * mon", count=4, valid_for_minutes=90)
        shown = await world.call("GET", f"{ANNOUNCEMENTS}/{created['id']}", role=Role.OPERATOR)
        (event,) = await audit_of(world, "announcement.create")

        assert created["status"] == "draft"
        assert created["series"] == shown.body["series"]
        assert shown.body["series"] == {
            "role": "template",
            "series_id": shown.body["series"]["series_id"],
            "template_id": created["id"],
            "cron": "0 7 * * mon",
            "timezone": "Asia/Jakarta",
            "until": None,
            "count": 4,
            "valid_for_minutes": 90,
            "status": "pending",
            "next_run_at": None,
            "issued": 0,
            "skipped": 0,
            "occurrence_at": None,
        }
        assert event["after"]["recurrence"] == {
            "cron": "0 7 * * mon",
            "timezone": "Asia/Jakarta",
            "count": 4,
            "valid_for_minutes": 90,
        }


async def test_a_series_without_its_own_zone_is_read_in_the_agencys(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        async with world.engine.begin() as conn:
            await conn.execute(
                sa.update(agencies)
                .where(agencies.c.id == world.agency_ids[0])
                .values(timezone="Asia/Makassar")
            )
        created = await world.call(
            "POST", ANNOUNCEMENTS, role=Role.AUTHOR, json=draft(recurrence={"cron": "0 7 * * *"})
        )

        assert created.status == 201, created.body
        assert created.body["series"]["timezone"] == "Asia/Makassar"


BAD_CREATES = [
    pytest.param(draft(recurrence={"cron": "0 25 * * *"}), "recurrence.cron", id="cron hour 25"),
    pytest.param(draft(recurrence={"cron": "every monday"}), "recurrence.cron", id="cron words"),
    pytest.param(
        draft(recurrence={"cron": "0 7 * * 1", "timezone": "Mars/Olympus"}),
        "recurrence.timezone",
        id="unknown zone",
    ),
    pytest.param(
        draft(recurrence={"cron": "0 7 * * 1", "until": at(-timedelta(days=1))}),
        "recurrence.until",
        id="until in the past",
    ),
    pytest.param(
        draft(
            send_at=at(timedelta(days=3)),
            recurrence={"cron": "0 7 * * 1", "until": at(timedelta(days=2))},
        ),
        "recurrence.until",
        id="until before send_at",
    ),
    pytest.param(
        draft(recurrence={"cron": "0 7 * * 1", "colour": "red"}),
        "recurrence.colour",
        id="unknown recurrence field",
    ),
    pytest.param(
        draft(recurrence={"cron": "0 7 * * 1"}, expires_at=at(timedelta(days=1))),
        "expires_at",
        id="expires_at on a series",
    ),
    pytest.param(draft(send_at=at(-timedelta(minutes=1))), "send_at", id="send_at in the past"),
    pytest.param(
        draft(send_at=at(timedelta(hours=2)), expires_at=at(timedelta(hours=2))),
        "expires_at",
        id="expires_at equal to send_at",
    ),
    pytest.param(
        draft(send_at=at(timedelta(hours=2)), expires_at=at(timedelta(hours=1))),
        "expires_at",
        id="expires_at before send_at",
    ),
    pytest.param(draft(expires_at=at(timedelta(0))), "expires_at", id="expires_at now"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
async def test_bad_times_and_recurrences_are_refused_naming_the_field(
    aiohttp_client, database_url, keys, body, field
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        before = await row_counts(world)

        answer = await world.call("POST", ANNOUNCEMENTS, role=Role.AUTHOR, json=body)

        assert answer.status == 422, answer.body
        assert answer.body["error"]["code"] == "invalid"
        assert answer.body["error"]["field"] == field
        assert answer.body["error"]["message"].startswith(field)
        assert await row_counts(world) == before


async def test_a_series_that_cannot_be_stored_leaves_no_announcement(
    aiohttp_client, database_url, keys
):
    # The agency's zone is broken and the series names none: attaching fails after the
    # announcement's INSERT, in the same transaction, so nothing of it remains.
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        async with world.engine.begin() as conn:
            await conn.execute(
                sa.update(agencies)
                .where(agencies.c.id == world.agency_ids[0])
                .values(timezone="Nowhere/Atlantis")
            )
        before = await row_counts(world)

        answer = await world.call(
            "POST", ANNOUNCEMENTS, role=Role.AUTHOR, json=draft(recurrence={"cron": "0 7 * * 1"})
        )

        assert answer.status == 422, answer.body
        assert answer.body["error"]["field"] == "recurrence.timezone"
        assert await row_counts(world) == before


# -- 2. approve and cancel ----------------------------------------------------------------


async def test_approving_a_series_activates_it_in_the_same_step(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await create_recurring(world)
        await submit(world, created["id"])
        ticks = scheduler_of(world).ticks

        approved = await approve(world, created["id"])
        await ticked_since(world, ticks)
        (event,) = await audit_of(world, "announcement.approve")

        assert approved["status"] == "scheduled"
        assert approved["series"]["status"] == "active"
        assert datetime.fromisoformat(approved["series"]["next_run_at"]) == FIRST_MONDAY
        assert event["after"] == {"status": "scheduled"}


async def test_an_approved_announcement_starts_without_waiting_for_a_sweep(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(3))
        created = await create_and_submit(world)
        await scheduler_of(world).settle()  # the start-up tick is behind us; the sweep is hourly

        await approve(world, created["id"])

        await wait_for_status(world, created["id"], "sending")
        assert await delivery_states(world, created["id"]) == {"queued": 3}


async def test_cancelling_a_template_cancels_its_series(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await create_recurring(world)
        await submit(world, created["id"])
        await approve(world, created["id"])
        scheduler = scheduler_of(world)
        clock.set(FIRST_MONDAY - timedelta(minutes=5))
        assert (await scheduler.settle()).issued == 1
        ticks = scheduler.ticks

        cancelled = await world.call(
            "POST", f"{ANNOUNCEMENTS}/{created['id']}/cancel", role=Role.AUTHOR
        )
        await ticked_since(world, ticks)
        async with world.engine.connect() as conn:
            (occurrence_id,) = (
                await conn.execute(sa.select(recurrence_instances.c.announcement_id))
            ).scalars()
        (event,) = await audit_of(world, "announcement.cancel")

        assert cancelled.status == 200, cancelled.body
        assert cancelled.body["status"] == "cancelled"
        assert cancelled.body["series"]["status"] == "cancelled"
        assert await status_of(world, occurrence_id) == "cancelled"
        assert event["after"] == {"status": "cancelled", "occurrences_cancelled": 1}


# -- 3. PATCH …/schedule --------------------------------------------------------------------


async def test_moving_the_send_time_earlier_starts_it_now(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(2))
        expires = at(timedelta(hours=6))
        created = await create_and_submit(world, send_at=at(timedelta(hours=1)), expires_at=expires)
        await approve(world, created["id"])
        await scheduler_of(world).settle()
        assert await status_of(world, created["id"]) == "approved"

        moved = await world.call(
            "PATCH",
            f"{ANNOUNCEMENTS}/{created['id']}/schedule",
            role=Role.APPROVER,
            json={"send_at": START.isoformat()},
        )

        assert moved.status == 200, moved.body
        assert datetime.fromisoformat(moved.body["send_at"]) == START
        assert datetime.fromisoformat(moved.body["expires_at"]) == START + timedelta(hours=6)
        await wait_for_status(world, created["id"], "sending")
        (event,) = await audit_of(world, "announcement.schedule")
        assert event["subject_id"] == str(created["id"])
        assert event["before"] == {"send_at": at(timedelta(hours=1)), "expires_at": expires}
        assert event["after"] == {"send_at": START.isoformat(), "expires_at": expires}
        async with world.engine.connect() as conn:
            assert await verify_chain(conn) == []


async def test_a_field_left_out_keeps_its_value_and_null_clears_it(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await world.announce(send_at=at(timedelta(hours=1)))
        path = f"{ANNOUNCEMENTS}/{created['id']}/schedule"

        expiry = await world.call(
            "PATCH", path, role=Role.AUTHOR, json={"expires_at": at(timedelta(hours=5))}
        )
        cleared = await world.call("PATCH", path, role=Role.AUTHOR, json={"send_at": None})

        assert expiry.status == 200, expiry.body
        assert datetime.fromisoformat(expiry.body["send_at"]) == START + timedelta(hours=1)
        assert datetime.fromisoformat(expiry.body["expires_at"]) == START + timedelta(hours=5)
        assert cleared.status == 200, cleared.body
        assert cleared.body["send_at"] is None
        assert datetime.fromisoformat(cleared.body["expires_at"]) == START + timedelta(hours=5)
        assert cleared.body["status"] == "draft"


async def test_once_approved_only_an_approver_moves_the_time(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await create_and_submit(world, send_at=at(timedelta(hours=1)))
        path = f"{ANNOUNCEMENTS}/{created['id']}/schedule"
        by_author_pending = await world.call(
            "PATCH", path, role=Role.AUTHOR, json={"send_at": at(timedelta(hours=2))}
        )
        await approve(world, created["id"])

        by_author = await world.call(
            "PATCH", path, role=Role.AUTHOR, json={"send_at": at(timedelta(hours=3))}
        )
        by_operator = await world.call(
            "PATCH", path, role=Role.OPERATOR, json={"send_at": at(timedelta(hours=3))}
        )
        by_approver = await world.call(
            "PATCH", path, role=Role.APPROVER, json={"send_at": at(timedelta(hours=3))}
        )

        assert by_author_pending.status == 200, by_author_pending.body
        assert (by_author.status, by_author.body["error"]["code"]) == (403, "forbidden")
        assert (by_operator.status, by_operator.body["error"]["code"]) == (403, "forbidden")
        assert by_approver.status == 200, by_approver.body
        assert by_approver.body["status"] == "approved"


async def test_a_started_announcement_cannot_be_moved(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        await import_numbers(world, numbers(1))
        created = await create_and_submit(world)
        await approve(world, created["id"])
        await wait_for_status(world, created["id"], "sending")

        refused = await world.call(
            "PATCH",
            f"{ANNOUNCEMENTS}/{created['id']}/schedule",
            role=Role.APPROVER,
            json={"send_at": at(timedelta(hours=1))},
        )

        assert refused.status == 409, refused.body
        assert refused.body["error"]["code"] == "not_changeable"
        assert refused.body["error"]["field"] == "status"
        assert "sending" in refused.body["error"]["message"]
        assert await audit_of(world, "announcement.schedule") == []


async def test_an_approved_series_template_cannot_be_moved(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await create_recurring(world)
        path = f"{ANNOUNCEMENTS}/{created['id']}/schedule"
        expiry = await world.call(
            "PATCH", path, role=Role.AUTHOR, json={"expires_at": at(timedelta(days=1))}
        )
        await submit(world, created["id"])
        await approve(world, created["id"])

        later = await world.call(
            "PATCH", path, role=Role.APPROVER, json={"send_at": at(timedelta(days=1))}
        )

        assert (expiry.status, expiry.body["error"]["field"]) == (422, "expires_at")
        assert (later.status, later.body["error"]["code"]) == (409, "not_changeable")


async def test_another_agencys_announcement_is_not_found(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        theirs = await world.announce(agency=1, send_at=at(timedelta(hours=1)))

        answer = await world.call(
            "PATCH",
            f"{ANNOUNCEMENTS}/{theirs['id']}/schedule",
            role=Role.APPROVER,
            json={"send_at": at(timedelta(hours=2))},
        )
        missing = await world.call(
            "PATCH",
            f"{ANNOUNCEMENTS}/999999/schedule",
            role=Role.APPROVER,
            json={"send_at": at(timedelta(hours=2))},
        )

        assert (answer.status, answer.body["error"]["code"]) == (404, "not_found")
        assert missing.status == 404
        assert await status_of(world, theirs["id"]) == "draft"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"send_at": at(-timedelta(seconds=1))}, "send_at"),
        ({"send_at": "2026-01-05T12:00:00"}, "send_at"),  # no UTC offset
        ({"expires_at": at(timedelta(minutes=30))}, "expires_at"),  # before send_at (+1h)
        ({"send_at": at(timedelta(hours=4)), "expires_at": at(timedelta(hours=4))}, "expires_at"),
        ({"expires_at": at(-timedelta(hours=1)), "send_at": None}, "expires_at"),
        ({"colour": "red"}, "colour"),
        ({}, "send_at"),
    ],
)
async def test_bad_new_times_are_refused_naming_the_field(
    aiohttp_client, database_url, keys, body, field
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        created = await world.announce(send_at=at(timedelta(hours=1)))

        answer = await world.call(
            "PATCH", f"{ANNOUNCEMENTS}/{created['id']}/schedule", role=Role.AUTHOR, json=body
        )
        shown = await world.call("GET", f"{ANNOUNCEMENTS}/{created['id']}")

        assert answer.status == 422, answer.body
        assert answer.body["error"]["field"] == field
        assert datetime.fromisoformat(shown.body["send_at"]) == START + timedelta(hours=1)


# -- 4. the series on GET ---------------------------------------------------------------------


async def test_get_shows_the_series_of_a_template_and_an_occurrence(
    aiohttp_client, database_url, keys
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        plain = await world.announce()
        created = await create_recurring(world, count=2)
        await submit(world, created["id"])
        await approve(world, created["id"])
        clock.set(FIRST_MONDAY - timedelta(minutes=5))
        await scheduler_of(world).settle()
        async with world.engine.connect() as conn:
            occurrence_id = await conn.scalar(sa.select(recurrence_instances.c.announcement_id))

        template = await world.call("GET", f"{ANNOUNCEMENTS}/{created['id']}")
        occurrence = await world.call("GET", f"{ANNOUNCEMENTS}/{occurrence_id}")
        alone = await world.call("GET", f"{ANNOUNCEMENTS}/{plain['id']}")

        assert alone.body["series"] is None
        assert (template.body["series"]["role"], template.body["series"]["issued"]) == (
            "template",
            1,
        )
        series = occurrence.body["series"]
        assert (series["role"], series["template_id"], series["count"]) == (
            "occurrence",
            created["id"],
            2,
        )
        assert datetime.fromisoformat(series["occurrence_at"]) == FIRST_MONDAY
        assert datetime.fromisoformat(occurrence.body["send_at"]) == FIRST_MONDAY
        assert occurrence.body["status"] == "approved"


# -- 5. quiet hours -----------------------------------------------------------------------


async def test_quiet_hours_default_then_set_then_off(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        default = await world.call("GET", QUIET_HOURS, role=Role.AUTHOR)
        ticks = scheduler_of(world).ticks
        changed = await world.call(
            "PUT", QUIET_HOURS, role=Role.ADMIN, json={"quiet_hours": " 22:30-05:00 "}
        )
        await ticked_since(world, ticks)
        shown = await world.call("GET", QUIET_HOURS, role=Role.OPERATOR)
        other = await world.call("GET", QUIET_HOURS, role=Role.OPERATOR, agency=1)
        off = await world.call("PUT", QUIET_HOURS, role=Role.ADMIN, json={"quiet_hours": "off"})
        events = await audit_of(world, "agency.quiet_hours")

        assert default.status == 200
        assert default.body == {
            "quiet_hours": "21:00-06:00",
            "enabled": True,
            "source": "default",
            "timezone": "Asia/Jakarta",
        }
        assert changed.status == 200, changed.body
        assert shown.body == {**default.body, "quiet_hours": "22:30-05:00", "source": "agency"}
        assert other.body == default.body
        assert off.body == {
            **default.body,
            "quiet_hours": "off",
            "enabled": False,
            "source": "agency",
        }
        assert [(e["before"], e["after"]) for e in events] == [
            ({"quiet_hours": None}, {"quiet_hours": "22:30-05:00"}),
            ({"quiet_hours": "22:30-05:00"}, {"quiet_hours": "off"}),
        ]
        assert {e["agency_id"] for e in events} == {world.agency_ids[0]}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"quiet_hours": "25:00-06:00"}, 422, "quiet_hours"),
        ({"quiet_hours": "21:00"}, 422, "quiet_hours"),
        ({"quiet_hours": "9pm-6am"}, 422, "quiet_hours"),
        ({"quiet_hours": 2100}, 422, "quiet_hours"),
        ({}, 422, "quiet_hours"),
    ],
)
async def test_bad_quiet_hours_are_refused_naming_the_field(
    aiohttp_client, database_url, keys, body, status, field
):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        answer = await world.call("PUT", QUIET_HOURS, role=Role.ADMIN, json=body)
        shown = await world.call("GET", QUIET_HOURS)

        assert answer.status == status, answer.body
        assert answer.body["error"]["field"] == field
        assert shown.body["source"] == "default"
        assert await audit_of(world, "agency.quiet_hours") == []


@pytest.mark.parametrize("role", [Role.AUTHOR, Role.APPROVER, Role.OPERATOR])
async def test_only_an_admin_sets_quiet_hours(aiohttp_client, database_url, keys, role):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        answer = await world.call("PUT", QUIET_HOURS, role=role, json={"quiet_hours": "off"})

        assert (answer.status, answer.body["error"]["code"]) == (403, "forbidden")


# -- 6. OpenAPI, and a process without a scheduler ----------------------------------------------


async def test_the_routes_are_in_the_openapi_document(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock) as (world, _):
        document = (await world.call("GET", "/api/v1/openapi.json", role=None)).body

        paths = document["paths"]
        schemas = document["components"]["schemas"]
        assert "patch" in paths["/api/v1/announcements/{id}/schedule"]
        assert {"get", "put"} <= set(paths["/api/v1/agency/quiet-hours"])
        assert "recurrence" in schemas["AnnouncementIn"]["properties"]
        assert "series" in schemas["AnnouncementOut"]["properties"]
        assert {"cron", "timezone", "until", "count", "valid_for_minutes"} <= set(
            schemas["RecurrenceIn"]["properties"]
        )


async def test_without_a_scheduler_the_api_still_works(aiohttp_client, database_url, keys):
    clock = ManualClock(START)
    off = SchedulerSettings(enabled=False)
    async with scheduled_world(aiohttp_client, database_url, keys, clock=clock, settings=off) as (
        world,
        _,
    ):
        created = await create_and_submit(world, send_at=at(timedelta(hours=1)))
        await approve(world, created["id"])
        moved = await world.call(
            "PATCH",
            f"{ANNOUNCEMENTS}/{created['id']}/schedule",
            role=Role.APPROVER,
            json={"send_at": at(timedelta(hours=2))},
        )
        hours = await world.call("PUT", QUIET_HOURS, json={"quiet_hours": "off"})
        cancelled = await world.call(
            "POST", f"{ANNOUNCEMENTS}/{created['id']}/cancel", role=Role.APPROVER
        )

        assert world.app.get(SCHEDULER) is None
        assert (moved.status, hours.status, cancelled.status) == (200, 200, 200)
