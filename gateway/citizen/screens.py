"""Laying text out on USSD screens: every screen fits, long text is cut into readable pages.

A screen is ``CON <body>`` (the session continues) or ``END <body>`` (it ends). Africa's
Talking shows at most 182 characters; many handsets fewer, so the size is configurable.
"""

from __future__ import annotations

import unicodedata

MAX_SCREEN = 182
MIN_SCREEN = 120
DEFAULT_SCREEN = 160
PREFIX = 4  # "CON " / "END "
ELLIPSIS = ".."


def check_size(screen_size: int) -> int:
    """Raises ValueError unless ``MIN_SCREEN <= screen_size <= MAX_SCREEN``."""
    if not MIN_SCREEN <= screen_size <= MAX_SCREEN:
        raise ValueError(f"USSD screen size must be {MIN_SCREEN}..{MAX_SCREEN} characters")
    return screen_size


# The ASCII control characters (Unicode category Cc), newline kept: all of category C in ASCII.
_ASCII_CONTROLS = {code: " " for code in (*range(0x0A), *range(0x0B, 0x20), 0x7F)}


def clean(text: str) -> str:
    """Text safe for a handset: NFC, control characters (except newline) become spaces."""
    if text.isascii():
        # Most screens: ASCII is already NFC, and its only category-C characters are controls.
        return text.translate(_ASCII_CONTROLS).strip()
    text = unicodedata.normalize("NFC", text)
    return "".join(
        ch if ch == "\n" or unicodedata.category(ch)[0] != "C" else " " for ch in text
    ).strip()


def clip(text: str, width: int) -> str:
    """``text`` on at most ``width`` characters, marked with ``..`` when cut."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    return text[: width - len(ELLIPSIS)].rstrip() + ELLIPSIS


def screen(body: str, *, size: int, final: bool = False) -> str:
    """The wire form of one screen, never longer than ``size``."""
    prefix = "END " if final else "CON "
    return prefix + clip(clean(body), size - PREFIX)


def pages(text: str, width: int, *, limit: int = 200) -> list[str]:
    """Cut ``text`` into pages of at most ``width`` characters, at a space where one is near.

    Never more than ``limit`` pages (the rest is dropped); always at least one page.
    """
    text = clean(text)
    if width < 1:
        raise ValueError("page width must be positive")
    result: list[str] = []
    while text and len(result) < limit:
        if len(text) <= width:
            result.append(text)
            break
        cut = max(text.rfind(" ", 0, width + 1), text.rfind("\n", 0, width + 1))
        if cut < width // 2:
            cut = width
        result.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return result or [""]
