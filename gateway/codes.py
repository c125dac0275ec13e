"""Verification codes: six characters a citizen can read out over a phone without confusion.

The alphabet has no 0/O, 1/I/L: 31 letters and digits, so 31**6 (about 887 million) codes.
Codes come from the operating system's CSPRNG, so the next code cannot be guessed from earlier
ones; uniqueness is enforced by the database and a collision simply draws again.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 6
_VALID = re.compile(f"^[{ALPHABET}]{{{LENGTH}}}$")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalise_code(raw: str) -> str | None:
    """Clean what a citizen typed (spaces, dashes, lower case); None if it cannot be a code."""
    cleaned = re.sub(r"[\s\-.]", "", raw or "").upper()
    if len(cleaned) != LENGTH:
        return None
    return cleaned if _VALID.match(cleaned) else None
