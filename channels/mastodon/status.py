"""Mastodon's answers to ``POST /api/v1/statuses`` mapped to our error kinds, as plain tables.

Sources: Mastodon's API documentation, "statuses API methods"
(https://docs.joinmastodon.org/methods/statuses/#create: 200 Status, 401 ``{"error": "The
access token is invalid"}``, 422 ``{"error": "Validation failed: ..."}``, ``Idempotency-Key``
kept for up to 1 hour), "Rate limits" (https://docs.joinmastodon.org/api/rate-limits/:
``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` as an ISO 8601
timestamp; 429 when exceeded) and "instance API methods" (``configuration.statuses``).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain import DeliveryState
from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected, Throttled

# HTTP status of the request -> error kind (None: the status was created).
HTTP_STATUS: Mapping[int, type[ChannelError] | None] = {
    200: None,  # Status JSON with id and url
    401: ConfigError,  # token invalid or revoked
    403: ConfigError,  # token lacks write:statuses, or the account is suspended/disabled
    404: ConfigError,  # wrong server or API path
    410: ConfigError,  # the account is gone
    422: Rejected,  # validation failed: too long, blank, bad language...
    429: Throttled,  # rate limit; X-RateLimit-Reset says when it lifts
    500: ConnectionFailed,
    502: ConnectionFailed,
    503: ConnectionFailed,
    504: ConnectionFailed,
}

# Words in a 422 ``error`` -> the reason we store (anything else: "validation failed").
VALIDATION_REASONS: tuple[tuple[str, str], ...] = (
    ("character limit", "too long"),
    ("can't be blank", "empty"),
)

# A created status is published: nothing reports on it later, so it is final at once.
STATUS_MAP: Mapping[str, DeliveryState] = {"created": DeliveryState.DELIVERED}


def error_kind(status: int) -> type[ChannelError] | None:
    """The error kind of an HTTP status; unknown 5xx retry, unknown 4xx reject."""
    if status in HTTP_STATUS:
        return HTTP_STATUS[status]
    if status >= 500 or status == 408:
        return ConnectionFailed
    if 200 <= status < 300:
        return None
    return Rejected


def validation_reason(error: object) -> str:
    """Our reason word for a 422 ``error`` string (never the provider's free text)."""
    text = error.lower() if isinstance(error, str) else ""
    for words, reason in VALIDATION_REASONS:
        if words in text:
            return reason
    return "validation failed"
