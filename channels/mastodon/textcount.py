"""How long Mastodon says a status is.

Mastodon's ``StatusLengthValidator`` counts grapheme clusters, after replacing every link it
recognises (``http(s)://`` only, found with twitter-text's extractor) by 23 placeholder
characters (``characters_reserved_per_url`` in ``/api/v2/instance``). It also shortens a
remote mention ``@user@server`` to ``@user``; Warta counts mentions in full, which can only
over-count. Grapheme clusters follow UAX #29 closely enough for announcements: combining
marks, variation selectors, emoji modifiers, ZWJ sequences, flag pairs, Hangul jamo and
CRLF join their cluster (Prepend characters do not, which again can only over-count).
"""

from __future__ import annotations

import unicodedata

from channels.mastodon.config import DEFAULT_URL_RESERVATION
from channels.x.textcount import url_spans

_ZWJ = "\u200d"
_REGIONAL = range(0x1F1E6, 0x1F200)
_L_JAMO = range(0x1100, 0x1160)
_VT_JAMO = range(0x1160, 0x1200)
_SYLLABLES = range(0xAC00, 0xD7A4)


def _extends(char: str) -> bool:
    point = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or char == _ZWJ
        or 0xFE00 <= point <= 0xFE0F
        or 0x1F3FB <= point <= 0x1F3FF
        or 0xE0020 <= point <= 0xE007F
        or 0xE0100 <= point <= 0xE01EF
    )


def _pictographic(char: str) -> bool:
    point = ord(char)
    return 0x2600 <= point <= 0x27BF or 0x1F000 <= point <= 0x1FAFF or char in "\u00a9\u00ae"


def grapheme_count(text: str) -> int:
    """Extended grapheme clusters in ``text`` (see the module docstring)."""
    count = 0
    previous = ""
    regional_run = 0
    for char in text:
        point = ord(char)
        joins = False
        if previous:
            if previous == "\r" and char == "\n":
                joins = True
            elif unicodedata.category(previous) == "Cc":
                joins = False
            elif _extends(char) or (previous == _ZWJ and _pictographic(char)):
                joins = True
            elif point in _REGIONAL and ord(previous) in _REGIONAL:
                joins = regional_run % 2 == 1
            elif point in _VT_JAMO and (
                ord(previous) in _L_JAMO or ord(previous) in _VT_JAMO or ord(previous) in _SYLLABLES
            ):
                joins = True
        regional_run = regional_run + 1 if point in _REGIONAL else 0
        if not joins:
            count += 1
        previous = char
    return count


def status_length(text: str, *, characters_per_url: int = DEFAULT_URL_RESERVATION) -> int:
    """The length Mastodon gives ``text``; it refuses more than the server's limit (422)."""
    normalized = unicodedata.normalize("NFC", text)
    total = 0
    position = 0
    for span in url_spans(normalized, without_protocol=False):
        total += grapheme_count(normalized[position : span.start])
        link = normalized[span.start : span.end]
        # A link our TLD list does not know may still be a link to Mastodon: count the
        # larger of the two readings so the limit is never overshot.
        if span.known_tld:
            total += characters_per_url
        else:
            total += max(characters_per_url, grapheme_count(link))
        position = span.end
    return total + grapheme_count(normalized[position:])
