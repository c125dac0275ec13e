"""The Facebook channel: one post per Page through the Graph API ``/{page-id}/feed`` edge."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from channels.base import Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.batch import failed, send_each
from channels.facebook.config import FacebookConfig
from channels.meta.errors import GRAPH_RULES, ErrorRule, GraphFailure, classify
from channels.meta.graph import GraphClient
from gateway.domain import DeliveryState
from gateway.errors import ConfigError, ConnectionFailed, Rejected

log = logging.getLogger(__name__)

_URL = re.compile(r"https?://[^\s<>\"']+")
_POST_ID = re.compile(r"\d+(_\d+)?")
# A post is published and stays published: there is no later delivery report.
STATUS_MAP: Mapping[str, DeliveryState] = {"published": DeliveryState.DELIVERED}


def first_link(text: str) -> str | None:
    """The first http(s) URL in ``text``, without trailing sentence punctuation."""
    match = _URL.search(text)
    return match.group(0).rstrip(".,;:!?)") if match else None


class FacebookChannel(Channel):
    """Posts to Facebook Pages as the Page (Graph API ``POST /{page-id}/feed``).

    A delivery's recipient is the Page id; its Page access token comes from the config. The
    post's ``message`` is the rendered text and, with ``attach_link``, its first URL also goes
    as ``link``. The result's ``provider_message_id`` is the post id Graph returns
    (``{page-id}_{post-id}``) and ``url`` is ``https://www.facebook.com/{page-id}/posts/{post-id}``.
    A post is final once created, so results are ``delivered``.

    ``max_length`` is 63,206 characters, Facebook's limit for a post. The feed edge takes no
    idempotency key; Graph refuses an identical repeat post (code 506, ``duplicate_post``),
    which is what stops a retried post from appearing twice.

    Errors (Graph codes): 368 policy block -> ``Rejected``; 190, 10, 200-299 -> ``ConfigError``;
    4, 17, 32, 613, 80001 -> ``Throttled``; 1, 2 and 5xx -> ``ConnectionFailed``.
    """

    name: ClassVar[str] = "facebook"
    reach: ClassVar[Reach] = "social"
    max_length: ClassVar[int] = 63_206
    max_segments: ClassVar[int | None] = None
    encoding: ClassVar[Encoding] = "unicode"
    batch_size = 1
    rate_per_second = 1.0
    supports_links: ClassVar[bool] = True
    status_map: ClassVar[Mapping[str, DeliveryState]] = STATUS_MAP
    error_rules: ClassVar[Mapping[int, ErrorRule]] = GRAPH_RULES

    def __init__(self, config: FacebookConfig) -> None:
        self._config = config
        self.batch_size = config.batch_size
        self.rate_per_second = config.rate_per_second
        self._client = GraphClient(
            base_url=config.base_url,
            api_version=config.api_version,
            request_timeout=config.request_timeout,
            max_connections=config.max_connections,
        )

    def __repr__(self) -> str:
        return f"<FacebookChannel channel='facebook' pages={len(self._config.page_tokens)}>"

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    def request_form(self, message: OutgoingMessage) -> dict[str, str]:
        """The exact form fields of the feed request for ``message``."""
        form = {"message": message.text}
        link = first_link(message.text) if self._config.attach_link else None
        if link:
            form["link"] = link
        return form

    def post_url(self, post_id: str) -> str:
        """The public URL of a post id as Graph returns it (``{page-id}_{post-id}``)."""
        base = self._config.public_base_url.rstrip("/")
        page_id, _, story = post_id.partition("_")
        return f"{base}/{page_id}/posts/{story}" if story else f"{base}/{post_id}"

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Publish one post per message, concurrently; see the class docstring.

        Raises:
            ConfigError: every request was refused on the token or permissions.
            Throttled: every request hit a rate limit.
            ConnectionFailed: every request failed on the network, timed out or got a 5xx.
        """
        results: list[SendResult] = []
        to_send: list[OutgoingMessage] = []
        for message in batch:
            if not message.recipient.isdigit():
                results.append(failed(message, Rejected("invalid_page_id")))
            elif message.recipient not in self._config.page_tokens:
                results.append(failed(message, ConfigError("no_page_token")))
            elif not message.text.strip():
                results.append(failed(message, Rejected("empty_text")))
            elif len(message.text) > self.max_length:
                results.append(failed(message, Rejected("text_too_long")))
            else:
                to_send.append(message)
        log.debug("publishing %d Facebook post(s)", len(to_send))
        return results + await send_each(to_send, self._send_one)

    async def _send_one(self, message: OutgoingMessage) -> SendResult:
        token = self._config.page_tokens[message.recipient]
        try:
            answer = await self._client.post(
                f"{message.recipient}/feed", token, form=self.request_form(message)
            )
        except GraphFailure as failure:
            error, per_message = classify(failure.error, self.error_rules)
            if per_message:
                return failed(message, error)
            raise error from None
        post_id = _post_id(answer)
        if post_id is None:
            log.warning("Facebook answer carried no post id")
            return failed(message, ConnectionFailed("unexpected response shape"))
        return SendResult(
            delivery_id=message.delivery_id,
            state=DeliveryState.DELIVERED,
            provider_message_id=post_id,
            url=self.post_url(post_id),
        )


def _post_id(answer: Mapping[str, Any]) -> str | None:
    post_id = answer.get("id")
    return post_id if isinstance(post_id, str) and _POST_ID.fullmatch(post_id) else None
