"""The USSD menu's vocabulary: its screens (``Frame`` kinds), limits and fixed choices."""

from __future__ import annotations

from dataclasses import dataclass

MAX_INPUTS = 50
MAX_HISTORY_CHARS = 1_000
MAX_INPUT_CHARS = 64
PER_PAGE = 3
MAX_BULLETINS = 30
MAX_TOPICS = 6

HOME, LATEST, READ, VERIFY_ASK, VERIFY_RESULT = "home", "latest", "read", "ask", "verdict"
AREA, TOPICS, CHANNELS, CONSENT, UNSUB, LANGUAGE = "area", "topics", "chan", "ok", "unsub", "lang"
NOT_SUBSCRIBED = "nosub"
CHANNEL_CHOICES = {1: ("sms",), 2: ("voice",), 3: ("sms", "voice")}
UNSUB_CHOICES: dict[int, tuple[str, ...] | None] = {1: None, 2: ("sms",), 3: ("voice",)}
LANGUAGE_CHOICES = {1: "id", 2: "en"}


@dataclass(frozen=True, slots=True)
class Frame:
    """One screen in the navigation stack, with what the caller chose on the way to it."""

    kind: str
    page: int = 0
    item: int = 0
    code: str = ""
    area: str | None = None
    topics: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
