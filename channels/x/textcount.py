"""How long X says a post is: twitter-text's weighted length with the v3 configuration.

X does not count characters. Following twitter-text's published ``config/v3.json`` and its
parser (https://github.com/twitter/twitter-text), the text is first NFC-normalised, then:

- every URL counts as 23 (``transformedURLLength``), whatever its length, because X wraps it
  in a t.co link; a URL is ``http(s)://`` or a bare domain ending in a known TLD, with an
  optional port, path and query whose last character is one twitter-text lets a URL end on
  (so ``example.com/a.`` leaves the full stop outside);
- every emoji counts as 2, however many code points make it up (skin tones, ZWJ families,
  flags, keycaps, tag sequences);
- every other code point counts 1 if it lies in U+0000–U+10FF (Latin to Georgian, so Arabic,
  Hebrew, Devanagari, Thai and combining marks), U+2000–U+200D, U+2010–U+201F or
  U+2032–U+2037, and 2 otherwise (CJK, Hangul, most symbols).

X refuses a post whose weighted length exceeds 280. ``weighted_length`` never counts less
than X does for any text Warta renders: where our TLD list (``channels.x.tlds``) may be
shorter than X's, a ``https://`` link counts as the larger of its letters and 23.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from channels.x.tlds import ALL as KNOWN_TLDS

MAX_WEIGHTED_LENGTH = 280
URL_WEIGHT = 23
DEFAULT_WEIGHT = 2
# (first, last, weight) from twitter-text config v3; everything else weighs DEFAULT_WEIGHT.
WEIGHT_RANGES: tuple[tuple[int, int, int], ...] = (
    (0x0000, 0x10FF, 1),
    (0x2000, 0x200D, 1),
    (0x2010, 0x201F, 1),
    (0x2032, 0x2037, 1),
)
MAX_URL_LENGTH = 4096

# Character classes after twitter-text's regexp/*.js, rewritten for Python's ``re``.
_INVALID = "\ufffe\ufeff\uffff"
_DIRECTIONAL = "\u202a-\u202e"
_SPACES = "\\s\u0085\u00a0\u1680\u180e\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PUNCT = "!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~"
_LATIN = (
    "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff\u0100-\u024f\u0253\u0254\u0256\u0257\u0259"
    "\u025b\u0263\u0268\u026f\u0272\u0289\u028b\u02bb\u0300-\u036f\u1e00-\u1eff"
)
_CYRILLIC = "\u0400-\u04ff"
_DC = f"[^{_PUNCT}{_SPACES}{_INVALID}{_DIRECTIONAL}]"  # a domain character
_SUBDOMAIN = f"(?:(?:{_DC}(?:[_-]|{_DC})*)?{_DC}\\.)"
_DOMAIN_NAME = f"(?:(?:{_DC}(?:-|{_DC})*)?{_DC}\\.)"
_TLD_END = "(?=[^0-9a-z@+\\-]|$)"
_KNOWN_TLD = "|".join(re.escape(t) for t in sorted(KNOWN_TLDS, key=len, reverse=True))
_PATH_CHAR = f"[a-z{_CYRILLIC}0-9!*';:=+,.$/%#\\[\\]\\-\u2013_~@|&{_LATIN}]"
_PARENS = f"\\((?:{_PATH_CHAR}+|(?:{_PATH_CHAR}*\\({_PATH_CHAR}+\\){_PATH_CHAR}*))\\)"
_PATH_END = f"(?:[+\\-a-z{_CYRILLIC}0-9=_#/{_LATIN}]|{_PARENS})"
_PATH_UNIT = f"(?:(?:{_PATH_CHAR}*(?:{_PARENS}{_PATH_CHAR}*)*{_PATH_END})|(?:@{_PATH_CHAR}+/))"
_TAIL = (
    "(?::[0-9]+)?"
    f"(?P<path>/{_PATH_UNIT}*)?"
    "(?:\\?[a-z0-9!?*'@();:&=+$/%#\\[\\]\\-_.,~|]*[a-z0-9\\-_&=#/])?"
)
_NOT_AFTER = f"(?<![A-Za-z0-9@\uff20$#\uff03{_INVALID}{_DIRECTIONAL}])"


# Where a match without a scheme failed, a start later in the same label fails too; skipping
# those starts keeps long unspaced runs (Thai, CJK) linear.
_NOT_IN_LABEL = f"(?<!{_DC})(?<![-_])"


def _url_pattern() -> re.Pattern[str]:
    # Any letter label matches as TLD here and KNOWN_TLDS is checked afterwards: an
    # alternation of hundreds of TLDs tried at every backtracking step made long dotted
    # tokens take seconds. At most 8 subdomains keeps each start position's work bounded.
    tld = "xn--[0-9a-z]+|[^\\W\\d_]{2,63}"
    domain = f"(?P<domain>{_SUBDOMAIN}{{0,8}}{_DOMAIN_NAME}(?P<tld>{tld}){_TLD_END})"
    return re.compile(
        f"{_NOT_AFTER}(?P<url>(?:(?P<protocol>https?://)|{_NOT_IN_LABEL}){domain}{_TAIL})",
        re.IGNORECASE,
    )


_URL = _url_pattern()
_ASCII_DOMAIN = re.compile(
    f"(?:[\\-a-z0-9{_LATIN}]+\\.)+(?:{_KNOWN_TLD}|xn--[0-9a-z]+){_TLD_END}", re.IGNORECASE
)
_KNOWN_DOMAIN = re.compile(
    f"{_SUBDOMAIN}{{0,8}}{_DOMAIN_NAME}(?:{_KNOWN_TLD}|xn--[0-9a-z]+){_TLD_END}", re.IGNORECASE
)
_SHORT_CC_DOMAIN = re.compile(f"^{_DOMAIN_NAME}(?P<tld>[a-z]{{2}})$", re.IGNORECASE)
_SPECIAL_SHORT = frozenset({"t.co"})
_TOKEN = re.compile(f"[^{_SPACES}]+")

# Emoji: our own rules after Unicode's emoji data (UTS #51). Text-default symbols that already
# weigh 1 (©, ®) are emoji only with the emoji variation selector, as in twemoji.
_PICTO = (
    "\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u2388\u23cf"
    "\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u27bf"
    "\u2934\u2935\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299"
    "\U0001f000-\U0001f1e5\U0001f200-\U0001faff"
)
_ELEMENT = f"(?:[{_PICTO}]\ufe0f?[\U0001f3fb-\U0001f3ff]?|[\u00a9\u00ae]\ufe0f)"
_EMOJI = re.compile(
    "[\U0001f1e6-\U0001f1ff]{2}"
    "|[0-9#*]\ufe0f?\u20e3"
    "|\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f"
    f"|{_ELEMENT}(?:\u200d{_ELEMENT})*"
)


@dataclass(frozen=True, slots=True)
class UrlSpan:
    """A URL at ``text[start:end]``; ``known_tld`` is False for the conservative fallback."""

    start: int
    end: int
    known_tld: bool = True


def _idna_ok(domain: str, url_length: int, protocol: str) -> bool:
    try:
        ascii_domain = domain.encode("idna")
    except UnicodeError:
        return False
    length = url_length + len(ascii_domain) - len(domain)
    return len(protocol or "https://") + length <= MAX_URL_LENGTH


def _token_urls(token: str, offset: int, *, without_protocol: bool) -> list[UrlSpan]:
    """twitter-text's extractUrlsWithIndices for one whitespace-free token."""
    spans: list[UrlSpan] = []
    position = 0
    while position < len(token):
        match = _URL.search(token, position)
        if match is None:
            break
        start, end = match.start("url"), match.end("url")
        protocol, domain, path = match["protocol"] or "", match["domain"], match["path"]
        position = end
        if match["tld"].lower() not in KNOWN_TLDS and not match["tld"].lower().startswith("xn--"):
            # What twitter-text's own regex would have settled on: the longest domain that
            # ends in a TLD it knows, with nothing after it.
            known = _KNOWN_DOMAIN.match(domain)
            if known is not None:
                domain, path = known.group(), None
                end = position = start + len(protocol) + len(domain)
            elif protocol:
                spans.append(UrlSpan(offset + start, offset + end, known_tld=False))
                continue
            else:
                position = start + 1
                continue
        if not _idna_ok(domain, end - start, protocol):
            continue
        if protocol:
            spans.append(UrlSpan(offset + start, offset + end))
            continue
        if not without_protocol or (start > 0 and token[start - 1] in "-_./"):
            continue
        found: list[UrlSpan] = []
        for ascii_match in _ASCII_DOMAIN.finditer(domain):
            piece = ascii_match.group()
            if path or piece.lower() in _SPECIAL_SHORT or not _SHORT_CC_DOMAIN.match(piece):
                piece_start = offset + start + ascii_match.start()
                found.append(UrlSpan(piece_start, piece_start + len(piece)))
        if found and path:
            found[-1] = UrlSpan(found[-1].start, offset + end)
        spans.extend(found)
    return spans


def url_spans(text: str, *, without_protocol: bool = True) -> list[UrlSpan]:
    """Where the URLs of ``text`` are, by twitter-text's rules (see the module docstring).

    ``without_protocol=False`` finds only ``http(s)://`` links, as Mastodon does. ``text``
    should already be NFC-normalised when the indices are to be used on it.
    """
    spans: list[UrlSpan] = []
    for token in _TOKEN.finditer(text):
        if "." in token.group():
            spans += _token_urls(token.group(), token.start(), without_protocol=without_protocol)
    return spans


def code_point_weight(char: str) -> int:
    """The weight of one code point outside URLs and emoji (1 or 2)."""
    point = ord(char)
    for first, last, weight in WEIGHT_RANGES:
        if first <= point <= last:
            return weight
    return DEFAULT_WEIGHT


def _plain_weight(text: str) -> int:
    return sum(code_point_weight(char) for char in text)


def weighted_length(text: str) -> int:
    """The length X gives ``text``; X refuses a post whose length exceeds 280.

    Pure and total: any string (including an empty one, which weighs 0) gets a number.
    """
    normalized = unicodedata.normalize("NFC", text)
    urls = {span.start: span for span in url_spans(normalized)}
    emoji = {m.start(): m.end() for m in _EMOJI.finditer(normalized)}
    total = 0
    index = 0
    size = len(normalized)
    while index < size:
        url = urls.get(index)
        if url is not None:
            plain = 0 if url.known_tld else _plain_weight(normalized[url.start : url.end])
            total += max(URL_WEIGHT, plain)
            index = url.end
        elif index in emoji:
            total += DEFAULT_WEIGHT
            index = emoji[index]
        else:
            total += code_point_weight(normalized[index])
            index += 1
    return total


def fits(text: str, limit: int = MAX_WEIGHTED_LENGTH) -> bool:
    """Whether X would accept ``text`` as to its length (non-empty, at most ``limit``)."""
    length = weighted_length(text)
    return 0 < length <= limit
