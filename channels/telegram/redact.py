"""Keep the bot token, chat ids and texts out of python-telegram-bot's and httpx's log lines.

The Bot API puts the token in every URL (``/bot<token>/sendMessage``). Left alone:

- ``httpx`` logs each request's URL at INFO ("HTTP Request: POST https://.../bot<token>/...");
- ``telegram.Bot`` logs the base URL (with the token) and every call's parameters (chat id,
  text) and answer at DEBUG.

``install()`` adds one filter to those loggers: it rewrites any ``/bot<token>`` path segment
to ``/bot<redacted>`` and drops ``telegram.Bot``'s DEBUG lines, whose parameters cannot be
redacted reliably. Filters on a logger act on the records that logger creates, so nothing
else in the process is touched. ``install()`` is idempotent; adapters call it when built.
"""

from __future__ import annotations

import logging
import re

# A Bot API path segment: /bot<token>, where a token is "<digits>:<35ish url-safe chars>". Be
# generous: anything up to the next slash, quote or space after "/bot" followed by digits.
_TOKEN_SEGMENT = re.compile(r"/bot\d+:[^/\s'\"]+")
REDACTED = "/bot<redacted>"

# Loggers that see URLs or request parameters.
URL_LOGGERS = ("httpx", "telegram.Bot", "telegram.BaseRequest", "telegram.HTTPXRequest")
PARAMETER_LOGGERS = frozenset({"telegram.Bot"})


def redact(text: str, tokens: frozenset[str] = frozenset()) -> str:
    """``text`` with every ``/bot<token>`` segment, and each of ``tokens``, replaced."""
    for token in tokens:
        text = text.replace(token, "<redacted>")
    return _TOKEN_SEGMENT.sub(REDACTED, text)


class TokenRedactingFilter(logging.Filter):
    """Rewrites token segments in a record's message; drops parameter-bearing DEBUG lines.

    ``tokens`` holds the configured tokens too, for a token of an unusual shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tokens: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"<TokenRedactingFilter tokens={len(self.tokens)}>"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in PARAMETER_LOGGERS and record.levelno < logging.INFO:
            return False
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        cleaned = redact(message, self.tokens)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.tokens)
        return True


_FILTER = TokenRedactingFilter()


def install(token: str | None = None) -> None:
    """Attach the filter to every logger in ``URL_LOGGERS`` (once); remember ``token``."""
    if token:
        _FILTER.tokens = _FILTER.tokens | {token}
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
