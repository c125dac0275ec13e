"""No phone number, API token or key reaches a log record or an error body, in any flow."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain import Role
from tests.support.api_helpers import local_mobile, phone_forms
from tests.support.world import Answer, World

SUBSCRIBERS = "/api/v1/subscribers"
ANNOUNCEMENTS = "/api/v1/announcements"
NUMBERS = [local_mobile(n) for n in (11, 22, 33, 44, 55)]
INVALID = "0812-34"


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything at DEBUG, set before the app (and its engine) starts."""
    caplog.set_level(logging.DEBUG)
    yield caplog


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def record_text(record: logging.LogRecord) -> str:
    parts = [record.name, record.getMessage(), repr(record.args), record.exc_text or ""]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1]))
    parts.extend(repr(value) for name, value in vars(record).items() if name not in _STANDARD)
    return "\n".join(parts)


async def subscriber_flows(world: World) -> list[Answer]:
    first, second, third, fourth, fifth = NUMBERS
    answers = [
        await world.subscribe(first),
        await world.subscribe(f"+62 {second[1:4]} {second[4:8]} {second[8:]}", area_code="31"),
        await world.subscribe(f"62{first[1:]}"),  # duplicate in another form
        await world.subscribe(INVALID),
        await world.subscribe(third, channels=["telegram"]),  # no chat id
        await world.subscribe(third, agency=1),
    ]
    csv_text = "\n".join(
        [
            "phone,language,channels",
            f"{third},id,sms",
            f"{fourth},Bahasa,sms",
            f"{fifth},id,fax",
            f"{fifth},id,sms,extra",
            f"+62{third[1:]},id,sms",
            f"{INVALID},id,sms",
        ]
    )
    answers.append(
        await world.call(
            "POST",
            f"{SUBSCRIBERS}/import",
            role=Role.OPERATOR,
            data=csv_text,
            headers={"Content-Type": "text/csv"},
        )
    )
    answers.append(
        await world.call(
            "POST",
            f"{SUBSCRIBERS}/import",
            role=Role.OPERATOR,
            data=f"{first},id\n{second},en\n",  # no header: the first number is taken as one
            headers={"Content-Type": "text/csv"},
        )
    )
    for phone in (first, f"+62{second[1:]}", INVALID, fifth):
        answers.append(
            await world.call(
                "POST", f"{SUBSCRIBERS}/search", role=Role.OPERATOR, json={"phone": phone}
            )
        )
    answers.append(await world.call("GET", SUBSCRIBERS, role=Role.OPERATOR))
    answers.append(await world.call("DELETE", f"{SUBSCRIBERS}/{answers[0].body['id']}"))
    answers.append(await world.call("DELETE", f"{SUBSCRIBERS}/99999", role=Role.OPERATOR))
    answers.append(await world.call("GET", SUBSCRIBERS, role=Role.OPERATOR))
    answers.append(await world.call("POST", SUBSCRIBERS, role=Role.AUTHOR, json={"phone": fourth}))
    answers.append(
        await world.call(
            "POST",
            SUBSCRIBERS,
            role=None,
            json={"phone": fourth},
            headers={"Authorization": f"Bearer {world.tokens[0][Role.OPERATOR]}x"},
        )
    )
    return answers


async def announcement_flows(world: World) -> list[Answer]:
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    created = await world.announce(send_at=later, facts={"action": "Hubungi posko"})
    path = f"{ANNOUNCEMENTS}/{created['id']}"
    return [
        await world.call("POST", path + "/approve", role=Role.APPROVER),  # illegal: draft
        await world.call("POST", path + "/submit", role=Role.AUTHOR),
        await world.call("POST", path + "/approve", role=Role.APPROVER),
        await world.call("GET", path, role=Role.OPERATOR),
        await world.call("GET", path + "/preview", role=Role.AUTHOR),
        await world.call("GET", path + "/deliveries", role=Role.AUTHOR),
        await world.call("POST", path + "/cancel", role=Role.AUTHOR),
        await world.call("POST", path + "/cancel", role=Role.AUTHOR),  # illegal: cancelled
        await world.call("GET", f"{ANNOUNCEMENTS}/abc", role=Role.AUTHOR),
        await world.call("POST", ANNOUNCEMENTS, role=Role.AUTHOR, data="{not json"),
        await world.call("POST", ANNOUNCEMENTS, role=Role.AUTHOR, json={"title": 1}),
        await world.call("GET", ANNOUNCEMENTS, role=None),
        await world.call(
            "GET", ANNOUNCEMENTS, role=None, headers={"Authorization": "Bearer wrt_forged"}
        ),
    ]


async def test_no_number_token_or_key_in_logs_or_errors(
    debug_logs: pytest.LogCaptureFixture, world: World, keys: dict[str, str]
) -> None:
    answers = await subscriber_flows(world) + await announcement_flows(world)

    secrets = [form for number in NUMBERS for form in phone_forms(number)]
    secrets += [token for per_role in world.tokens for token in per_role.values()]
    secrets += list(keys.values())
    logged = [record_text(record) for record in debug_logs.records]
    errors = [str(a.body) for a in answers if a.status >= 400]

    # The capture saw the app at work, access log included (it would show a number in a URL).
    assert "aiohttp.access" in {record.name for record in debug_logs.records}
    assert [s for s in secrets if any(s in text for text in logged)] == []
    assert [s for s in secrets if any(s in text for text in errors)] == []
    assert sorted({a.status for a in answers}) == [200, 201, 204, 400, 401, 403, 404, 409, 422]
