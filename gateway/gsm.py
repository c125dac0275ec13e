"""Exact SMS encoding and segment arithmetic after 3GPP TS 23.038 (GSM 03.38).

A text travels as GSM-7 when every character is in the default alphabet or its extension
table; otherwise the whole message switches to UCS-2 (UTF-16 code units, in practice).

=========  ============  ======================  ==========================================
encoding   unit          one part holds          each part of a concatenated SMS holds
=========  ============  ======================  ==========================================
gsm7       septet        160 septets             153 septets (7 go to the UDH)
ucs2       UTF-16 unit   70 units                67 units (3 go to the UDH)
=========  ============  ======================  ==========================================

Extension characters (``^ { } \\ [ ~ ] | €`` and form feed) cost two septets, an escape and
the character, and handsets cannot rejoin an escape split across parts, so a part ends early
rather than split one. A surrogate pair (an emoji, say) is never split either.

Deliberate choices:

- National language shift tables (Turkish, Spanish, Portuguese, Indic) are not used: Indonesian
  and English need none, and not every provider or handset supports them.
- ESC (U+001B) is not treated as a character a citizen can send; it makes the text UCS-2.
- The empty text is one (empty) part of 0 units: a provider still bills one message.
- Parts split code points, not grapheme clusters, as handsets do: a multi-code-point emoji
  may straddle two parts, though each code point arrives whole.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

SmsEncoding = Literal["gsm7", "ucs2"]

GSM7_SINGLE_LIMIT: Final = 160
GSM7_PART_LIMIT: Final = 153
UCS2_SINGLE_LIMIT: Final = 70
UCS2_PART_LIMIT: Final = 67

# The 127 printable positions of the default alphabet (0x1B, the escape, is left out).
GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\f^{}\\[~]|€")
GSM7_ALPHABET: Final[frozenset[str]] = GSM7_BASIC | GSM7_EXTENSION


@dataclass(frozen=True, slots=True)
class SmsAnalysis:
    """How a text would travel as SMS.

    Attributes:
        encoding: ``gsm7`` when every character is in the GSM 03.38 alphabet, else ``ucs2``.
        characters: ``len(text)``, the count a person would roughly call characters.
        units: septets for GSM-7 (extension characters count two), UTF-16 code units for UCS-2.
        segments: SMS parts the text needs; at least 1.
        per_segment_limit: units one part holds: 160/70 for a single part, 153/67 when split.
        remaining_in_segment: units still free in the last part before another part is needed.
    """

    encoding: SmsEncoding
    characters: int
    units: int
    segments: int
    per_segment_limit: int
    remaining_in_segment: int


@dataclass(frozen=True, slots=True)
class Replacement:
    """One kind of character ``to_gsm7`` changed, or could not change.

    ``replacement`` is the GSM-7 text put in its place (possibly empty, for invisible
    characters), or None when there is no sensible stand-in and the character was kept, which
    keeps the whole message in UCS-2.
    """

    original: str
    replacement: str | None
    count: int

    @property
    def unmappable(self) -> bool:
        return self.replacement is None


def _gsm7_cost(char: str) -> int:
    return 2 if char in GSM7_EXTENSION else 1


def _ucs2_cost(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _is_gsm7(text: str) -> bool:
    return GSM7_ALPHABET.issuperset(text)


def gsm7_septets(text: str) -> int:
    """Septets ``text`` takes in GSM-7; only meaningful when every character is GSM-7."""
    return len(text) + sum(map(text.count, GSM7_EXTENSION))


def ucs2_units(text: str) -> int:
    """UTF-16 code units of ``text`` (lone surrogates count one each)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _pack(text: str, cost: Callable[[str], int], limit: int) -> tuple[list[int], int]:
    """Greedily cut ``text`` into parts of at most ``limit`` units, never splitting a character.

    Returns the start index of every part and the units used in the last one.
    """
    starts = [0]
    used = 0
    for index, char in enumerate(text):
        units = cost(char)
        if used + units > limit:
            starts.append(index)
            used = 0
        used += units
    return starts, used


def analyse(text: str) -> SmsAnalysis:
    """Count encoding, units and SMS parts of ``text`` exactly.

    Cheap enough for every preview: the alphabet test and the counts run in C, and the
    per-character walk only happens for multi-part texts with two-unit characters.
    """
    if _is_gsm7(text):
        encoding: SmsEncoding = "gsm7"
        units = gsm7_septets(text)
        single, part, cost = GSM7_SINGLE_LIMIT, GSM7_PART_LIMIT, _gsm7_cost
    else:
        encoding = "ucs2"
        units = ucs2_units(text)
        single, part, cost = UCS2_SINGLE_LIMIT, UCS2_PART_LIMIT, _ucs2_cost

    if units <= single:
        return SmsAnalysis(encoding, len(text), units, 1, single, single - units)
    if units == len(text):
        # Every character costs one unit, so nothing can be pushed to the next part.
        segments = -(-units // part)
        remaining = segments * part - units
    else:
        starts, used = _pack(text, cost, part)
        segments = len(starts)
        remaining = part - used
    return SmsAnalysis(encoding, len(text), units, segments, part, remaining)


def split_segments(text: str) -> list[str]:
    """The parts a handset would receive, in order; ``"".join`` of them gives ``text`` back.

    Always consistent with ``analyse(text).segments``; the empty text gives ``[""]``.
    """
    analysis = analyse(text)
    if analysis.segments == 1:
        return [text]
    cost = _gsm7_cost if analysis.encoding == "gsm7" else _ucs2_cost
    starts, _ = _pack(text, cost, analysis.per_segment_limit)
    ends = [*starts[1:], len(text)]
    return [text[start:end] for start, end in zip(starts, ends, strict=True)]


# Look-alikes a word processor or a phone keyboard puts in, and their plain stand-ins.
_LOOKALIKES: Final[dict[str, str]] = {
    **dict.fromkeys("‘’‚‛′‵‹›`´", "'"),
    **dict.fromkeys("“”„‟″‶«»", '"'),
    **dict.fromkeys("‐‑‒–—―−⁃", "-"),
    **dict.fromkeys("•‣◦∙·●▪", "-"),
    **dict.fromkeys("\u00a0\u1680\u202f\u205f\u3000\t", " "),
    **dict.fromkeys([chr(code) for code in range(0x2000, 0x200B)], " "),
    # Invisible characters: dropping them changes nothing a reader sees.
    **dict.fromkeys("\u00ad\u200b\u2060\ufeff", ""),
    **dict.fromkeys("\u2028\u2029\u0085", "\n"),
    "…": "...",
    "⁄": "/",
    "÷": "/",
    "×": "x",
    "≤": "<=",
    "≥": ">=",
    "≠": "!=",
    "→": "->",
    "←": "<-",
    "©": "(c)",
    "®": "(R)",
    "°": "",
    "œ": "oe",
    "Œ": "OE",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ı": "i",
    "ð": "d",
    "þ": "th",
    "Þ": "Th",
    "ẞ": "SS",
}


def _stand_in(char: str) -> str | None:
    """GSM-7 text to put in place of ``char``, or None when nothing sensible exists."""
    if char in _LOOKALIKES:
        return _LOOKALIKES[char]
    # NFKD splits accents off letters and unfolds compatibility forms (ligatures, full-width
    # letters, superscripts); keep the result only if it is plain GSM-7 text afterwards.
    decomposed = unicodedata.normalize("NFKD", char)
    if decomposed == char:
        return None
    pieces: list[str] = []
    for piece in decomposed:
        if unicodedata.category(piece) == "Mn":
            continue
        if piece in GSM7_ALPHABET:
            pieces.append(piece)
        elif piece in _LOOKALIKES:
            pieces.append(_LOOKALIKES[piece])
        else:
            return None
    stand_in = "".join(pieces)
    return stand_in or None


def to_gsm7(text: str) -> tuple[str, list[Replacement]]:
    """Replace look-alike characters so ``text`` can travel as GSM-7 ("keep it GSM-7" mode).

    Curly quotes, dashes, the ellipsis, unusual spaces, bullets and accented letters outside
    the GSM alphabet get plain stand-ins. Characters with no sensible stand-in (emoji, most
    non-Latin scripts) are kept and reported with ``replacement=None``.

    Returns the new text and one ``Replacement`` per distinct character changed or kept, in
    order of first appearance. GSM-7 text comes back unchanged with an empty list.
    """
    if _is_gsm7(text):
        return text, []
    out: list[str] = []
    found: dict[str, tuple[str | None, int]] = {}
    for char in text:
        if char in GSM7_ALPHABET:
            out.append(char)
            continue
        if char in found:
            stand_in, count = found[char]
            found[char] = (stand_in, count + 1)
        else:
            stand_in = _stand_in(char)
            found[char] = (stand_in, 1)
        out.append(char if stand_in is None else stand_in)
    replacements = [
        Replacement(original=char, replacement=stand_in, count=count)
        for char, (stand_in, count) in found.items()
    ]
    return "".join(out), replacements
