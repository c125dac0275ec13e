"""The WhatsApp channel: approved template messages through the WhatsApp Cloud API."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from channels.base import Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.batch import failed, send_each
from channels.meta.errors import ErrorRule, GraphFailure, classify
from channels.meta.graph import GraphClient
from channels.whatsapp.config import WhatsAppConfig
from channels.whatsapp.status import ERROR_RULES, STATUS_MAP
from gateway.domain import DeliveryState
from gateway.errors import ConnectionFailed, Rejected

log = logging.getLogger(__name__)

_E164 = re.compile(r"\+[1-9]\d{6,14}")
_WHITESPACE = re.compile(r"\s+")
# Meta echoes this back in status webhooks; longer values are refused.
_OPAQUE_DATA_MAX = 512


def template_parameter_text(text: str) -> str:
    """``text`` as a template parameter may hold it.

    Meta refuses parameter text with new lines, tabs or more than four spaces in a row, so
    every run of whitespace becomes one space.
    """
    return _WHITESPACE.sub(" ", text).strip()


class WhatsAppChannel(Channel):
    """WhatsApp via the Cloud API, one approved template message per citizen.

    Business-initiated messages outside the 24-hour customer-service window must be approved
    templates, so every announcement goes out as ``template_name`` in the recipient's language,
    with the rendered text (whitespace flattened) as the template body's one text parameter.

    Limits: ``max_length`` 1024 characters, the most a template body parameter may carry when
    the template has other components (32,768 when the body is its only component; we keep to
    the smaller). The template's own fixed words count towards the same 1,024 once filled in,
    so keep them short: a longer filled-in body comes back as 132005, ``Rejected``. The Cloud
    API takes one recipient per request and allows 80 messages per second per business number
    by default; ``batch_size`` and ``rate_per_second`` come from the config.

    ``idempotency_key`` goes out as ``biz_opaque_callback_data``, which Meta echoes in status
    webhooks; the Cloud API has no idempotency key, so a retried request can send twice.

    Replies (``OutgoingMessage.reply``: keyword answers and operator replies) go out as
    free-form ``type: text`` messages of up to 4,096 characters, new lines kept. WhatsApp takes
    those only within 24 hours of the citizen's last message (the customer-service window);
    outside it Meta answers 131047, ``Rejected``. The inbox refuses such a reply before queueing.

    Errors for one recipient (undeliverable, stopped marketing messages, pair rate limit) are
    carried in that message's result; account errors (token, template, throughput) are raised
    when every request of the batch failed, else carried per message.
    """

    name: ClassVar[str] = "whatsapp"
    reach: ClassVar[Reach] = "personal"
    max_length: ClassVar[int] = 1024
    reply_max_length: ClassVar[int | None] = 4096
    max_segments: ClassVar[int | None] = None
    encoding: ClassVar[Encoding] = "unicode"
    batch_size = 1
    rate_per_second = 80.0
    supports_links: ClassVar[bool] = True
    status_map: ClassVar[Mapping[str, DeliveryState]] = STATUS_MAP
    error_rules: ClassVar[Mapping[int, ErrorRule]] = ERROR_RULES

    def __init__(self, config: WhatsAppConfig) -> None:
        self._config = config
        self.batch_size = config.batch_size
        self.rate_per_second = config.rate_per_second
        self._client = GraphClient(
            base_url=config.base_url,
            api_version=config.api_version,
            request_timeout=config.request_timeout,
            max_connections=config.max_connections,
        )
        self._path = f"{config.phone_number_id}/messages"

    def __repr__(self) -> str:
        return (
            f"<WhatsAppChannel channel='whatsapp' phone_number_id={self._config.phone_number_id!r}>"
        )

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    def request_body(self, message: OutgoingMessage) -> dict[str, Any]:
        """The exact JSON body of the Cloud API request for ``message``."""
        if message.reply:
            return {
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": message.recipient,
                "type": "text",
                "text": {"preview_url": False, "body": message.text.strip()},
                "biz_opaque_callback_data": message.idempotency_key[:_OPAQUE_DATA_MAX],
            }
        parameter: dict[str, str] = {"type": "text", "text": template_parameter_text(message.text)}
        if self._config.parameter_name:
            parameter["parameter_name"] = self._config.parameter_name
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.recipient,
            "type": "template",
            "template": {
                "name": self._config.template_name,
                "language": {"code": self._config.language_code(message.language)},
                "components": [{"type": "body", "parameters": [parameter]}],
            },
            "biz_opaque_callback_data": message.idempotency_key[:_OPAQUE_DATA_MAX],
        }

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``batch``, one request per message, concurrently; see the class docstring.

        Raises:
            ConfigError: every request failed on the token, permissions, account or template.
            Throttled: every request hit an account rate limit (throughput, business account).
            ConnectionFailed: every request failed on the network, timed out or got a 5xx.
        """
        results: list[SendResult] = []
        to_send: list[OutgoingMessage] = []
        for message in batch:
            if not _E164.fullmatch(message.recipient):
                results.append(failed(message, Rejected("invalid_phone_number")))
            elif not _sendable_text(message):
                results.append(failed(message, Rejected("empty_text")))
            elif len(_sendable_text(message)) > _most(message):
                results.append(failed(message, Rejected("text_too_long")))
            else:
                to_send.append(message)
        if not to_send:
            return results
        log.debug("sending %d WhatsApp message(s)", len(to_send))
        return results + await send_each(to_send, self._send_one)

    async def _send_one(self, message: OutgoingMessage) -> SendResult:
        try:
            answer = await self._client.post(
                self._path, self._config.access_token, json_body=self.request_body(message)
            )
        except GraphFailure as failure:
            error, per_message = classify(failure.error, self.error_rules)
            if per_message:
                return failed(message, error)
            raise error from None
        message_id = _message_id(answer)
        if message_id is None:
            # Accepted or not, we cannot tell: a retry may duplicate, a lost alert is worse.
            log.warning("WhatsApp answer carried no message id")
            return failed(message, ConnectionFailed("unexpected response shape"))
        return SendResult(
            delivery_id=message.delivery_id,
            state=DeliveryState.SENT,
            provider_message_id=message_id,
        )


def _sendable_text(message: OutgoingMessage) -> str:
    return message.text.strip() if message.reply else template_parameter_text(message.text)


def _most(message: OutgoingMessage) -> int:
    limit = WhatsAppChannel.reply_max_length if message.reply else WhatsAppChannel.max_length
    return limit or WhatsAppChannel.max_length


def _message_id(answer: Mapping[str, Any]) -> str | None:
    messages = answer.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
        return None
    message_id = messages[0].get("id")
    return message_id if isinstance(message_id, str) and message_id else None
