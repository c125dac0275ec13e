"""What a voice call costs before approval: the preview prices each call by its length.

A call is billed by the minute, so its price depends on how long it speaks: the message, the
repeat prompt, the wait for a key and the goodbye. The preview measures that from espeak-ng's
audio (the same audio a call in Bahasa Indonesia plays), prices it with ``[pricing]
voice_*``, and fan-out gives each voice delivery the same estimate, until the call's final
callback states what it cost.
"""

from __future__ import annotations

import functools
import math
import subprocess
import wave
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from channels.voice.speech import (
    SpeechRenderer,
    estimated_speech_seconds,
    pcm_seconds,
    wording_for,
)
from gateway.appkeys import BALANCES
from gateway.db.schema import agencies
from gateway.domain import Role
from gateway.pricing import billed_minutes
from tests.channels.test_voice_wired import (
    ANNOUNCEMENT,
    BUSY,
    EN_LISTENER,
    ID_LISTENER,
    subscribe,
    voice_rows,
    voice_world,
)
from tests.gateway.test_dashboard import add_user, browsers  # noqa: F401 - a fixture
from tests.support.config import make_config
from tests.support.sms import sms_world, wait_for

PER_MINUTE_ID = Decimal("1500")


def espeak_seconds(program: str, text: str, language: str, out: Path) -> float:
    """The length of espeak-ng's reading of ``text``, run here the way a call's audio is made."""
    subprocess.run(
        [program, "-b", "1", "-v", language, "-w", str(out), "--stdin"],
        input=text.encode(),
        check=True,
    )
    with wave.open(str(out), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


@pytest.mark.parametrize(
    ("billing_s", "per_network", "per_minute"),
    [
        (60, {}, PER_MINUTE_ID),
        # The subscribers' numbers are Telkomsel's: the network's price wins over the region's.
        (1, {"ID": {"Telkomsel": "1700"}}, Decimal("1700")),
    ],
)
async def test_the_preview_prices_each_call_by_its_length_and_the_deliveries_keep_it(
    espeak: str,
    aiohttp_client: Any,
    database_url: str,
    keys: dict[str, str],
    tmp_path: Path,
    billing_s: int,
    per_network: dict[str, dict[str, str]],
    per_minute: Decimal,
    browsers: Any,  # noqa: F811 - the fixture imported above
) -> None:
    pricing = {
        "voice_default_per_minute": "900",
        "voice_per_region": {"ID": str(PER_MINUTE_ID)},
        "voice_billing_s": billing_s,
        "voice_per_network": per_network,
    }
    async with voice_world(
        aiohttp_client, database_url, keys, tmp_path, play_calls=False, pricing=pricing
    ) as (world, _simulator):
        ids = {
            ID_LISTENER: await subscribe(world, ID_LISTENER, "id"),
            EN_LISTENER: await subscribe(world, EN_LISTENER, "en"),
            BUSY: await subscribe(world, BUSY, "id"),
        }
        created = await world.announce(**ANNOUNCEMENT)
        path = f"/api/v1/announcements/{created['id']}"
        preview = await world.call("GET", path + "/preview")
        assert preview.status == 200, preview.body
        voice = {r["language"]: r for r in preview.body["renditions"] if r["channel"] == "voice"}

        # Each call: message, prompt, goodbye as espeak-ng reads them, plus the 10 s wait.
        expected: dict[str, Decimal] = {}
        for language, rendition in voice.items():
            wording = wording_for(language)
            spoken = sum(
                espeak_seconds(espeak, part, language, tmp_path / f"{language}{i}.wav")
                for i, part in enumerate((rendition["text"], wording.prompt, wording.goodbye))
            )
            seconds = math.ceil(spoken + 10)
            assert rendition["call_seconds"] == seconds
            steps = math.ceil(seconds / billing_s)
            minutes = Decimal(steps * billing_s) / 60
            expected[language] = per_minute * minutes.quantize(Decimal("0.0001"), ROUND_CEILING)
            assert Decimal(str(rendition["estimated_cost"])) == (
                expected[language] * rendition["recipients"]
            )
        assert (voice["id"]["recipients"], voice["en"]["recipients"]) == (2, 1)
        assert Decimal(str(preview.body["estimated_cost"])) == 2 * expected["id"] + expected["en"]
        # Measured through a pipe: a preview redrawn as an author types leaves no audio files.
        assert list((tmp_path / "audio").glob("*")) == []
        author = browsers(world)
        await author.login(await add_user(world, Role.AUTHOR))
        page = await author.get(f"/dashboard/announcements/{created['id']}")
        assert page.status == 200
        for rendition in voice.values():
            assert (
                f"<dt>Lama satu panggilan</dt><dd>{rendition['call_seconds']} s</dd>" in page.text
            )

        submitted = await world.call("POST", path + "/submit", role=Role.AUTHOR)
        assert submitted.status == 200, submitted.body
        approved = await world.call("POST", path + "/approve", role=Role.APPROVER)
        assert approved.status == 200, approved.body
        await wait_for(world, created["id"], lambda counts, _: counts.get("sent", 0) == 3)
        rows = await voice_rows(world, created["id"])
        # No call has ended (the simulator calls nobody back): each keeps the estimate.
        assert {s: rows[i]["cost"] for s, i in ids.items()} == {
            ID_LISTENER: expected["id"],
            EN_LISTENER: expected["en"],
            BUSY: expected["id"],
        }
        shown = await world.call("GET", path)
        assert Decimal(str(shown.body["estimated_cost"])) == 2 * expected["id"] + expected["en"]


async def test_calls_count_against_the_monthly_budget(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    pricing = {"voice_per_region": {"ID": str(PER_MINUTE_ID)}}
    async with voice_world(
        aiohttp_client, database_url, keys, tmp_path, play_calls=False, pricing=pricing
    ) as (world, _simulator):
        for phone in (ID_LISTENER, BUSY):
            await subscribe(world, phone, "id")
        async with world.engine.begin() as conn:
            await conn.execute(
                sa.update(agencies)
                .where(agencies.c.id == world.agency_ids[0])
                .values(budget_limit=2 * PER_MINUTE_ID - 1)
            )
        created = await world.announce(**ANNOUNCEMENT)
        path = f"/api/v1/announcements/{created['id']}"
        assert (await world.call("POST", path + "/submit", role=Role.AUTHOR)).status == 200
        refused = await world.call("POST", path + "/approve", role=Role.APPROVER)
        assert refused.status == 409, refused.body
        assert refused.body["error"]["code"] == "over_budget"


@pytest.mark.parametrize(
    ("seconds", "billing_s", "minutes"),
    [
        (0, 60, "1"),
        (45, 60, "1"),
        (60, 60, "1"),
        (61, 60, "2"),
        (45, 1, "0.75"),
        (46, 1, "0.7667"),
        (44.2, 1, "0.75"),
        (50, 30, "1"),
    ],
)
def test_a_call_is_billed_by_every_started_step(
    seconds: float, billing_s: int, minutes: str
) -> None:
    assert billed_minutes(seconds, billing_s) == Decimal(minutes)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        (
            "id",
            "Ini pesan resmi dari BPBD DKI Jakarta. Banjir di Kecamatan Cempaka Putih. "
            "Kejadian: Air naik setinggi 80 cm. Waktu: Minggu, 29 November 2026 pukul 18.00 WIB. "
            "Kode verifikasi pesan ini: K 7 Q 2 M.",
        ),
        ("id", "Pemadaman listrik terjadwal 1234567 dan 98765 pada 12/11/2026."),
        ("id", wording_for("id").prompt),
        ("id", wording_for("id").goodbye),
        (
            "en",
            "This is an official message from Jakarta Disaster Agency. Flood in Cempaka "
            "Putih. When: Sunday, 29 November 2026 at 18:00 WIB. The verification code of this "
            "message is: K 7 Q 2 M.",
        ),
        ("en", "Scheduled outage 1234567 and 98765 on 12/11/2026."),
        ("en", wording_for("en").prompt),
        ("en", wording_for("en").goodbye),
    ],
)
def test_the_guess_from_the_text_errs_long_but_not_wildly(
    espeak: str, tmp_path: Path, language: str, text: str
) -> None:
    spoken = espeak_seconds(espeak, text, language, tmp_path / "sample.wav")
    assert spoken <= estimated_speech_seconds(text) <= 2.2 * spoken


async def test_without_espeak_the_length_is_guessed_from_the_text(tmp_path: Path) -> None:
    renderer = SpeechRenderer(
        tmp_path / "audio", "http://gateway.test", program=str(tmp_path / "no-espeak-ng")
    )
    text = "Banjir di Kecamatan Cempaka Putih pada 29 November 2026."
    assert await renderer.seconds(text, "id") == estimated_speech_seconds(text)
    assert await renderer.call_seconds(text, "id", digits_timeout=7) == (
        estimated_speech_seconds(text)
        + estimated_speech_seconds(wording_for("id").prompt)
        + estimated_speech_seconds(wording_for("id").goodbye)
        + 7
    )


async def test_sms_and_calls_paid_from_one_account_are_set_against_its_balance_together(
    aiohttp_client: Any, database_url: str, keys: dict[str, str], tmp_path: Path
) -> None:
    with_voice = functools.partial(
        make_config,
        data_dir=str(tmp_path),
        # Only previewed here, never called: the address is never dialled.
        voice={"enabled": True, "caller_number": "+62215550100", "base_url": "http://127.0.0.1:9"},
    )
    async with sms_world(aiohttp_client, with_voice, database_url, keys) as (world, sim):
        for phone in (ID_LISTENER, BUSY):
            answer = await world.subscribe(phone, language="id", channels=["sms", "voice"])
            assert answer.status == 201, answer.body
        created = await world.announce(**{**ANNOUNCEMENT, "channels": ["sms", "voice"]})

        async def preview() -> dict[str, Any]:
            world.app[BALANCES]._known.clear()  # read the balance anew
            answer = await world.call("GET", f"/api/v1/announcements/{created['id']}/preview")
            assert answer.status == 200, answer.body
            body: dict[str, Any] = answer.body
            return body

        sim.balance = Decimal("1000000")
        body = await preview()
        cost = {
            channel: sum(
                (
                    Decimal(str(r["estimated_cost"]))
                    for r in body["renditions"]
                    if r["channel"] == channel
                ),
                Decimal(0),
            )
            for channel in ("sms", "voice")
        }
        assert cost["sms"] > 0 and cost["voice"] > 0
        (balance,) = body["balances"]
        assert balance["channels"] == ["sms", "voice"]
        assert Decimal(balance["estimated_cost"]) == cost["sms"] + cost["voice"]
        assert balance["enough"] is True and body["problems"] == []

        # Enough for the SMS alone, not for the calls too.
        sim.balance = cost["sms"] + cost["voice"] / 2
        body = await preview()
        (balance,) = body["balances"]
        assert balance["enough"] is False
        (problem,) = body["problems"]
        assert problem.startswith(
            f"sms+voice: the estimated cost (IDR {cost['sms'] + cost['voice']}"
        )
        assert "% of it would go out before the channels wait for a top-up" in problem


def test_audio_from_a_pipe_is_timed_by_its_data(espeak: str, tmp_path: Path) -> None:
    text = wording_for("id").prompt
    piped = subprocess.run(
        [espeak, "-b", "1", "-v", "id", "--stdout", "--stdin"],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert pcm_seconds(piped) == espeak_seconds(espeak, text, "id", tmp_path / "prompt.wav")
    for broken in (b"", b"RIFF\x00\x00\x00\x00WAVE", piped[:30], b"not audio at all" * 4):
        with pytest.raises(ValueError):
            pcm_seconds(broken)


async def test_a_length_once_measured_is_not_measured_again(espeak: str, tmp_path: Path) -> None:
    renderer = SpeechRenderer(tmp_path / "audio", "http://gateway.test", program=espeak)
    runs: list[str] = []
    speak = renderer._espeak

    async def counted(command: list[str], text: str) -> bytes:
        runs.append(text)
        return await speak(command, text)

    renderer._espeak = counted  # type: ignore[method-assign]
    first = await renderer.call_seconds("Banjir di Jakarta Utara.", "id")
    assert len(runs) == 3  # message, prompt, goodbye
    assert await renderer.call_seconds("Banjir di Jakarta Utara.", "id") == first
    assert len(runs) == 3
    await renderer.call_seconds("Banjir di Jakarta Barat.", "id")
    assert runs[3:] == ["Banjir di Jakarta Barat."]  # the prompt and goodbye are known
