"""X's answers to ``POST /2/tweets`` mapped to our error kinds, as plain tables.

Sources: X API v2 "Create or Edit Post" reference (https://docs.x.com/x-api/posts/creation-of-a-
post) for the 201 body ``{"data": {"id", "text"}}``; X's "Rate limits" page for the
``x-rate-limit-*`` headers (``x-rate-limit-reset`` is epoch seconds) and the 24-hour
``x-user-limit-24hour-*`` / ``x-app-limit-24hour-*`` headers; the duplicate-content 403 body
``{"detail": "You are not allowed to create a Tweet with duplicate content.", "type":
"about:blank", "title": "Forbidden", "status": 403}`` as reported by X API users.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain import DeliveryState
from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected, Throttled

# HTTP status of the whole request -> error kind (None: created). 403 is refined by its body.
HTTP_STATUS: Mapping[int, type[ChannelError] | None] = {
    200: None,
    201: None,  # created: data.id is the post id
    400: Rejected,  # invalid request: the post as written will never be accepted
    401: ConfigError,  # token missing, expired or revoked
    403: ConfigError,  # app or account not allowed to post (duplicate content: see below)
    404: ConfigError,  # wrong base URL or API version
    429: Throttled,  # 15-minute window or 24-hour post cap reached
    500: ConnectionFailed,
    502: ConnectionFailed,
    503: ConnectionFailed,
    504: ConnectionFailed,
}

# Words in a 403 ``detail`` that make it a refusal of this post, not of our credentials.
FORBIDDEN_REASONS: tuple[tuple[str, str], ...] = (
    ("duplicate content", "duplicate"),
    ("too long", "too long"),
)

# A post that X created is published: nothing later reports on it, so it is final at once.
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
