"""The USSD menu end to end: Africa's Talking's wire format over HTTP, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from channels.africastalking.ussd_sim import play
from gateway.db.schema import subscriber_channels, subscribers
from tests.citizen.conftest import CitizenWorld
from tests.support.api_helpers import delivery_states, local_mobile, queue_deliveries
from tests.support.sms import broadcast

PHONE = "+6281200000001"


async def screens(citizen: CitizenWorld, inputs: list[str], phone: str = PHONE) -> list[str]:
    return await play(citizen.ussd_url, phone, inputs)


async def test_latest_is_paged_and_read_screen_by_screen_with_next_and_back(
    citizen: CitizenWorld,
) -> None:
    long_body = " ".join(f"Kalimat nomor {n} tentang banjir di Jalan Merdeka." for n in range(12))
    for n in range(1, 5):
        await broadcast(citizen.world, title=f"Kabar {n}", body=long_body if n == 4 else "Pendek.")
    await broadcast(citizen.world, agency=1, title="Kabar agensi lain")
    await citizen.world.announce(title="Masih draf")

    shown = await screens(citizen, ["1", "9", "0", "1", "9", "9", "0", "0", "0", "00"])
    first, second, again, reading, page2, page3, back2, back1, list_again, home = shown[1:]

    assert first.startswith("CON Info terbaru 1/2\n1 Kabar 4\n2 Kabar 3\n3 Kabar 2\n9 Lanjut")
    assert second.startswith("CON Info terbaru 2/2\n1 Kabar 1\n")
    assert "9 Lanjut" not in second
    assert again == first
    assert reading.startswith("CON Kabar 4\n")
    assert "Kode " in reading and "1/" in reading and "9 Lanjut" in reading
    assert page2 != reading and page2.splitlines()[-1].startswith("2/")
    assert page3.splitlines()[-1].startswith("3/")
    assert back2 == page2
    assert back1 == reading
    assert list_again == first
    assert home.startswith("CON Agency Alpha\n1 Info terbaru")
    assert all("draf" not in s and "agensi lain" not in s for s in shown)
    assert all(len(s) <= 160 and s[:4] in ("CON ", "END ") for s in shown)


async def test_latest_follows_the_subscribers_area(citizen: CitizenWorld) -> None:
    await citizen.world.subscribe(local_mobile(7), area_code="31.71")
    await broadcast(citizen.world, title="Untuk provinsi 31", areas=["31"])
    await broadcast(citizen.world, title="Untuk provinsi 32", areas=["32"])
    await broadcast(citizen.world, title="Untuk semua")

    shown = await screens(citizen, ["1"], phone=local_mobile(7))

    assert "Untuk semua" in shown[1] and "Untuk provinsi 31" in shown[1]
    assert "provinsi 32" not in shown[1]


async def test_a_genuine_and_a_fake_code(citizen: CitizenWorld) -> None:
    genuine = await broadcast(citizen.world, title="Air bersih gratis")
    draft = await citizen.world.announce(title="Belum disetujui")

    good = await screens(citizen, ["2", genuine["verification_code"].lower()])
    fake = await screens(citizen, ["2", "ZZZZZZ"])
    unapproved = await screens(citizen, ["2", draft["verification_code"]])
    malformed = await screens(citizen, ["2", "12"])

    assert good[2].startswith(f"CON ASLI. Kode {genuine['verification_code']} dari Agency Alpha")
    assert "Air bersih gratis" in good[2]
    assert fake[2].startswith("CON TIDAK DIKENAL. Kode ZZZZZZ")
    assert unapproved[2].startswith("CON TIDAK DIKENAL.")
    assert malformed[2].startswith("CON Kode harus 6 huruf/angka.\nKetik kode")


async def test_subscribe_then_unsubscribe_takes_effect_at_once(citizen: CitizenWorld) -> None:
    joined = await screens(citizen, ["3", "3171", "3", "1"])
    async with citizen.world.engine.connect() as conn:
        person = (
            await conn.execute(sa.select(subscribers).where(subscribers.c.area_code == "31.71"))
        ).one()
    announcement = await citizen.world.announce()
    await queue_deliveries(
        citizen.world, announcement_id=announcement["id"], subscriber_ids=[person.id]
    )
    left = await screens(citizen, ["4", "2"])
    again = await screens(citizen, ["4", "1"])
    async with citizen.world.engine.connect() as conn:
        choices = dict(
            (
                await conn.execute(
                    sa.select(
                        subscriber_channels.c.channel, subscriber_channels.c.opted_out_at
                    ).where(subscriber_channels.c.subscriber_id == person.id)
                )
            ).all()
        )

    assert joined[3].startswith("CON Terima info Agency Alpha lewat SMS dan telepon di nomor ini?")
    assert joined[4] == (
        "END Terima kasih, Anda terdaftar. Wilayah: 31.71. Berhenti: menu 4 atau SMS STOP."
    )
    assert person.consent_channel == "ussd"
    assert person.consent_text.startswith("Terima info Agency Alpha lewat SMS dan telepon")
    assert person.phone_masked == "+62 812-****-001"
    assert left[2].startswith("END Selesai. Anda tidak menerima info lewat SMS lagi.")
    assert await delivery_states(citizen.world, announcement["id"]) == ["cancelled"]
    assert choices["sms"] is not None and choices["voice"] is not None
    assert again[2].startswith("END Selesai.")


async def test_unsubscribing_a_stranger_says_so(citizen: CitizenWorld) -> None:
    shown = await screens(citizen, ["4"], phone="+6281200000099")
    assert shown[1] == "END Nomor ini belum terdaftar. Daftar: menu 3."


async def test_language_change_lasts_for_a_subscriber(citizen: CitizenWorld) -> None:
    await screens(citizen, ["3", "1", "1", "1"])
    changed = await screens(citizen, ["5", "2"])
    next_call = await screens(citizen, [])

    assert changed[2].startswith("CON Language: English.\nAgency Alpha\n1 Latest news")
    assert next_call[0].startswith("CON Agency Alpha\n1 Latest news")


async def test_a_replayed_history_gives_the_same_screen_and_subscribes_once(
    citizen: CitizenWorld,
) -> None:
    form = {
        "sessionId": "ATUid_replayed",
        "serviceCode": "*384*123#",
        "phoneNumber": PHONE,
        "networkCode": "51010",
        "text": "3*1*1*1",
    }
    answers = []
    for _ in range(2):
        async with citizen.world.client.post(citizen.ussd_path, data=form) as response:
            assert response.content_type == "text/plain"
            answers.append(await response.text())
    async with citizen.world.engine.connect() as conn:
        count = await conn.scalar(sa.select(sa.func.count()).select_from(subscribers))

    assert answers[0] == answers[1]
    assert answers[0].startswith("END Terima kasih")
    assert count == 1


async def test_bad_requests_get_an_end_screen_never_a_500(citizen: CitizenWorld) -> None:
    cases = [
        {},
        {"sessionId": "s1", "text": ""},
        {"sessionId": "s1", "phoneNumber": "not a number", "text": "1"},
        {"phoneNumber": PHONE, "text": "1"},
        {"sessionId": "s1", "phoneNumber": PHONE, "text": "1*" * 2_000},
        {"sessionId": "s1", "phoneNumber": PHONE, "text": "*".join(["9"] * 80)},
    ]
    answers = []
    for form in cases:
        async with citizen.world.client.post(citizen.ussd_path, data=form) as response:
            answers.append((response.status, await response.text()))
    async with citizen.world.client.post(citizen.ussd_path, data=b"\xff\x00garbage") as response:
        answers.append((response.status, await response.text()))

    for status, text in answers:
        assert status == 200
        assert text.startswith("END ") and len(text) <= 160


async def test_a_wrong_token_is_refused(citizen: CitizenWorld) -> None:
    url = citizen.ussd_path.replace("/callbacks/africastalking/", "/callbacks/africastalking/x")
    async with citizen.world.client.post(url, data={"sessionId": "s", "text": ""}) as response:
        assert response.status == 403


async def test_the_terminal_player_shows_each_screen(citizen: CitizenWorld) -> None:
    from channels.africastalking.ussd_sim import interactive

    typed = iter(["4"])
    shown: list[str] = []

    def read() -> str:
        return next(typed)

    await interactive(citizen.ussd_url, PHONE, read=read, write=shown.append)

    assert shown[0].startswith("CON Agency Alpha")
    assert shown[1] == "END Nomor ini belum terdaftar. Daftar: menu 3."


async def test_a_malformed_request_is_answered_in_the_callers_language(
    citizen: CitizenWorld,
) -> None:
    await screens(citizen, ["3", "1", "1", "1"])
    await screens(citizen, ["5", "2"])
    form = {"phoneNumber": PHONE, "text": "1"}
    async with citizen.world.client.post(citizen.ussd_path, data=form) as response:
        assert await response.text() == "END The request could not be read. Please dial again."
