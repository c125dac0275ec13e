"""Parser for WhatsApp Cloud API status webhooks, as pure functions.

Meta POSTs JSON (signed, see ``channels.meta.signature``)::

    {"object": "whatsapp_business_account",
     "entry": [{"id": "<WABA id>", "changes": [{"field": "messages", "value": {
         "messaging_product": "whatsapp",
         "metadata": {"display_phone_number": ..., "phone_number_id": ...},
         "statuses": [{"id": "wamid...", "status": "sent|delivered|read|failed",
                       "timestamp": "1700000000", "recipient_id": "<wa id>",
                       "biz_opaque_callback_data": ..., "errors": [{"code": 131026,
                       "title": ..., "message": ..., "error_data": {"details": ...}}]}]}}]}]}

(Status messages webhook reference,
https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status.)
Incoming citizen messages (``value.messages``) and other fields are skipped here.

Errors name the field by its path, never its value: ``recipient_id`` is a phone number.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from channels.base import DeliveryReport
from channels.meta.errors import ErrorRule, GraphError, error_from_rule, rule_for
from channels.whatsapp.status import ERROR_RULES, STATUS_MAP, UNKNOWN_STATUS_STATE
from gateway.domain import DeliveryState
from gateway.errors import ChannelError

log = logging.getLogger(__name__)

WEBHOOK_OBJECT = "whatsapp_business_account"
_WORD = re.compile(r"[a-z_]{1,32}")
# Bounds on one webhook; Meta batches at most a few hundred statuses.
MAX_ENTRIES = 1000
MAX_STATUSES = 10_000


class WebhookFieldError(ValueError):
    """A webhook lacks a field or has a bad one; ``field`` is its path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{problem} field {field!r}")
        self.field = field


def _list(container: dict[str, Any], key: str, path: str, *, required: bool) -> list[Any]:
    value = container.get(key)
    if value is None and not required:
        return []
    if value is None:
        raise WebhookFieldError(path, "missing")
    if not isinstance(value, list):
        raise WebhookFieldError(path, "malformed")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookFieldError(path, "missing" if value is None else "malformed")
    return value


def _text(container: dict[str, Any], key: str, path: str) -> str:
    value = container.get(key)
    if value is None:
        raise WebhookFieldError(path, "missing")
    if not isinstance(value, str):
        raise WebhookFieldError(path, "malformed")
    value = value.strip()
    if not value:
        raise WebhookFieldError(path, "empty")
    return value


def error_for_code(code: int) -> ChannelError:
    """The error kind a WhatsApp error code stands for (e.g. 131050 -> ``RecipientStopped``)."""
    error = GraphError(http_status=400, code=code)
    return error_from_rule(rule_for(error, ERROR_RULES), error)


def _failure_reason(status: dict[str, Any], path: str) -> str:
    errors = _list(status, "errors", f"{path}.errors", required=False)
    if not errors:
        return "failed"
    first = _object(errors[0], f"{path}.errors[0]")
    code = first.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise WebhookFieldError(
            f"{path}.errors[0].code", "missing" if code is None else "malformed"
        )
    rule: ErrorRule = rule_for(GraphError(http_status=400, code=code), ERROR_RULES)
    return f"{rule.word} (#{code})"


def _report(status: dict[str, Any], path: str) -> DeliveryReport:
    message_id = _text(status, "id", f"{path}.id")
    word = _text(status, "status", f"{path}.status").lower()
    if not _WORD.fullmatch(word):
        raise WebhookFieldError(f"{path}.status", "malformed")
    timestamp = status.get("timestamp")
    if timestamp is not None and not (isinstance(timestamp, str) and timestamp.isdigit()):
        raise WebhookFieldError(f"{path}.timestamp", "malformed")
    state = STATUS_MAP.get(word)
    if state is None:
        log.warning("unknown WhatsApp status %r; keeping it sent", word)
        state = UNKNOWN_STATUS_STATE
    reason = _failure_reason(status, path) if state is DeliveryState.FAILED else None
    return DeliveryReport(
        provider_message_id=message_id, state=state, status_word=word, reason=reason
    )


def parse_status_webhook(payload: Any) -> list[DeliveryReport]:
    """Every message status in a decoded webhook payload, in order, as ``DeliveryReport``s.

    ``read`` and ``played`` map to delivered; a failed status carries the first error's
    reason word and code, e.g. ``"undeliverable (#131026)"``. Unknown status words keep the
    delivery ``sent`` and are logged. A payload with no statuses gives an empty list.

    Raises:
        WebhookFieldError: the payload is not a WhatsApp business account webhook, or a
            status lacks ``id``/``status`` or has a malformed one; ``field`` is its path,
            e.g. ``entry[0].changes[0].value.statuses[1].status``.
    """
    body = _object(payload, "body")
    if body.get("object") != WEBHOOK_OBJECT:
        raise WebhookFieldError("object", "missing" if "object" not in body else "malformed")
    entries = _list(body, "entry", "entry", required=True)
    if len(entries) > MAX_ENTRIES:
        raise WebhookFieldError("entry", "too many items in")
    reports: list[DeliveryReport] = []
    for e, raw_entry in enumerate(entries):
        entry = _object(raw_entry, f"entry[{e}]")
        for c, raw_change in enumerate(
            _list(entry, "changes", f"entry[{e}].changes", required=True)
        ):
            path = f"entry[{e}].changes[{c}]"
            change = _object(raw_change, path)
            if change.get("field", "messages") != "messages":
                continue
            value = _object(change.get("value"), f"{path}.value")
            statuses = _list(value, "statuses", f"{path}.value.statuses", required=False)
            if len(reports) + len(statuses) > MAX_STATUSES:
                raise WebhookFieldError(f"{path}.value.statuses", "too many items in")
            for s, raw_status in enumerate(statuses):
                status_path = f"{path}.value.statuses[{s}]"
                reports.append(_report(_object(raw_status, status_path), status_path))
    return reports


def parse_status_webhook_body(raw_body: bytes) -> list[DeliveryReport]:
    """``parse_status_webhook`` over the raw body (check its signature first).

    Raises:
        WebhookFieldError: ``body`` when the body is not UTF-8 JSON, else as above.
    """
    try:
        payload = json.loads(raw_body)
    except ValueError:
        raise WebhookFieldError("body", "malformed") from None
    return parse_status_webhook(payload)
