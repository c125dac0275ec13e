"""Subscribers API: numbers normalised, masked, encrypted, blind-indexed, erased, imported."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.appkeys import VAULT
from gateway.db.schema import subscriber_channels, subscribers
from gateway.domain import Role
from tests.support.api_helpers import (
    delivery_states,
    local_mobile,
    phone_forms,
    queue_deliveries,
)
from tests.support.world import World

API = "/api/v1/subscribers"


def masked(local: str) -> str:
    return f"+62 {local[1:4]}-****-{local[-3:]}"


async def search(world: World, phone: str, agency: int = 0) -> list[dict[str, Any]]:
    answer = await world.call(
        "POST", f"{API}/search", role=Role.OPERATOR, agency=agency, json={"phone": phone}
    )
    assert answer.status == 200, answer.body
    return list(answer.body["items"])


async def stored(world: World, subscriber_id: int) -> dict[str, Any]:
    async with world.engine.connect() as conn:
        row = (
            (await conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id)))
            .mappings()
            .one()
        )
    return dict(row)


@pytest.mark.parametrize(
    "written",
    ["0812-3456-7890", "081234567890", "+6281234567890", "+62 812 3456 7890", "62 812-3456-7890"],
)
async def test_create_normalises_and_masks(world: World, written: str) -> None:
    answer = await world.subscribe(written, area_code="31.71", topics=["banjir"])

    assert answer.status == 201, answer.body
    assert answer.body["phone"] == "+62 812-****-890"
    assert answer.body["area_code"] == "31.71"
    assert answer.body["topics"] == ["banjir"]
    assert answer.body["channels"] == ["sms"]
    assert answer.body["erased"] is False
    row = await stored(world, answer.body["id"])
    assert world.app[VAULT].decrypt(row["phone_ciphertext"]) == "+6281234567890"


async def test_the_number_is_encrypted_and_indexed_with_a_keyed_hmac(
    world: World, keys: dict[str, str]
) -> None:
    e164 = "+6281234567890"
    answer = await world.subscribe("0812-3456-7890")

    row = await stored(world, answer.body["id"])

    index_key = base64.urlsafe_b64decode(keys["blind_index_key"])
    expected_index = hmac.new(index_key, e164.encode(), hashlib.sha256).hexdigest()
    ciphertext = bytes(row["phone_ciphertext"])
    for form in phone_forms("081234567890"):
        assert form.encode() not in ciphertext
    assert row["phone_index"] == expected_index
    assert row["phone_index"] != hashlib.sha256(e164.encode()).hexdigest()
    assert row["phone_masked"] == "+62 812-****-890"


async def test_the_raw_number_never_appears_in_a_response(world: World) -> None:
    local = "081234567890"
    created = await world.subscribe("0812-3456-7890")
    duplicate = await world.subscribe("+6281234567890")
    listed = await world.call("GET", API, role=Role.OPERATOR)
    found = await world.call(
        "POST", f"{API}/search", role=Role.OPERATOR, json={"phone": "+6281234567890"}
    )

    bodies = [str(a.body) for a in (created, duplicate, listed, found)]

    assert [form for body in bodies for form in phone_forms(local) if form in body] == []


async def test_the_same_number_in_another_form_is_a_409_on_phone(world: World) -> None:
    first = await world.subscribe("0812-3456-7890")
    again = await world.subscribe("+62 812 3456 7890")
    listed = await world.call("GET", API, role=Role.OPERATOR)

    assert first.status == 201
    assert again.status == 409
    assert (again.body["error"]["code"], again.body["error"]["field"]) == ("conflict", "phone")
    assert [s["id"] for s in listed.body["items"]] == [first.body["id"]]


async def test_channels_keep_their_order_of_preference(world: World) -> None:
    answer = await world.subscribe(
        local_mobile(1), channels=["whatsapp", "sms", "telegram"], telegram_chat_id=4242
    )

    assert answer.status == 201, answer.body
    assert answer.body["channels"] == ["whatsapp", "sms", "telegram"]


async def test_list_is_masked_and_pages_with_after_id(world: World) -> None:
    locals_ = [local_mobile(n) for n in range(5)]
    ids = [(await world.subscribe(n)).body["id"] for n in locals_]

    pages = []
    after = None
    while True:
        query = "?limit=2" + (f"&after_id={after}" if after is not None else "")
        answer = await world.call("GET", API + query, role=Role.OPERATOR)
        assert answer.status == 200, answer.body
        pages.append([(s["id"], s["phone"]) for s in answer.body["items"]])
        after = answer.body["next_after_id"]
        if after is None:
            break

    expected = [(i, masked(n)) for i, n in zip(ids, locals_, strict=True)]
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]


async def test_list_by_area_includes_the_areas_below(world: World) -> None:
    city = await world.subscribe(local_mobile(1), area_code="31.71")
    district = await world.subscribe(local_mobile(2), area_code="31.71.01")
    await world.subscribe(local_mobile(3), area_code="31.72")
    await world.subscribe(local_mobile(4))

    answer = await world.call("GET", f"{API}?area_code=31.71", role=Role.OPERATOR)

    assert [s["id"] for s in answer.body["items"]] == [city.body["id"], district.body["id"]]


async def test_search_by_full_number_in_any_form(world: World) -> None:
    target = await world.subscribe("0812-3456-7890")
    await world.subscribe(local_mobile(9))

    results = {
        form: [s["id"] for s in await search(world, form)] for form in phone_forms("081234567890")
    }
    missing = await search(world, local_mobile(10))

    assert results == {form: [target.body["id"]] for form in phone_forms("081234567890")}
    assert missing == []


async def test_erase_removes_the_number_and_cancels_queued_deliveries(world: World) -> None:
    local = "081234567890"
    person = await world.subscribe(local)
    neighbour = await world.subscribe(local_mobile(5))
    announcement = await world.announce()
    await queue_deliveries(
        world,
        announcement_id=announcement["id"],
        subscriber_ids=[person.body["id"], neighbour.body["id"]],
    )

    erased = await world.call("DELETE", f"{API}/{person.body['id']}", role=Role.ADMIN)
    listed = await world.call("GET", API, role=Role.OPERATOR)
    row = await stored(world, person.body["id"])
    found = await search(world, local)
    states = await delivery_states(world, announcement["id"])
    async with world.engine.connect() as conn:
        opted_out = await conn.scalar(
            sa.select(subscriber_channels.c.opted_out_at).where(
                subscriber_channels.c.subscriber_id == person.body["id"]
            )
        )

    assert erased.status == 204
    assert [(s["id"], s["phone"], s["erased"]) for s in listed.body["items"]] == [
        (person.body["id"], None, True),
        (neighbour.body["id"], masked(local_mobile(5)), False),
    ]
    assert (row["phone_ciphertext"], row["phone_index"], row["phone_masked"]) == (None, None, None)
    assert row["erased_at"] is not None
    assert opted_out is not None
    assert found == []
    assert states == ["cancelled", "queued"]


async def test_an_erased_number_may_subscribe_again(world: World) -> None:
    first = await world.subscribe("081234567890")
    await world.call("DELETE", f"{API}/{first.body['id']}", role=Role.ADMIN)

    again = await world.subscribe("+6281234567890")

    assert again.status == 201
    assert [s["id"] for s in await search(world, "081234567890")] == [again.body["id"]]


async def test_erasing_an_unknown_subscriber_is_a_404(world: World) -> None:
    answer = await world.call("DELETE", f"{API}/424242", role=Role.ADMIN)

    assert answer.status == 404
    assert (answer.body["error"]["code"], answer.body["error"]["field"]) == ("not_found", "id")


# --- CSV import --------------------------------------------------------------------------

IMPORT_ROWS = 100_000
HEADER = "phone,language,area_code,topics,channels,telegram_chat_id"
# Row index (0-based, after the header) -> (bad row, field the error must name).
BAD_ROWS = {
    10: ("12345,id,31.71,,sms,", "phone"),
    11: ("not a phone,id,,,,", "phone"),
    500: (f"{local_mobile(500)},Indonesia,31.71,,sms,", "language"),
    999: (f"{local_mobile(999)},id,31.71,,sms;fax,", "channels.1"),
    5_000: (f"{local_mobile(5_000)},id,31.71,,sms,,extra", "*"),
    20_000: (f"{local_mobile(20_000)},id,Jakarta,,sms,", "area_code"),
    30_000: (f"{local_mobile(30_000)},id,31,Banjir Besar,sms,", "topics.0"),
    40_000: (f"{local_mobile(40_000)},id,31,,telegram,", "telegram_chat_id"),
    50_000: (f"{local_mobile(50_000)},id,31,,telegram,abc", "telegram_chat_id"),
    99_998: ("+1 202 555,en,,,,", "phone"),
}
# Row index -> the earlier row whose number it repeats (in another written form).
DUPLICATE_ROWS = {70_000: 3, 99_999: 60_000}


def import_row(n: int) -> str:
    if n in BAD_ROWS:
        return BAD_ROWS[n][0]
    if n in DUPLICATE_ROWS:
        return f"+62{local_mobile(DUPLICATE_ROWS[n])[1:]},id,,,,"
    written = local_mobile(n)
    if n % 3 == 1:
        written = f"+62 {written[1:4]}-{written[4:8]}-{written[8:]}"
    if n % 100 == 7:
        return f'{written},en,31.71.0{n % 9},"banjir, kebakaran","whatsapp|sms",'
    return f"{written},id,31.71,banjir;gempa,sms,"


async def test_import_of_100000_rows_in_one_request(world: World) -> None:
    csv_text = "\n".join([HEADER, *(import_row(n) for n in range(IMPORT_ROWS))]) + "\n"
    good = [n for n in range(IMPORT_ROWS) if n not in BAD_ROWS and n not in DUPLICATE_ROWS]

    answer = await world.call(
        "POST",
        f"{API}/import",
        role=Role.OPERATOR,
        data=csv_text.encode(),
        headers={"Content-Type": "text/csv"},
    )

    assert answer.status == 200, str(answer.body)[:500]
    report = answer.body
    assert [(e["row"], e["field"]) for e in report["errors"]] == [
        (n + 2, field) for n, (_, field) in sorted(BAD_ROWS.items())
    ]
    assert report["received"] == IMPORT_ROWS
    assert report["imported"] == len(good)
    assert report["duplicates"] == len(DUPLICATE_ROWS)
    assert report["errors_truncated"] is False

    vault = world.app[VAULT]
    async with world.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(subscribers.c.phone_ciphertext).where(
                    subscribers.c.agency_id == world.agency_ids[0]
                )
            )
        ).all()
        channel_rows = await conn.scalar(
            sa.select(sa.func.count()).select_from(subscriber_channels)
        )
    stored_numbers = sorted(vault.decrypt(bytes(r.phone_ciphertext)) for r in rows)
    assert stored_numbers == sorted(f"+62{local_mobile(n)[1:]}" for n in good)
    assert channel_rows == sum(2 if n % 100 == 7 else 1 for n in good)

    with_lists = [s for s in await search(world, local_mobile(107))]
    assert [(s["language"], s["topics"], s["channels"]) for s in with_lists] == [
        ("en", ["banjir", "kebakaran"], ["whatsapp", "sms"])
    ]


async def test_import_reports_numbers_already_subscribed_as_duplicates(world: World) -> None:
    await world.subscribe(local_mobile(1))
    csv_text = f"phone\n{local_mobile(1)}\n{local_mobile(2)}\n"

    answer = await world.call(
        "POST",
        f"{API}/import",
        role=Role.OPERATOR,
        data=csv_text,
        headers={"Content-Type": "text/csv"},
    )

    assert answer.status == 200, answer.body
    assert (answer.body["received"], answer.body["imported"], answer.body["duplicates"]) == (
        2,
        1,
        1,
    )
    assert answer.body["errors"] == []


async def test_import_errors_count_lines_in_the_file(world: World) -> None:
    # A quoted cell may span lines and blank lines are skipped; errors still name the line.
    csv_text = (
        f'phone,topics\n{local_mobile(1)},"banjir;\ngempa"\n\n123,\n{local_mobile(3)},Bad Topic\n'
    )

    answer = await world.call(
        "POST",
        f"{API}/import",
        role=Role.OPERATOR,
        data=csv_text,
        headers={"Content-Type": "text/csv"},
    )

    assert answer.status == 200, answer.body
    assert [(e["row"], e["field"]) for e in answer.body["errors"]] == [
        (5, "phone"),
        (6, "topics.0"),
    ]
    assert answer.body["imported"] == 1
