"""Parsers for Africa's Talking's SMS callbacks (form-encoded POSTs), as pure functions.

Delivery report fields: ``id``, ``status``, ``phoneNumber``, ``networkCode``,
``failureReason`` (only when Rejected or Failed) and ``retryCount`` (premium SMS only).
Bulk SMS opt-out fields: ``senderId``, ``phoneNumber``.

Errors name the field, never its value (a value may be a phone number).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from channels.base import MESSAGE_ID_LENGTH, DeliveryReport
from channels.sms.status import DLR_STATUS, UNKNOWN_DLR_STATE

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z]{1,64}")
_PHONE = re.compile(r"\+?[1-9]\d{5,14}")


class CallbackFieldError(ValueError):
    """A callback lacks a field or has a bad one; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{problem} field {field!r}")
        self.field = field


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise CallbackFieldError(name, "missing")
    value = value.strip()
    if not value:
        raise CallbackFieldError(name, "empty")
    return value


def _optional(form: Mapping[str, str], name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    return value.strip() or None


def parse_delivery_report(form: Mapping[str, str]) -> DeliveryReport:
    """Turn a delivery report callback into a ``DeliveryReport``.

    ``id`` and ``status`` are required. A status word we do not know keeps the delivery
    ``sent`` (a later report may still settle it) and is logged.

    Raises:
        CallbackFieldError: ``id`` or ``status`` missing or empty, ``id`` longer than any
            message id Warta stores, ``status`` not a word, or ``retryCount`` not a whole
            number.
    """
    message_id = _required(form, "id")
    if len(message_id) > MESSAGE_ID_LENGTH:
        raise CallbackFieldError("id", "too long")
    status = _required(form, "status")
    if not _WORD.fullmatch(status):
        raise CallbackFieldError("status", "malformed")
    retry_count = _optional(form, "retryCount")
    if retry_count is not None and not retry_count.isdigit():
        raise CallbackFieldError("retryCount", "malformed")
    state = DLR_STATUS.get(status)
    if state is None:
        log.warning("unknown Africa's Talking delivery status %r; keeping it sent", status)
        state = UNKNOWN_DLR_STATE
    return DeliveryReport(
        provider_message_id=message_id,
        state=state,
        status_word=status,
        reason=_optional(form, "failureReason"),
        network_code=_optional(form, "networkCode"),
    )


def parse_opt_out(form: Mapping[str, str]) -> str:
    """The phone number (E.164 with '+') of a citizen who opted out of our sender id.

    Raises:
        CallbackFieldError: ``phoneNumber`` missing, empty or not a phone number.
    """
    number = _required(form, "phoneNumber").replace(" ", "")
    if not _PHONE.fullmatch(number):
        raise CallbackFieldError("phoneNumber", "malformed")
    return number if number.startswith("+") else f"+{number}"
