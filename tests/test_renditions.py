"""Renditions: every built-in template, shortening, the parity check and template faults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from channels.base import Channel, OutgoingMessage, SendResult
from gateway.renditions import (
    DEFAULT_TEMPLATES_DIR,
    SHORTENING_STEPS,
    WEB_PAGE,
    AnnouncementContent,
    Facts,
    PageLimits,
    Renderer,
    TemplateMissing,
    TemplateProblem,
)

WIB = timezone(timedelta(hours=7))


class _Dummy(Channel):
    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        return []


class SmsLike(_Dummy):
    name = "sms"
    encoding = "gsm7"
    max_segments = 3
    max_length = 459


class XLike(_Dummy):
    name = "x"
    reach = "social"
    max_length = 280


class VoiceLike(_Dummy):
    name = "voice"
    max_length = 1500
    supports_links = False


class TelegramLike(_Dummy):
    name = "telegram"


class WhatsappLike(_Dummy):
    name = "whatsapp"


class FacebookLike(_Dummy):
    name = "facebook"
    reach = "social"


class MastodonLike(_Dummy):
    name = "mastodon"
    reach = "social"
    max_length = 500


CHANNELS: list[type[Channel] | PageLimits] = [
    SmsLike,
    VoiceLike,
    TelegramLike,
    WhatsappLike,
    FacebookLike,
    XLike,
    MastodonLike,
    WEB_PAGE,
]

FACTS = Facts(
    what="Banjir setinggi 50 cm",
    when=datetime(2025, 3, 3, 14, 0, tzinfo=WIB),
    where="Kel. Cawang & Bidara Cina",
    action="Matikan listrik, mengungsi ke posko RW 05",
    link="https://bpbd.jakarta.go.id/banjir",
)


def content(language: str = "id", **changes: object) -> AnnouncementContent:
    base = AnnouncementContent(
        title="Banjir di Jakarta Timur",
        body="Hujan deras sejak pagi. Warga diminta waspada.",
        facts=FACTS,
        verification_code="K7P2QX",
        public_url="https://warta.example.go.id/a/K7P2QX",
        agency_name="BPBD DKI Jakarta",
        language=language,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def write(root: Path, files: dict[str, str]) -> Renderer:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Renderer(root)


# ---- the built-in templates -------------------------------------------------------------------


def test_every_builtin_template_loads(renderer: Renderer) -> None:
    checked = renderer.check_all(CHANNELS)
    assert renderer.languages() == ["en", "id"]
    template_files = {
        f"{path.parent.name}/{path.name}" for path in DEFAULT_TEMPLATES_DIR.glob("*/*.j2")
    }
    assert set(checked) == template_files
    assert len(checked) == 2 * 9  # two languages: eight channels and the web page each


@pytest.mark.parametrize("language", ["id", "en"])
@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.name)
@pytest.mark.parametrize("urgency", ["normal", "emergency"])
def test_every_channel_and_language_carries_every_fact(
    renderer: Renderer, channel: type[Channel] | PageLimits, language: str, urgency: str
) -> None:
    rendition = renderer.render(channel, content(language, urgency=urgency))
    assert rendition.fits, rendition.problems
    assert rendition.missing_facts == ()
    assert rendition.problems == ()
    assert (rendition.channel, rendition.language) == (channel.name, language)
    assert rendition.characters == len(rendition.text) <= channel.max_length
    assert "None" not in rendition.text


@pytest.mark.parametrize("language", ["id", "en"])
@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.name)
def test_no_facts_and_no_body(
    renderer: Renderer, channel: type[Channel] | PageLimits, language: str
) -> None:
    rendition = renderer.render(channel, content(language, facts=Facts(), body=""))
    assert rendition.fits
    assert rendition.missing_facts == ()
    assert "None" not in rendition.text
    assert "\n\n\n" not in rendition.text


def test_indonesian_sms_reads_naturally(renderer: Renderer) -> None:
    text = renderer.render(SmsLike, content("id")).text
    for words in ("Kode verifikasi: K7P2QX", "Cek keaslian: https://", "Info lengkap: https://"):
        assert words in text
    assert "Waktu: 3 Mar 2025 14.00 WIB" in text


def test_voice_spells_the_code_and_reads_no_links(renderer: Renderer) -> None:
    rendition = renderer.render(VoiceLike, content("id"))
    assert "K 7 P 2 Q X" in rendition.text
    assert "http" not in rendition.text
    assert "Senin, 3 Maret 2025 pukul 14.00 WIB" in rendition.text
    assert rendition.missing_facts == ()


def test_emergency_is_announced_first(renderer: Renderer) -> None:
    sms = renderer.render(SmsLike, content("id", urgency="emergency")).text
    assert sms.startswith("PERINGATAN DARURAT")
    assert renderer.render(SmsLike, content("en", urgency="emergency")).text.startswith(
        "EMERGENCY WARNING"
    )


def test_sms_segments_follow_gsm_rules(renderer: Renderer) -> None:
    rendition = renderer.render(SmsLike, content("id"))
    assert rendition.encoding == "gsm7"
    assert rendition.sms is not None
    assert rendition.segments == rendition.sms.segments >= 1
    unicode_channel = renderer.render(TelegramLike, content("id"))
    assert (unicode_channel.encoding, unicode_channel.segments) == ("unicode", 1)


# ---- shortening --------------------------------------------------------------------------------


def test_long_sms_body_is_dropped_to_fit_without_cutting_facts(renderer: Renderer) -> None:
    long_body = "Hujan deras diperkirakan turun sepanjang hari di seluruh wilayah. " * 12
    rendition = renderer.render(SmsLike, content("id", body=long_body))
    assert rendition.fits
    assert rendition.segments <= 3
    assert rendition.shortened_steps == ("body dropped",)
    assert rendition.level == 1
    assert "Hujan deras" not in rendition.text
    assert rendition.missing_facts == ()
    for fact in (FACTS.what, FACTS.where, FACTS.action, FACTS.link, "K7P2QX"):
        assert fact is not None
        assert fact in rendition.text


def test_shortening_goes_further_and_only_reports_steps_that_changed_something(
    renderer: Renderer,
) -> None:
    title = "Peringatan dini cuaca ekstrem untuk wilayah Jakarta Timur dan sekitarnya"
    facts = replace(FACTS, action="Segera mengungsi", link="https://bpbd.go.id/b")
    rendition = renderer.render(XLike, content("id", title=title, facts=facts))
    assert rendition.fits
    assert rendition.level == 2
    assert rendition.shortened_steps == ("body dropped", "title shortened")
    assert title not in rendition.text
    assert rendition.text.startswith("Peringatan dini cuaca ekstrem untuk...\n")
    assert rendition.missing_facts == ()
    # With a short title, level 2 changes nothing and is not reported.
    short = renderer.render(XLike, content("id", facts=facts))
    assert "title shortened" not in short.shortened_steps


def test_a_fact_too_long_for_the_channel_does_not_fit(renderer: Renderer) -> None:
    huge = "Jalan " + "Raya Bogor " * 60
    rendition = renderer.render(SmsLike, content("id", facts=replace(FACTS, where=huge)))
    assert not rendition.fits
    assert rendition.level == len(SHORTENING_STEPS)
    assert huge.strip() in rendition.text  # shown whole, never cut
    assert rendition.missing_facts == ()
    assert len(rendition.problems) == 1
    assert "sms/id" in rendition.problems[0]
    assert "3 SMS" in rendition.problems[0]


# ---- keep GSM-7 --------------------------------------------------------------------------------


def test_keep_gsm7_replaces_look_alikes_and_records_them(renderer: Renderer) -> None:
    small = {"body": "", "facts": Facts(where="Cawang")}
    curly = content("id", title="“Siaga” banjir – Jakarta", **small)
    plain = renderer.render(SmsLike, curly)
    assert plain.encoding == "ucs2"
    kept = renderer.render(SmsLike, curly, keep_gsm7=True)
    assert kept.encoding == "gsm7"
    assert '"Siaga" banjir - Jakarta' in kept.text
    assert {r.original for r in kept.replacements} == {"“", "”", "–"}
    assert kept.segments <= plain.segments
    # Unicode channels are left alone.
    assert renderer.render(TelegramLike, curly, keep_gsm7=True).replacements == ()


def test_keep_gsm7_reports_unmappable_characters(renderer: Renderer) -> None:
    small = content("id", title="Banjir 🌊", body="", facts=Facts(where="Cawang"))
    rendition = renderer.render(SmsLike, small, keep_gsm7=True)
    assert rendition.encoding == "ucs2"
    assert any("🌊" in problem for problem in rendition.problems)


# ---- HTML ------------------------------------------------------------------------------------


def test_web_template_escapes_html(renderer: Renderer) -> None:
    evil = content(
        "en",
        title="<script>alert(1)</script>",
        facts=replace(FACTS, link="javascript:alert(1)", what='Flood "5" & <b>'),
    )
    rendition = renderer.render(WEB_PAGE, evil)
    assert rendition.markup == "html"
    assert "<script>" not in rendition.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendition.text
    assert 'href="javascript' not in rendition.text
    assert rendition.missing_facts == ()  # escaped facts still count as shown


def test_text_templates_are_not_escaped(renderer: Renderer) -> None:
    rendition = renderer.render(TelegramLike, content("en", title="Rain & wind <today>"))
    assert rendition.markup == "text"
    assert "Rain & wind <today>" in rendition.text


# ---- parity ------------------------------------------------------------------------------------

FULL_TEMPLATE = (
    "{{ title }}\n{{ facts.what }} {{ facts.when | datetime('short') }} {{ facts.where }}\n"
    "{{ facts.action }} {{ facts.link }} {{ verification_code }}\n"
)


def test_parity_catches_a_template_that_omits_a_fact(tmp_path: Path) -> None:
    renderer = write(
        tmp_path,
        {
            "id/sms.txt.j2": FULL_TEMPLATE.replace("{{ facts.where }}", ""),
            "id/x.txt.j2": "{{ title }} {{ facts.what }}",
        },
    )
    assert renderer.render(SmsLike, content("id")).missing_facts == ("where",)
    assert renderer.render(XLike, content("id")).missing_facts == (
        "when",
        "where",
        "action",
        "link",
        "verification_code",
    )
    # Facts not given are not missing.
    assert renderer.render(XLike, content("id", facts=Facts(what="Banjir"))).missing_facts == (
        "verification_code",
    )
    with pytest.raises(TemplateProblem, match=r"id/sms\.txt\.j2.*leaves out where"):
        renderer.check_all([SmsLike])


def test_parity_accepts_any_date_style_and_a_spelled_code(tmp_path: Path) -> None:
    renderer = write(
        tmp_path,
        {
            "id/calendar.toml": (Path(Renderer().templates_dir) / "id/calendar.toml").read_text(),
            "id/voice.txt.j2": (
                "{{ facts.what }} {{ facts.when | datetime('long') }} {{ facts.where }}"
                " {{ facts.action }} {{ verification_code | spell }}"
            ),
        },
    )
    assert renderer.render(VoiceLike, content("id")).missing_facts == ()
    # The same text on a channel that carries links lacks the link.
    linked = PageLimits(name="voice", supports_links=True)
    assert renderer.render(linked, content("id")).missing_facts == ("link",)


# ---- template faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("Halo\n{% if %}\n", 2, "Expected an expression"),
        ("Halo\n{% for x in facts %}\n", 2, "endfor"),
        ("satu\ndua\n{{ secret_key }}\n", 3, "secret_key"),
        ("satu\n{{ facts.colour }}\n", 2, "colour"),
        ("{{ title }}\n{{ ''.__class__ }}\n", 2, "unsafe"),
        ("{{ title }}\n\n{{ facts.__class__.__init__.__globals__ }}\n", 3, "unsafe"),
        ("{{ title.__init__.__globals__ }}\n", 1, "unsafe"),
        ("{{ [].append(1) }}\n", 1, "unsafe"),
        ("a\n{{ facts.when | datetime('medium') }}\n", 2, "unknown date style"),
    ],
)
def test_template_faults_name_the_file_and_line(
    tmp_path: Path, source: str, line: int, words: str
) -> None:
    renderer = write(tmp_path, {"id/sms.txt.j2": source})
    with pytest.raises(TemplateProblem) as caught:
        renderer.render(SmsLike, content("id"))
    problem = caught.value
    assert problem.template == "id/sms.txt.j2"
    assert problem.line == line
    assert f"id/sms.txt.j2, line {line}" in str(problem)
    assert words.lower() in str(problem).lower()
    with pytest.raises(TemplateProblem):
        renderer.check_all()


def test_missing_template_names_channel_and_language(renderer: Renderer) -> None:
    with pytest.raises(TemplateMissing) as caught:
        renderer.render(SmsLike, content("fr"))
    assert (caught.value.channel, caught.value.language) == ("sms", "fr")
    assert "'sms'" in str(caught.value)
    assert "'fr'" in str(caught.value)
    assert not renderer.has_template("sms", "fr")
    assert not renderer.has_template("sms", "../id")
    assert renderer.has_template("sms", "id")


def test_check_all_reports_a_channel_without_a_template(tmp_path: Path) -> None:
    renderer = write(tmp_path, {"id/sms.txt.j2": FULL_TEMPLATE})
    with pytest.raises(TemplateMissing, match="'x'"):
        renderer.check_all([SmsLike, XLike])


def test_two_competing_templates_are_a_problem(tmp_path: Path) -> None:
    renderer = write(tmp_path, {"id/web.txt.j2": "a", "id/web.html.j2": "b"})
    with pytest.raises(TemplateProblem, match="ambiguous"):
        renderer.render(WEB_PAGE, content("id"))


def test_compiled_templates_are_cached(renderer: Renderer) -> None:
    assert renderer.template("sms", "id") is renderer.template("sms", "id")


# ---- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours", "zone"),
    [(7, "WIB"), (8, "WITA"), (9, "WIT"), (0, "UTC"), (5.5, "UTC+5:30"), (-3, "UTC-3")],
)
def test_dates_show_their_zone(renderer: Renderer, hours: float, zone: str) -> None:
    when = datetime(2025, 8, 17, 9, 5, tzinfo=timezone(timedelta(hours=hours)))
    calendar = renderer.calendar("id")
    assert calendar.format(when, "long") == f"Minggu, 17 Agustus 2025 pukul 09.05 {zone}"
    assert calendar.format(when, "short") == f"17 Agu 2025 09.05 {zone}"
    assert renderer.calendar("en").format(when, "long") == f"Sunday 17 August 2025, 09:05 {zone}"


def test_a_language_without_calendar_gets_iso_dates(tmp_path: Path) -> None:
    renderer = write(tmp_path, {"jv/sms.txt.j2": FULL_TEMPLATE})
    assert renderer.calendar("jv").format(datetime(2025, 3, 3, 14, 0)) == "2025-03-03 14:00"
    rendition = renderer.render(SmsLike, content("jv"))
    assert "2025-03-03 14:00 WIB" in rendition.text
    assert rendition.missing_facts == ()


@pytest.mark.parametrize(
    ("calendar", "words"),
    [
        ("days = [", "calendar.toml"),
        ('days = ["Senin"]\nmonths = []\nlong = ""\nshort = ""', "days must list 7"),
        (
            'days = ["a","b","c","d","e","f","g"]\nmonths = ["m"]\nlong = ""\nshort = ""',
            "months must list 12",
        ),
        (
            'days = ["a","b","c","d","e","f","g"]\nmonths = ["m","m","m","m","m","m","m","m",'
            '"m","m","m","m"]\nlong = "{day.__class__}"\nshort = "{day}"',
            "unknown fields",
        ),
    ],
)
def test_a_broken_calendar_is_a_template_problem(tmp_path: Path, calendar: str, words: str) -> None:
    renderer = write(tmp_path, {"id/calendar.toml": calendar, "id/sms.txt.j2": FULL_TEMPLATE})
    with pytest.raises(TemplateProblem, match=words):
        renderer.check_all()
