"""The X channel: one post per announcement per configured X account (API v2, aiohttp)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp

from channels.base import Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.batch import failed, send_each
from channels.x.config import XConfig
from channels.x.status import FORBIDDEN_REASONS, STATUS_MAP, error_kind
from channels.x.textcount import MAX_WEIGHTED_LENGTH, weighted_length
from gateway.errors import ChannelError, ConfigError, ConnectionFailed, Rejected, Throttled

log = logging.getLogger(__name__)

CREATE_POST_PATH = "/2/tweets"


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until X lifts a 429, from its rate-limit headers; None when it gave none.

    ``x-rate-limit-reset`` (epoch seconds) ends the 15-minute window. When the 24-hour post
    cap is what ran out (``x-user-limit-24hour-remaining`` or ``x-app-limit-24hour-remaining``
    is 0), its own reset applies instead, which is usually later.
    """
    resets = []
    for scope in ("user", "app"):
        if _header_int(headers, f"x-{scope}-limit-24hour-remaining") == 0:
            reset = _header_int(headers, f"x-{scope}-limit-24hour-reset")
            if reset is not None:
                resets.append(reset)
    if not resets:
        reset = _header_int(headers, "x-rate-limit-reset")
        if reset is not None:
            resets.append(reset)
    if not resets:
        return None
    return max(0.0, max(resets) - now)


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
    return ""


class XChannel(Channel):
    """Posts to X with ``POST /2/tweets`` and a user-context bearer token per account.

    Limits: ``max_length`` is 280 *weighted* characters as X counts them
    (``channels.x.textcount.weighted_length``: URLs 23, emoji 2, CJK 2, NFC). ``send``
    refuses locally, with ``Rejected("too long")`` and no request, any text whose weighted
    length exceeds 280, and an empty text with ``Rejected("empty")``.

    Each message's ``recipient`` is a configured username; the result carries the post id
    and ``https://x.com/{username}/status/{id}``, state ``delivered`` (a created post is
    published; nothing reports on it later).

    Retries and duplicates: X takes no idempotency key, so if a post is created but the
    answer is lost (timeout, reset connection), the dispatcher's retry posts again. X
    refuses a post identical to a recent one of the same account with HTTP 403 "duplicate
    content", which ``send`` reports as ``Rejected("duplicate")``; after a retry that word
    most likely means the first attempt was published. Texts that differ (e.g. a changed
    timestamp) are not caught, so renditions for X should not vary between attempts.
    """

    name: ClassVar[str] = "x"
    reach: ClassVar[Reach] = "social"
    max_length: ClassVar[int] = MAX_WEIGHTED_LENGTH
    max_segments: ClassVar[int | None] = None
    encoding: ClassVar[Encoding] = "unicode"
    batch_size = 1
    rate_per_second = 1.0
    supports_links: ClassVar[bool] = True
    status_map = STATUS_MAP
    length_of: ClassVar[Callable[[str], int]] = staticmethod(weighted_length)

    @classmethod
    def text_length(cls, text: str) -> int:
        """X's weighted length (links 23, CJK and emoji 2): what ``max_length`` limits."""
        return weighted_length(text)

    def __init__(
        self,
        config: XConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self.rate_per_second = config.rate_per_second
        self._session = session
        self._owns_session = session is None
        self._clock = clock

    def __repr__(self) -> str:
        return f"<XChannel channel='x' usernames={self._config.usernames!r}>"

    async def start(self) -> None:
        self._ensure_session()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._config.request_timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
            self._owns_session = True
        return self._session

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Post each message of ``batch``; see the class docstring.

        Raises:
            ConfigError, Throttled, ConnectionFailed: when every post of the batch failed
                that way (with ``batch_size`` 1: when the one post did).
        """
        return await send_each(batch, self._post)

    async def _post(self, message: OutgoingMessage) -> SendResult:
        username = message.recipient
        token = self._config.accounts.get(username)
        if token is None:
            raise ConfigError("no token configured for this X account")
        if not message.text.strip():
            return failed(message, Rejected("empty"))
        length = weighted_length(message.text)
        if length > self.max_length:
            log.info("X post refused locally: weighted length %d > %d", length, self.max_length)
            return failed(message, Rejected("too long"))
        session = self._ensure_session()
        url = f"{self._config.base_url.rstrip('/')}{CREATE_POST_PATH}"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with session.post(url, json={"text": message.text}, headers=headers) as answer:
                status = answer.status
                body = await _json_or_none(answer)
                answer_headers = {k.lower(): v for k, v in answer.headers.items()}
        except TimeoutError:
            raise ConnectionFailed("timeout") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"network error ({type(exc).__name__})") from None
        log.debug("X answered HTTP %d for delivery %d", status, message.delivery_id)
        kind = error_kind(status)
        if kind is None:
            return self._created(message, username, body)
        raise self._error(kind, status, body, answer_headers)

    def _created(self, message: OutgoingMessage, username: str, body: Any) -> SendResult:
        data = body.get("data") if isinstance(body, Mapping) else None
        post_id = data.get("id") if isinstance(data, Mapping) else None
        if not isinstance(post_id, str) or not post_id.isdigit():
            # X said it created the post; a retry will meet the duplicate check.
            raise ConnectionFailed("unexpected response shape")
        return SendResult(
            delivery_id=message.delivery_id,
            state=STATUS_MAP["created"],
            provider_message_id=post_id,
            url=self._config.post_url(username, post_id),
        )

    def _error(
        self, kind: type[ChannelError], status: int, body: Any, headers: Mapping[str, str]
    ) -> ChannelError:
        if kind is Throttled:
            retry_after = retry_after_from_headers(headers, self._clock())
            return Throttled("HTTP 429", retry_after=retry_after)
        if status == 403:
            detail = _detail(body).lower()
            for words, reason in FORBIDDEN_REASONS:
                if words in detail:
                    return Rejected(reason)
            return ConfigError("not allowed to post (HTTP 403)")
        if status == 401:
            return ConfigError("authentication refused (HTTP 401)")
        if kind is Rejected and status == 400:
            return Rejected("invalid request")
        if kind is ConnectionFailed:
            return ConnectionFailed(f"HTTP {status}")
        return kind(f"HTTP {status}")


async def _json_or_none(answer: aiohttp.ClientResponse) -> Any:
    try:
        return await answer.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None
