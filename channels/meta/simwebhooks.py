"""The Meta simulator's webhooks: built like Meta's, signed, posted in order, retried.

One job per accepted WhatsApp message: its statuses (``sent``, then ``delivered``/``read`` or
``failed`` with ``errors[]``), each POSTed as its own webhook after ``status_webhook_delay``,
with ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with the app secret>``.
A bounded pool of workers posts them; a receiver that errs (5xx, 429) or is down is retried
with doubling backoff, a 4xx is counted as refused.

A citizen's message (``message_payload``) goes to the same URL, Meta's one webhook per app,
posted at once (``post_once``) so the caller sees the gateway's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from channels.meta.signature import SIGNATURE_HEADER, sign
from channels.meta.simconfig import GRAPH_OUTCOMES, SimulatorConfig, split_status_outcome
from channels.simdraws import draw, seconds
from channels.simserver import LaterWork, post_until_taken

log = logging.getLogger(__name__)

_SEQUENCES = {
    "sent": ("sent",),
    "delivered": ("sent", "delivered"),
    "read": ("sent", "delivered", "read"),
    "failed": ("sent", "failed"),
}


class StatusWebhooks:
    """Queues and posts status webhooks; ``url`` may be changed while running."""

    def __init__(self, config: SimulatorConfig, rng: random.Random) -> None:
        self.config = config
        self.url = config.status_webhook_url
        self.delivered = 0
        self.refused = 0
        self.failed = 0
        self._rng = rng
        self._work = LaterWork(
            self._post_in_order,
            concurrency=config.webhook_concurrency,
            failed=self._went_wrong,
            what="status webhook",
        )

    def queue(self, wamid: str, to: str, opaque: object) -> None:
        """Schedule the statuses of one accepted message to ``to``."""
        if self.url is None or not self._work.running:
            return
        config = self.config
        canned = config.status_outcomes.get(to)
        final = canned or draw(config.status_shares, self._rng) or config.default_status
        status, code = split_status_outcome(final)
        payloads = [self.payload(wamid, to, word, code, opaque) for word in _SEQUENCES[status]]
        self._work.put(payloads)

    async def join(self) -> None:
        await self._work.join()

    def payload(self, wamid: str, to: str, word: str, code: int | None, opaque: object) -> bytes:
        """The raw body of one status webhook, as Meta sends it."""
        status: dict[str, Any] = {
            "id": wamid,
            "status": word,
            "timestamp": str(int(time.time())),
            "recipient_id": to.lstrip("+"),
        }
        if isinstance(opaque, str):
            status["biz_opaque_callback_data"] = opaque
        if word == "failed" and code is not None:
            title = next((m for _s, c, m in GRAPH_OUTCOMES.values() if c == code), "Error")
            status["errors"] = [
                {"code": code, "title": title, "message": title, "error_data": {"details": title}}
            ]
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.config.display_phone_number,
                "phone_number_id": self.config.phone_number_id,
            },
            "statuses": [status],
        }
        change = {"value": value, "field": "messages"}
        payload = {
            "object": "whatsapp_business_account",
            "entry": [{"id": self.config.waba_id, "changes": [change]}],
        }
        # ensure_ascii escapes non-ASCII as \uXXXX, as Meta does before signing.
        return json.dumps(payload, ensure_ascii=True).encode()

    def message_payload(
        self,
        wamid: str,
        sender: str,
        text: str,
        *,
        profile_name: str,
        context_id: str | None = None,
    ) -> bytes:
        """The raw body of the webhook for a citizen's text message, as Meta sends it."""
        message: dict[str, Any] = {
            "from": sender,
            "id": wamid,
            "timestamp": str(int(time.time())),
            "type": "text",
            "text": {"body": text},
        }
        if context_id is not None:
            message["context"] = {"from": self.config.display_phone_number, "id": context_id}
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": self.config.display_phone_number,
                "phone_number_id": self.config.phone_number_id,
            },
            "contacts": [{"profile": {"name": profile_name}, "wa_id": sender}],
            "messages": [message],
        }
        payload = {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": self.config.waba_id, "changes": [{"value": value, "field": "messages"}]}
            ],
        }
        return json.dumps(payload, ensure_ascii=True).encode()

    async def post_once(self, payload: bytes) -> int | None:
        """POST one signed webhook now; its HTTP status, or None when there is no URL."""
        if self.url is None:
            return None
        headers = self._headers(payload)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(self.url, data=payload, headers=headers) as response,
        ):
            await response.read()
            return response.status

    def _headers(self, payload: bytes) -> dict[str, str]:
        """Meta's headers for ``payload``: signed with the app secret."""
        return {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(payload, self.config.app_secret),
        }

    def run(self, app: web.Application) -> AsyncIterator[None]:
        """A ``cleanup_ctx`` generator: the worker pool lives as long as the app."""
        return self._work.run(app)

    def _went_wrong(self, _payloads: list[bytes]) -> None:
        self.failed += 1

    async def _post_in_order(self, session: aiohttp.ClientSession, payloads: list[bytes]) -> None:
        for payload in payloads:
            await asyncio.sleep(seconds(self.config.status_webhook_delay, self._rng))
            posted = await post_until_taken(
                session,
                lambda: self.url,
                data=payload,
                headers=self._headers(payload),
                attempts=self.config.webhook_attempts,
                backoff=self.config.webhook_backoff,
                what="status webhook",
            )
            if posted == "delivered":
                self.delivered += 1
            elif posted == "refused":
                self.refused += 1
            elif posted == "failed":
                self.failed += 1
