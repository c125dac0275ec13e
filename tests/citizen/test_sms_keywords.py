"""SMS keywords over Africa's Talking's inbound SMS callback, on both databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gateway.citizen.keywords import parse_keyword
from gateway.db.schema import inbound_messages
from tests.citizen.conftest import CitizenWorld
from tests.support.sms import broadcast

ANI = "+6281200000011"
BUDI = "+6281200000022"
CITRA = "+6281200000033"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("DAFTAR", ("subscribe", "")),
        ("  daftar   3171 ", ("subscribe", "3171")),
        ("Daftar3171", ("subscribe", "3171")),
        ("reg 31.71", ("subscribe", "31.71")),
        ("stop.", ("stop", "")),
        ("Berhenti!", ("stop", "")),
        ("cek ab3-def", ("check", "AB3-DEF")),
        ("CHECKAB3DEF", ("check", "AB3DEF")),
        ("info", ("info", "")),
        ("bahasa  en", ("language", "EN")),
        ("LANG", ("language", "")),
        ("ＤＡＦＴＡＲ", ("subscribe", "")),
        ("REGARDS from Budi", None),
        ("stopped", None),
        ("kapan banjir surut?", None),
        ("", None),
    ],
)
def test_keywords_are_case_and_spacing_insensitive(
    text: str, expected: tuple[str, str] | None
) -> None:
    found = parse_keyword(text)
    assert (None if found is None else (found.action, found.argument)) == expected


async def test_keyword_table_replies_in_the_subscribers_language(citizen: CitizenWorld) -> None:
    news = await broadcast(citizen.world, title="Banjir di Kampung Melayu")
    code = news["verification_code"]
    table = [
        (
            ANI,
            "daftar 3171",
            "Terdaftar di Agency Alpha, wilayah 31.71. Berhenti: STOP. Bantuan: INFO",
        ),
        (ANI, "  Bahasa   en ", "Language changed to English."),
        (ANI, f"cek {code.lower()}", f"GENUINE. Code {code} is from Agency Alpha: Banjir di"),
        (ANI, "CHECK zzzzzz", "UNKNOWN. Code ZZZZZZ did not come from this service."),
        (ANI, "info", f"Latest: Banjir di Kampung Melayu (code {code}). Commands: REG"),
        (ANI, "LANG id", "Bahasa diubah ke Bahasa Indonesia."),
        (ANI, "CEK", "Ketik CEK <kode>, mis. CEK AB3DEF"),
        (ANI, "stop.", "Anda berhenti berlangganan Agency Alpha. Daftar lagi: DAFTAR"),
        (BUDI, "REG", "Subscribed to Agency Alpha, area all areas. To stop: STOP. Help: INFO"),
        (BUDI, "DAFTAR 99999", "Invalid area code. Example: REG 3171"),
        (BUDI, "BERHENTI", "You have unsubscribed from Agency Alpha. To come back: REG"),
        (CITRA, "STOP", "Nomor ini belum terdaftar. Ketik DAFTAR <kode wilayah>"),
        (CITRA, "lang", "This number is not subscribed. Send REG <area code>"),
    ]
    for n, (phone, text, reply) in enumerate(table):
        status = await citizen.sms(phone, text, message_id=f"ATXid_kw{n}")
        assert status == 200
        assert len(citizen.replies) == n + 1, text
        got = citizen.replies[-1]
        assert got.text.startswith(reply), (text, got.text)
        assert got.phone.e164 == phone
        assert got.in_reply_to == f"ATXid_kw{n}"
        assert got.agency_id == citizen.world.agency_ids[0]


async def test_unknown_text_lands_in_the_inbox_once_even_when_replayed(
    citizen: CitizenWorld,
) -> None:
    for _ in range(3):
        assert await citizen.sms(ANI, "Kapan banjir surut?", message_id="ATXid_q1") == 200
    assert await citizen.sms(ANI, "daftar", message_id="ATXid_q2") == 200
    assert await citizen.sms(ANI, "daftar", message_id="ATXid_q2") == 200
    async with citizen.world.engine.connect() as conn:
        rows = (
            (await conn.execute(sa.select(inbound_messages).order_by(inbound_messages.c.id)))
            .mappings()
            .all()
        )

    assert [(r["text"], r["handled"]) for r in rows] == [
        ("Kapan banjir surut?", "inbox"),
        ("daftar", "keyword"),
    ]
    assert len(citizen.replies) == 1
    first = rows[0]
    assert first["phone_masked"] == "+62 812-****-011"
    assert first["phone_index"] and len(first["phone_index"]) == 64
    assert first["agency_id"] == citizen.world.agency_ids[0]
    assert first["channel"] == "sms" and first["provider_message_id"] == "ATXid_q1"
    for row in rows:
        assert not any(ANI[1:] in str(value) for value in row.values())


async def test_inbound_sms_needs_its_fields_and_the_token(citizen: CitizenWorld) -> None:
    async with citizen.world.client.post(citizen.sms_path, data={"text": "hi"}) as response:
        assert response.status == 400
    forged = citizen.sms_path.replace("/africastalking/", "/africastalking/x")
    async with citizen.world.client.post(forged, data={"from": ANI, "text": "hi"}) as response:
        assert response.status == 403
