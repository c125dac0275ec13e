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
``parse_status_webhook`` skips incoming citizen messages; ``parse_webhook`` reads both.

A citizen's message comes in the same envelope, as ``value.messages`` with ``value.contacts``::

    "contacts": [{"profile": {"name": ...}, "wa_id": "6281..."}],
    "messages": [{"from": "6281...", "id": "wamid...", "timestamp": "1700000000",
                  "type": "text", "text": {"body": "..."},
                  "context": {"from": <our number>, "id": "<wamid of our message>"}}]

``button`` (a template's quick reply: ``button.text``) and ``interactive`` (``button_reply``
or ``list_reply``: its ``title``) are read as their text; every other type (image, audio,
location, reaction ...) as ``[type]`` plus a caption where there is one, so an operator sees
that something arrived (Messages webhook reference, same site, ``.../messages/text``,
``.../button``, ``.../interactive``).

Errors name the field by its path, never its value: ``recipient_id`` and ``from`` are phone
numbers.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from channels.base import MESSAGE_ID_LENGTH, DeliveryReport
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
MAX_MESSAGES = 1000
# Our inbound table keeps provider message ids of up to 128 characters.
MAX_ID_LENGTH = 128
_WA_ID = re.compile(r"[1-9]\d{5,14}")
# A business-scoped user id: country code, optionally ENT (a parent id), then up to 128
# letters and digits, e.g. ``ID.1502576394655843``.
_BSUID = re.compile(r"[A-Z]{2}(?:\.ENT)?\.[A-Za-z0-9]{1,128}")
_CAPTIONED = frozenset({"image", "video", "document"})


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
    if len(message_id) > MESSAGE_ID_LENGTH:
        raise WebhookFieldError(f"{path}.id", "too long")
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


def _values(payload: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each ``messages`` change's ``value`` with its path; other fields are skipped."""
    body = _object(payload, "body")
    if body.get("object") != WEBHOOK_OBJECT:
        raise WebhookFieldError("object", "missing" if "object" not in body else "malformed")
    entries = _list(body, "entry", "entry", required=True)
    if len(entries) > MAX_ENTRIES:
        raise WebhookFieldError("entry", "too many items in")
    for e, raw_entry in enumerate(entries):
        entry = _object(raw_entry, f"entry[{e}]")
        for c, raw_change in enumerate(
            _list(entry, "changes", f"entry[{e}].changes", required=True)
        ):
            path = f"entry[{e}].changes[{c}]"
            change = _object(raw_change, path)
            if change.get("field", "messages") != "messages":
                continue
            yield f"{path}.value", _object(change.get("value"), f"{path}.value")


def _reports(value: dict[str, Any], path: str, already: int) -> list[DeliveryReport]:
    statuses = _list(value, "statuses", f"{path}.statuses", required=False)
    if already + len(statuses) > MAX_STATUSES:
        raise WebhookFieldError(f"{path}.statuses", "too many items in")
    return [
        _report(_object(raw, f"{path}.statuses[{s}]"), f"{path}.statuses[{s}]")
        for s, raw in enumerate(statuses)
    ]


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
    reports: list[DeliveryReport] = []
    for path, value in _values(payload):
        reports.extend(_reports(value, path, len(reports)))
    return reports


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message a citizen sent to our business number.

    ``sender`` is the citizen's WhatsApp id (their number in international form without
    ``+``): personal data, kept out of reprs. Since WhatsApp usernames (2026) a citizen who
    took one may write without Meta sharing their number: ``sender`` is then None and only
    ``user_id``, their business-scoped user id (``from_user_id``), says who wrote.
    ``context_id`` is the id of our message they answered, when they used WhatsApp's reply;
    ``sent_at`` is WhatsApp's Unix timestamp.
    """

    message_id: str
    sender: str | None = field(repr=False)
    kind: str
    text: str = field(repr=False)
    sent_at: int | None = None
    context_id: str | None = None
    profile_name: str | None = field(default=None, repr=False)
    # Where it sat in the webhook, e.g. ``entry[0].changes[0].value.messages[0]``.
    path: str = field(default="", repr=False, compare=False)
    user_id: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Webhook:
    """Everything one webhook carries: status reports and citizens' messages, in order."""

    reports: list[DeliveryReport]
    messages: list[InboundMessage]


def _optional_text(container: dict[str, Any], key: str, path: str) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookFieldError(path, "malformed")
    return value.strip() or None


def _message_text(message: dict[str, Any], kind: str, path: str) -> str:
    """What the operator reads for one message: its words, or ``[kind]`` and a caption."""
    if kind == "text":
        return _text(_object(message.get("text"), f"{path}.text"), "body", f"{path}.text.body")
    if kind == "button":
        button = _object(message.get("button"), f"{path}.button")
        words = _optional_text(button, "text", f"{path}.button.text")
        return words or _text(button, "payload", f"{path}.button.payload")
    if kind == "interactive":
        interactive = _object(message.get("interactive"), f"{path}.interactive")
        reply_type = interactive.get("type")
        if reply_type in ("button_reply", "list_reply"):
            where = f"{path}.interactive.{reply_type}"
            return _text(_object(interactive.get(reply_type), where), "title", f"{where}.title")
        return "[interactive]"
    if kind == "reaction":
        reaction = _object(message.get("reaction"), f"{path}.reaction")
        emoji = _optional_text(reaction, "emoji", f"{path}.reaction.emoji")
        return f"[reaction] {emoji}" if emoji else "[reaction]"
    caption = None
    media = message.get(kind)
    if kind in _CAPTIONED and isinstance(media, dict):
        caption = _optional_text(media, "caption", f"{path}.{kind}.caption")
    return f"[{kind}] {caption}" if caption else f"[{kind}]"


def _inbound(message: dict[str, Any], path: str, names: dict[str, str]) -> InboundMessage:
    message_id = _text(message, "id", f"{path}.id")
    if len(message_id) > MAX_ID_LENGTH:
        raise WebhookFieldError(f"{path}.id", "too long")
    user_id = _optional_text(message, "from_user_id", f"{path}.from_user_id")
    if user_id is not None and not _BSUID.fullmatch(user_id):
        raise WebhookFieldError(f"{path}.from_user_id", "malformed")
    sender: str | None = None
    if message.get("from") is not None or user_id is None:
        sender = _text(message, "from", f"{path}.from")
        if not _WA_ID.fullmatch(sender):
            raise WebhookFieldError(f"{path}.from", "malformed")
    kind = _text(message, "type", f"{path}.type").lower()
    if not _WORD.fullmatch(kind):
        raise WebhookFieldError(f"{path}.type", "malformed")
    timestamp = message.get("timestamp")
    if timestamp is not None and not (isinstance(timestamp, str) and timestamp.isdigit()):
        raise WebhookFieldError(f"{path}.timestamp", "malformed")
    context_id = None
    if message.get("context") is not None:
        context = _object(message["context"], f"{path}.context")
        context_id = _optional_text(context, "id", f"{path}.context.id")
        if context_id is not None and len(context_id) > MAX_ID_LENGTH:
            raise WebhookFieldError(f"{path}.context.id", "too long")
    return InboundMessage(
        message_id=message_id,
        sender=sender,
        kind=kind,
        text=_message_text(message, kind, path),
        sent_at=int(timestamp) if timestamp is not None else None,
        context_id=context_id,
        profile_name=None if sender is None else names.get(sender),
        path=path,
        user_id=user_id,
    )


def _profile_names(value: dict[str, Any], path: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for n, raw in enumerate(_list(value, "contacts", f"{path}.contacts", required=False)):
        contact = _object(raw, f"{path}.contacts[{n}]")
        wa_id = _optional_text(contact, "wa_id", f"{path}.contacts[{n}].wa_id")
        profile = contact.get("profile")
        if profile is not None:
            profile = _object(profile, f"{path}.contacts[{n}].profile")
            name = _optional_text(profile, "name", f"{path}.contacts[{n}].profile.name")
            if wa_id is not None and name is not None:
                names[wa_id] = name
    return names


def parse_webhook(payload: Any) -> Webhook:
    """Statuses (as ``parse_status_webhook``) and citizens' messages of a decoded webhook.

    The whole payload is read before anything is returned, so a caller acting on it never
    acts on half of a malformed webhook.

    Raises:
        WebhookFieldError: as ``parse_status_webhook``, or a message lacks ``id``, ``from``
            (when it has no ``from_user_id`` either), ``type`` or the content its type needs
            (``text.body``, ``button.text``, ``interactive.button_reply.title`` ...), or has a
            malformed one; ``field`` is its path, e.g.
            ``entry[0].changes[0].value.messages[0].from``.
    """
    reports: list[DeliveryReport] = []
    messages: list[InboundMessage] = []
    for path, value in _values(payload):
        reports.extend(_reports(value, path, len(reports)))
        raw_messages = _list(value, "messages", f"{path}.messages", required=False)
        if len(messages) + len(raw_messages) > MAX_MESSAGES:
            raise WebhookFieldError(f"{path}.messages", "too many items in")
        names = _profile_names(value, path) if raw_messages else {}
        for m, raw in enumerate(raw_messages):
            where = f"{path}.messages[{m}]"
            messages.append(_inbound(_object(raw, where), where, names))
    return Webhook(reports=reports, messages=messages)


def _decode(raw_body: bytes) -> Any:
    try:
        return json.loads(raw_body)
    except ValueError:
        raise WebhookFieldError("body", "malformed") from None


def parse_status_webhook_body(raw_body: bytes) -> list[DeliveryReport]:
    """``parse_status_webhook`` over the raw body (check its signature first).

    Raises:
        WebhookFieldError: ``body`` when the body is not UTF-8 JSON, else as above.
    """
    return parse_status_webhook(_decode(raw_body))


def parse_webhook_body(raw_body: bytes) -> Webhook:
    """``parse_webhook`` over the raw body (check its signature first).

    Raises:
        WebhookFieldError: ``body`` when the body is not UTF-8 JSON, else as above.
    """
    return parse_webhook(_decode(raw_body))
