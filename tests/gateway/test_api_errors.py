"""Bad input gets a clear 4xx in the one error shape, names the bad field, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.domain import Role
from tests.support.api_helpers import error_of, local_mobile, row_counts
from tests.support.world import World

ANNOUNCEMENTS = "/api/v1/announcements"
SUBSCRIBERS = "/api/v1/subscribers"
NOW = datetime.now(UTC)
SOON = (NOW + timedelta(days=1)).isoformat()
LATER = (NOW + timedelta(days=2)).isoformat()
PAST = (NOW - timedelta(days=1)).isoformat()
EXISTING_PHONE = local_mobile(1)  # subscribed before the table runs


def announcement(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"title": "Jalan ditutup", "channels": ["sms"]}
    body.update(fields)
    return {key: value for key, value in body.items() if value is not ...}


@dataclass(frozen=True)
class Bad:
    """One malformed request and the error it must get."""

    name: str
    method: str
    path: str
    status: int
    field: str | None
    code: str = "invalid"
    role: Role = Role.ADMIN
    json: Any = None
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)


JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}

CASES = [
    # The body as a whole.
    Bad("bad json", "POST", ANNOUNCEMENTS, 400, None, "bad_json", data='{"title": ', headers=JSON),
    Bad("empty body", "POST", ANNOUNCEMENTS, 400, None, "bad_json", data="", headers=JSON),
    Bad("blank body", "POST", ANNOUNCEMENTS, 400, None, "bad_json", data="  \n", headers=JSON),
    Bad("not utf-8", "POST", ANNOUNCEMENTS, 400, None, "bad_json", data=b'"\xff"', headers=JSON),
    Bad("json array", "POST", ANNOUNCEMENTS, 422, None, json=[announcement()]),
    Bad("json string", "POST", ANNOUNCEMENTS, 422, None, json="hello"),
    Bad("json null", "POST", ANNOUNCEMENTS, 422, None, data="null", headers=JSON),
    Bad(
        "oversized",
        "POST",
        ANNOUNCEMENTS,
        413,
        None,
        "too_large",
        data=json.dumps(announcement(body="x" * (1024 * 1024 + 1))),
        headers=JSON,
    ),
    # Fields of an announcement.
    Bad("title missing", "POST", ANNOUNCEMENTS, 422, "title", json=announcement(title=...)),
    Bad("title wrong type", "POST", ANNOUNCEMENTS, 422, "title", json=announcement(title=123)),
    Bad("title empty", "POST", ANNOUNCEMENTS, 422, "title", json=announcement(title="  ")),
    Bad("title too long", "POST", ANNOUNCEMENTS, 422, "title", json=announcement(title="x" * 201)),
    Bad(
        "channels missing", "POST", ANNOUNCEMENTS, 422, "channels", json=announcement(channels=...)
    ),
    Bad("channels empty", "POST", ANNOUNCEMENTS, 422, "channels", json=announcement(channels=[])),
    Bad(
        "channels a string",
        "POST",
        ANNOUNCEMENTS,
        422,
        "channels",
        json=announcement(channels="sms"),
    ),
    Bad(
        "unknown channel",
        "POST",
        ANNOUNCEMENTS,
        422,
        "channels.1",
        json=announcement(channels=["sms", "pigeon"]),
    ),
    Bad(
        "channel twice",
        "POST",
        ANNOUNCEMENTS,
        422,
        "channels",
        json=announcement(channels=["sms", "sms"]),
    ),
    Bad("unknown urgency", "POST", ANNOUNCEMENTS, 422, "urgency", json=announcement(urgency="meh")),
    Bad("unknown field", "POST", ANNOUNCEMENTS, 422, "colour", json=announcement(colour="red")),
    Bad("bad language", "POST", ANNOUNCEMENTS, 422, "language", json=announcement(language="ID!")),
    Bad("bad area", "POST", ANNOUNCEMENTS, 422, "areas.0", json=announcement(areas=["Jakarta"])),
    Bad(
        "facts.link not a url",
        "POST",
        ANNOUNCEMENTS,
        422,
        "facts.link",
        json=announcement(facts={"link": "not a link"}),
    ),
    Bad(
        "facts unknown key",
        "POST",
        ANNOUNCEMENTS,
        422,
        "facts.who",
        json=announcement(facts={"who": "me"}),
    ),
    Bad(
        "naive send_at",
        "POST",
        ANNOUNCEMENTS,
        422,
        "send_at",
        json=announcement(send_at="2030-01-01T08:00:00"),
    ),
    Bad(
        "send_at in the past",
        "POST",
        ANNOUNCEMENTS,
        422,
        "send_at",
        json=announcement(send_at=PAST),
    ),
    Bad(
        "expires_at before send_at",
        "POST",
        ANNOUNCEMENTS,
        422,
        "expires_at",
        json=announcement(send_at=LATER, expires_at=SOON),
    ),
    Bad(
        "expires_at in the past",
        "POST",
        ANNOUNCEMENTS,
        422,
        "expires_at",
        json=announcement(expires_at=PAST),
    ),
    Bad(
        "translation of the main language",
        "POST",
        ANNOUNCEMENTS,
        422,
        "translations",
        json=announcement(translations={"id": {"title": "Jalan ditutup"}}),
    ),
    # Ids and query strings.
    Bad("id not a number", "GET", ANNOUNCEMENTS + "/abc", 404, "id", "not_found"),
    Bad("id a superscript", "GET", ANNOUNCEMENTS + "/%C2%B2", 404, "id", "not_found"),
    Bad("id negative", "GET", ANNOUNCEMENTS + "/-1", 404, "id", "not_found"),
    Bad("id unknown", "GET", ANNOUNCEMENTS + "/987654", 404, "id", "not_found"),
    Bad("id too big", "GET", ANNOUNCEMENTS + "/9" * 1 + "9" * 30, 404, "id", "not_found"),
    Bad("submit unknown", "POST", ANNOUNCEMENTS + "/987654/submit", 404, "id", "not_found"),
    Bad("submit not a number", "POST", ANNOUNCEMENTS + "/x/submit", 404, "id", "not_found"),
    Bad("erase not a number", "DELETE", SUBSCRIBERS + "/abc", 404, "id", "not_found"),
    Bad("erase unknown", "DELETE", SUBSCRIBERS + "/987654", 404, "id", "not_found"),
    Bad("limit not a number", "GET", ANNOUNCEMENTS + "?limit=abc", 422, "limit"),
    Bad("limit zero", "GET", ANNOUNCEMENTS + "?limit=0", 422, "limit"),
    Bad("unknown status", "GET", ANNOUNCEMENTS + "?status=bogus", 422, "status"),
    Bad("unknown query", "GET", ANNOUNCEMENTS + "?colour=red", 422, "colour"),
    Bad("after_id negative", "GET", SUBSCRIBERS + "?after_id=-5", 422, "after_id"),
    # Subscribers.
    Bad("phone invalid", "POST", SUBSCRIBERS, 422, "phone", json={"phone": "0812-34"}),
    Bad("phone letters", "POST", SUBSCRIBERS, 422, "phone", json={"phone": "call me maybe"}),
    Bad("phone wrong type", "POST", SUBSCRIBERS, 422, "phone", json={"phone": 81234567890}),
    Bad("phone missing", "POST", SUBSCRIBERS, 422, "phone", json={"language": "id"}),
    Bad(
        "phone duplicate",
        "POST",
        SUBSCRIBERS,
        409,
        "phone",
        "conflict",
        json={"phone": "+62 812-0000-0001"},
    ),
    Bad(
        "subscriber channel unknown",
        "POST",
        SUBSCRIBERS,
        422,
        "channels.0",
        json={"phone": local_mobile(50), "channels": ["facebook"]},
    ),
    Bad(
        "telegram without chat id",
        "POST",
        SUBSCRIBERS,
        422,
        "telegram_chat_id",
        json={"phone": local_mobile(51), "channels": ["telegram"]},
    ),
    Bad(
        "subscriber language",
        "POST",
        SUBSCRIBERS,
        422,
        "language",
        json={"phone": local_mobile(52), "language": "Bahasa"},
    ),
    Bad(
        "consent channel",
        "POST",
        SUBSCRIBERS,
        422,
        "consent.channel",
        json={"phone": local_mobile(53), "consent": {"channel": "carrier pigeon"}},
    ),
    Bad(
        "search phone invalid",
        "POST",
        SUBSCRIBERS + "/search",
        422,
        "phone",
        json={"phone": "12"},
    ),
    Bad(
        "import not utf-8",
        "POST",
        SUBSCRIBERS + "/import",
        400,
        None,
        "bad_csv",
        data=b"phone\n\xff\xfe\n",
        headers=CSV,
    ),
    Bad(
        "import without phone column",
        "POST",
        SUBSCRIBERS + "/import",
        422,
        "phone",
        data=f"number\n{local_mobile(60)}\n",
        headers=CSV,
    ),
    Bad(
        "import unknown column",
        "POST",
        SUBSCRIBERS + "/import",
        422,
        "colour",
        data=f"phone,colour\n{local_mobile(61)},red\n",
        headers=CSV,
    ),
    # aiohttp's own answers, in the same shape.
    Bad("unknown route", "GET", "/api/v1/nothing-here", 404, None, "not_found"),
    Bad("method not allowed", "PUT", ANNOUNCEMENTS, 405, None, "method_not_allowed", json={}),
]


async def test_every_malformed_request_gets_a_clear_4xx_and_writes_nothing(world: World) -> None:
    assert (await world.subscribe(EXISTING_PHONE)).status == 201
    before = await row_counts(world)

    actual = {}
    for case in CASES:
        answer = await world.call(
            case.method,
            case.path,
            role=case.role,
            json=case.json,
            data=case.data,
            headers=case.headers,
        )
        error = error_of(answer.body) if isinstance(answer.body, dict) else {}
        actual[case.name] = (answer.status, error.get("code"), error.get("field"))
    after = await row_counts(world)

    assert actual == {case.name: (case.status, case.code, case.field) for case in CASES}
    assert after == before


async def test_oversized_body_without_a_length_is_refused(world: World) -> None:
    before = await row_counts(world)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "x", "channels": ["sms"], "body": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    answer = await world.call("POST", ANNOUNCEMENTS, role=Role.AUTHOR, data=chunks(), headers=JSON)

    assert answer.status == 413, answer.body
    assert error_of(answer.body)["code"] == "too_large"
    assert await row_counts(world) == before


async def test_method_not_allowed_keeps_the_allow_header(world: World) -> None:
    answer = await world.call("PUT", ANNOUNCEMENTS, role=Role.AUTHOR, json={})

    assert answer.status == 405
    assert set(answer.headers["Allow"].split(",")) == {"GET", "POST"}


async def test_messages_say_what_is_wrong(world: World) -> None:
    missing = await world.call("POST", ANNOUNCEMENTS, role=Role.AUTHOR, json={"channels": ["sms"]})
    extra = await world.call(
        "POST", ANNOUNCEMENTS, role=Role.AUTHOR, json=announcement(colour="red")
    )
    order = await world.call(
        "POST", ANNOUNCEMENTS, role=Role.AUTHOR, json=announcement(send_at=LATER, expires_at=SOON)
    )

    assert error_of(missing.body)["message"] == "title is required"
    assert error_of(extra.body)["message"] == "colour is not a known field"
    assert error_of(order.body)["message"] == "expires_at: must be after send_at"
