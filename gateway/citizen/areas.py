"""Area codes as citizens type them: ``3171`` on a keypad (no dot key in USSD), ``31.71`` by SMS.

Codes follow the Indonesian administrative scheme the API uses: province (2 digits), regency
(2), district (2), village (4): ``31``, ``31.71``, ``31.71.01``, ``31.71.01.1001``.
"""

from __future__ import annotations

import re

_DOTTED = re.compile(r"^[0-9]{2}(\.[0-9]{2,4}){0,3}$")
_SPLITS = {2: (2,), 4: (2, 2), 6: (2, 2, 2), 10: (2, 2, 2, 4)}


def parse_area(raw: str) -> str | None:
    """``3171`` or ``31.71`` -> ``31.71``; None when it cannot be an area code."""
    text = raw.strip()
    if len(text) > 16:
        return None
    if "." in text:
        return text if _DOTTED.match(text) else None
    if not text.isascii() or not text.isdigit() or len(text) not in _SPLITS:
        return None
    parts, start = [], 0
    for size in _SPLITS[len(text)]:
        parts.append(text[start : start + size])
        start += size
    return ".".join(parts)


def reaches(announcement_areas: list[str], area_code: str | None) -> bool:
    """The fan-out rule: no areas reach everyone; ``31`` reaches ``31`` and ``31.71``."""
    if not announcement_areas or area_code is None:
        return True
    return any(area_code == a or area_code.startswith(a + ".") for a in announcement_areas)
