"""GSM 03.38 encoding, septet counts and SMS segments, checked against the gsm0338 codec."""

from __future__ import annotations

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec used as the independent oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.gsm import (
    GSM7_ALPHABET,
    GSM7_EXTENSION,
    Replacement,
    SmsAnalysis,
    analyse,
    split_segments,
    to_gsm7,
)

A = "a"
CYR = "я"  # one UTF-16 unit, outside GSM-7
EMOJI = "😀"  # a surrogate pair: two UTF-16 units


def oracle_septets(text: str) -> int:
    """The independent codec writes one byte per septet, an escape as its own byte."""
    return len(text.encode("gsm03.38"))


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsAnalysis("gsm7", 0, 0, 1, 160, 160)),
        (A * 160, SmsAnalysis("gsm7", 160, 160, 1, 160, 0)),
        (A * 161, SmsAnalysis("gsm7", 161, 161, 2, 153, 145)),
        (A * 306, SmsAnalysis("gsm7", 306, 306, 2, 153, 0)),
        (A * 307, SmsAnalysis("gsm7", 307, 307, 3, 153, 152)),
        ("€", SmsAnalysis("gsm7", 1, 2, 1, 160, 158)),
        (A * 80 + "€" * 40, SmsAnalysis("gsm7", 120, 160, 1, 160, 0)),
        (A * 159 + "€", SmsAnalysis("gsm7", 160, 161, 2, 153, 145)),
        # The escape would straddle 152|153: the first part ends one septet early.
        (A * 152 + "€" + A * 10, SmsAnalysis("gsm7", 163, 164, 2, 153, 141)),
        # 306 septets would fit two parts exactly, but the pushed escape needs a third.
        (A * 152 + "€" + A * 152, SmsAnalysis("gsm7", 305, 306, 3, 153, 152)),
        ("^{}\\[~]|\f", SmsAnalysis("gsm7", 9, 18, 1, 160, 142)),
        ("Ç", SmsAnalysis("gsm7", 1, 1, 1, 160, 159)),
        ("ç", SmsAnalysis("ucs2", 1, 1, 1, 70, 69)),
        ("\x1b", SmsAnalysis("ucs2", 1, 1, 1, 70, 69)),
        (CYR * 70, SmsAnalysis("ucs2", 70, 70, 1, 70, 0)),
        (CYR * 71, SmsAnalysis("ucs2", 71, 71, 2, 67, 63)),
        (EMOJI * 35, SmsAnalysis("ucs2", 35, 70, 1, 70, 0)),
        (EMOJI * 35 + A, SmsAnalysis("ucs2", 36, 71, 2, 67, 62)),
        # The surrogate pair would straddle 66|67: the first part ends one unit early.
        (CYR * 66 + EMOJI + CYR * 10, SmsAnalysis("ucs2", 77, 78, 2, 67, 55)),
        (CYR * 66 + EMOJI + CYR * 66, SmsAnalysis("ucs2", 133, 134, 3, 67, 66)),
        ("€" + CYR, SmsAnalysis("ucs2", 2, 2, 1, 70, 68)),
    ],
)
def test_analyse_table(text: str, expected: SmsAnalysis) -> None:
    assert analyse(text) == expected


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", [""]),
        (A * 160, [A * 160]),
        (A * 161, [A * 153, A * 8]),
        (A * 152 + "€" + A * 10, [A * 152, "€" + A * 10]),
        (A * 153 + "€", [A * 153 + "€"]),  # 155 septets: still one part
        (A * 159 + "€", [A * 153, A * 6 + "€"]),
        (CYR * 66 + EMOJI + CYR * 10, [CYR * 66, EMOJI + CYR * 10]),
        (CYR * 68 + EMOJI, [CYR * 68 + EMOJI]),  # 70 units: still one part
        (CYR * 69 + EMOJI, [CYR * 67, CYR * 2 + EMOJI]),
        (EMOJI * 35 + A, [EMOJI * 33, EMOJI * 2 + A]),
    ],
)
def test_split_segments_table(text: str, parts: list[str]) -> None:
    assert split_segments(text) == parts


@pytest.mark.parametrize(
    ("text", "converted", "replacements"),
    [
        ("plain GSM text €", "plain GSM text €", []),
        ("“Awas”", '"Awas"', [Replacement("“", '"', 1), Replacement("”", '"', 1)]),
        (
            "it’s 5–6 km…",
            "it's 5-6 km...",
            [
                Replacement("’", "'", 1),
                Replacement("–", "-", 1),
                Replacement("…", "...", 1),
            ],
        ),
        (
            "a\u00a0b\u202fc",
            "a b c",
            [Replacement("\u00a0", " ", 1), Replacement("\u202f", " ", 1)],
        ),
        ("• satu • dua", "- satu - dua", [Replacement("•", "-", 2)]),
        ("−5 °C", "-5 C", [Replacement("−", "-", 1), Replacement("°", "", 1)]),
        (
            "Ḿelayu ç ā",
            "Melayu c a",
            [
                Replacement("Ḿ", "M", 1),
                Replacement("ç", "c", 1),
                Replacement("ā", "a", 1),
            ],
        ),
        ("é è ñ ü Ç", "é è ñ ü Ç", []),  # already in the GSM alphabet: kept as is
        ("ﬁre ½", "fire 1/2", [Replacement("ﬁ", "fi", 1), Replacement("½", "1/2", 1)]),
        ("zero\u200bwidth", "zerowidth", [Replacement("\u200b", "", 1)]),
        (
            "Banjir 🌊 ‘awas’",
            "Banjir 🌊 'awas'",
            [
                Replacement("🌊", None, 1),
                Replacement("‘", "'", 1),
                Replacement("’", "'", 1),
            ],
        ),
        ("Пр", "Пр", [Replacement("П", None, 1), Replacement("р", None, 1)]),
    ],
)
def test_to_gsm7_table(text: str, converted: str, replacements: list[Replacement]) -> None:
    assert to_gsm7(text) == (converted, replacements)


def test_unmappable_is_reported_and_keeps_ucs2() -> None:
    text, replacements = to_gsm7("Siaga 🚨")
    assert replacements == [Replacement("🚨", None, 1)]
    assert replacements[0].unmappable
    assert analyse(text).encoding == "ucs2"


# ---- properties against independent oracles -------------------------------------------------

GSM_CHARS = sorted(GSM7_ALPHABET)
gsm_text = st.text(alphabet=GSM_CHARS, max_size=700)
# Mostly GSM with the odd outsider (accents, scripts, emoji), so both branches get exercised.
mixed_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(GSM_CHARS),
        st.sampled_from(sorted(GSM7_EXTENSION)),
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from([EMOJI, CYR, "’", "–", "ç"]),
    ),
    max_size=400,
)


@settings(max_examples=300)
@given(gsm_text)
def test_gsm_septets_match_the_codec(text: str) -> None:
    analysis = analyse(text)
    assert analysis.encoding == "gsm7"
    assert analysis.units == oracle_septets(text)
    assert analysis.characters == len(text)


@settings(max_examples=300)
@given(mixed_text)
def test_encoding_choice_matches_the_codec(text: str) -> None:
    try:
        text.encode("gsm03.38")
        encodable = "\x1b" not in text  # the codec accepts a bare escape; we do not
    except UnicodeEncodeError:
        encodable = False
    analysis = analyse(text)
    assert analysis.encoding == ("gsm7" if encodable else "ucs2")
    expected_units = oracle_septets(text) if encodable else utf16_units(text)
    assert analysis.units == expected_units


def _units(part: str, encoding: str) -> int:
    return oracle_septets(part) if encoding == "gsm7" else utf16_units(part)


@settings(max_examples=300)
@given(st.one_of(gsm_text, mixed_text))
def test_split_segments_is_consistent_and_greedy(text: str) -> None:
    analysis = analyse(text)
    parts = split_segments(text)
    assert "".join(parts) == text
    assert len(parts) == analysis.segments
    single = 160 if analysis.encoding == "gsm7" else 70
    assert (analysis.segments == 1) == (analysis.units <= single)
    for index, part in enumerate(parts):
        assert _units(part, analysis.encoding) <= analysis.per_segment_limit
        if index + 1 < len(parts):
            # A part only ends early when the next character would not fit in it.
            grown = part + parts[index + 1][0]
            assert _units(grown, analysis.encoding) > analysis.per_segment_limit
    last = _units(parts[-1], analysis.encoding)
    assert analysis.remaining_in_segment == analysis.per_segment_limit - last


@settings(max_examples=300)
@given(mixed_text)
def test_to_gsm7_reports_every_change(text: str) -> None:
    converted, replacements = to_gsm7(text)
    unmappable = {r.original for r in replacements if r.unmappable}
    assert all(char in GSM7_ALPHABET or char in unmappable for char in converted)
    if not unmappable:
        assert analyse(converted).encoding == "gsm7"
    for replacement in replacements:
        assert replacement.count == text.count(replacement.original)
        assert replacement.original not in GSM7_ALPHABET
    # Converting again changes nothing more.
    again, more = to_gsm7(converted)
    assert again == converted
    assert all(r.unmappable for r in more)
