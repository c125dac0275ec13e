"""Graph API error bodies and how they map to Warta's error kinds, shared by WhatsApp and Facebook.

Every Graph API failure (WhatsApp Cloud API included) answers with::

    {"error": {"message": ..., "type": "OAuthException", "code": 190, "error_subcode": 460,
               "is_transient": false, "fbtrace_id": "..."}}

Meta recommends deciding on ``code`` (and ``error_subcode``), never on the message text, which
is also why no message text ever reaches our errors: it is free text and could name a person.

Sources: Graph API "Handling Errors" guide
(https://developers.facebook.com/docs/graph-api/guides/error-handling), Graph API "Rate Limits"
(https://developers.facebook.com/docs/graph-api/overview/rate-limiting).

Each rule also says whether the error belongs to one message (carried in that message's
``SendResult``) or to the whole account (raised from ``send``, so the dispatcher pauses or stops
the channel). A per-recipient pair-rate limit must never pause everyone's alerts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected, Throttled

log = logging.getLogger(__name__)

BUC_USAGE_HEADER = "X-Business-Use-Case-Usage"


@dataclass(frozen=True, slots=True)
class GraphError:
    """A Graph API failure reduced to what decides its kind; never the free-text message."""

    http_status: int
    code: int | None = None
    subcode: int | None = None
    type: str | None = None
    is_transient: bool = False
    fbtrace_id: str | None = None
    retry_after: float | None = None  # from Retry-After or the business-use-case usage header


@dataclass(frozen=True, slots=True)
class ErrorRule:
    """What one Graph error code means for us.

    Attributes:
        kind: the error class to build.
        word: the stable reason word stored on the delivery.
        retry_after: seconds to wait for ``Throttled`` when the answer does not say.
        per_message: True when the error concerns this message or recipient only.
    """

    kind: type[ChannelError]
    word: str
    retry_after: float | None = None
    per_message: bool = False


class GraphFailure(Exception):
    """Raised by ``GraphClient`` for a Graph error answer; the channel classifies it."""

    def __init__(self, error: GraphError) -> None:
        super().__init__(f"graph error code={error.code} http={error.http_status}")
        self.error = error


# Codes every Graph endpoint can answer (error-handling guide and rate-limits page).
GRAPH_RULES: Mapping[int, ErrorRule] = {
    1: ErrorRule(ConnectionFailed, "api_unknown"),  # "possibly a temporary issue"
    2: ErrorRule(ConnectionFailed, "api_service"),  # "temporary issue due to downtime"
    3: ErrorRule(ConfigError, "api_method"),  # the app lacks a capability or permission
    4: ErrorRule(Throttled, "app_rate_limit", 60.0),  # application-level throttling
    17: ErrorRule(Throttled, "user_rate_limit", 60.0),  # account-level throttling
    32: ErrorRule(Throttled, "page_rate_limit", 60.0),  # page-level throttling
    341: ErrorRule(Throttled, "application_limit", 60.0),  # "application limit reached"
    613: ErrorRule(Throttled, "custom_rate_limit", 60.0),  # custom-level throttling
    80001: ErrorRule(Throttled, "page_buc_rate_limit", 60.0),  # Pages business-use-case limit
    10: ErrorRule(ConfigError, "permission_denied"),
    102: ErrorRule(ConfigError, "api_session"),
    104: ErrorRule(ConfigError, "access_token_missing"),
    190: ErrorRule(ConfigError, "access_token_invalid"),
    100: ErrorRule(Rejected, "invalid_parameter", per_message=True),
    # "Temporarily blocked for policies violations": this content was refused.
    368: ErrorRule(Rejected, "policy_block", per_message=True),
    506: ErrorRule(Rejected, "duplicate_post", per_message=True),
    1609005: ErrorRule(Rejected, "link_error", per_message=True),
}

# "Unsupported post request. Object with ID ... does not exist": our phone number id or Page
# id is wrong, which no retry fixes.
SUBCODE_RULES: Mapping[tuple[int, int | None], ErrorRule] = {
    (100, 33): ErrorRule(ConfigError, "object_not_found"),
}

PERMISSION_CODES = range(200, 300)  # "API Permission (multiple values depending on permission)"


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``Retry-After`` or the longest ``estimated_time_to_regain_access``.

    The business-use-case usage header is JSON ``{"<id>": [{"type": ...,
    "estimated_time_to_regain_access": <minutes>}, ...]}`` (Graph API "Rate Limits").
    """
    value = headers.get("Retry-After")
    if value is not None:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if seconds >= 0:
            return seconds
    usage = headers.get(BUC_USAGE_HEADER)
    if not usage:
        return None
    try:
        parsed = json.loads(usage)
    except ValueError:
        return None
    minutes = 0
    if isinstance(parsed, dict):
        for entries in parsed.values():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    minutes = max(
                        minutes, _int_or_none(entry.get("estimated_time_to_regain_access")) or 0
                    )
    return minutes * 60.0 if minutes > 0 else None


def parse_graph_error(http_status: int, body: Any, headers: Mapping[str, str]) -> GraphError:
    """Read a Graph error answer; ``body`` is the decoded JSON or None when it was not JSON."""
    retry_after = retry_after_from_headers(headers)
    details = body.get("error") if isinstance(body, dict) else None
    if not isinstance(details, dict):
        return GraphError(http_status=http_status, retry_after=retry_after)
    trace = details.get("fbtrace_id")
    kind = details.get("type")
    return GraphError(
        http_status=http_status,
        code=_int_or_none(details.get("code")),
        subcode=_int_or_none(details.get("error_subcode")),
        type=kind if isinstance(kind, str) else None,
        is_transient=details.get("is_transient") is True,
        fbtrace_id=trace if isinstance(trace, str) else None,
        retry_after=retry_after,
    )


def rule_for(error: GraphError, rules: Mapping[int, ErrorRule]) -> ErrorRule:
    """The rule for ``error``: its (code, subcode) or code entry, else one from the HTTP status."""
    code = error.code
    if code is not None and (code, error.subcode) in SUBCODE_RULES:
        return SUBCODE_RULES[(code, error.subcode)]
    if code is not None and code in rules:
        return rules[code]
    if code is not None and code in PERMISSION_CODES:
        return ErrorRule(ConfigError, "permission")
    if error.is_transient or error.http_status >= 500:
        return ErrorRule(ConnectionFailed, f"http_{error.http_status}")
    if error.http_status == 429:
        return ErrorRule(Throttled, "http_429", 1.0)
    if error.http_status in (401, 403):
        return ErrorRule(ConfigError, f"http_{error.http_status}")
    # An unknown refusal of this request as written: retrying it cannot help.
    if code is not None:
        log.warning("unknown Graph error code %d (HTTP %d); rejecting", code, error.http_status)
    return ErrorRule(Rejected, "graph_error", per_message=True)


def error_from_rule(rule: ErrorRule, error: GraphError) -> ChannelError:
    """Build the ``ChannelError`` for ``error`` under ``rule``; the reason carries the code."""
    reason = rule.word if error.code is None else f"{rule.word} (#{error.code})"
    if issubclass(rule.kind, Throttled):
        wait = error.retry_after if error.retry_after is not None else rule.retry_after
        return Throttled(reason, retry_after=wait)
    return rule.kind(reason)


def classify(error: GraphError, rules: Mapping[int, ErrorRule]) -> tuple[ChannelError, bool]:
    """``(error kind, per_message)`` for a Graph error under a channel's ``rules``."""
    rule = rule_for(error, rules)
    return error_from_rule(rule, error), rule.per_message
