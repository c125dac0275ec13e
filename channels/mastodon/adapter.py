"""The Mastodon channel: one status per announcement per configured account (aiohttp)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import aiohttp

from channels.base import Channel, Encoding, OutgoingMessage, Reach, SendResult
from channels.batch import failed, send_each
from channels.mastodon.config import (
    DEFAULT_MAX_CHARACTERS,
    DEFAULT_URL_RESERVATION,
    MastodonConfig,
)
from channels.mastodon.status import STATUS_MAP, error_kind, validation_reason
from channels.mastodon.textcount import status_length
from gateway.errors import ConfigError, ConnectionFailed, Rejected, Throttled

log = logging.getLogger(__name__)

STATUSES_PATH = "/api/v1/statuses"
INSTANCE_PATH = "/api/v2/instance"


def retry_after_from_reset(value: str | None, now: float) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (ISO 8601); None when absent or unreadable."""
    if not value:
        return None
    try:
        reset = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if reset.tzinfo is None:
        return None
    return max(0.0, reset.timestamp() - now)


class MastodonChannel(Channel):
    """Posts statuses with ``POST /api/v1/statuses`` and a bearer token per account.

    Limits: ``max_length`` is Mastodon's default of 500; the server's own limit is
    ``max_characters`` on the instance (from config, replaced on ``start()`` by
    ``/api/v2/instance`` when ``discover_limits``). Length is counted as Mastodon counts it
    (``channels.mastodon.textcount.status_length``: grapheme clusters, each link 23); a
    longer text is refused locally with ``Rejected("too long")`` and no request.

    Every request carries ``Idempotency-Key: <delivery's idempotency_key>``: Mastodon keeps
    the key for an hour and answers a repeat with the status it already created, so a retry
    after a lost answer never posts twice (within that hour).

    Each message's ``recipient`` is a configured account name; the result carries the
    status id and its public URL, state ``delivered``.
    """

    name: ClassVar[str] = "mastodon"
    reach: ClassVar[Reach] = "social"
    max_length: ClassVar[int] = DEFAULT_MAX_CHARACTERS
    max_segments: ClassVar[int | None] = None
    encoding: ClassVar[Encoding] = "unicode"
    batch_size = 1
    rate_per_second = 0.5
    supports_links: ClassVar[bool] = True
    status_map = STATUS_MAP

    def __init__(
        self,
        config: MastodonConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self.rate_per_second = config.rate_per_second
        # This server's limits; ``max_length`` stays the class-wide default (see the lead note).
        self.max_characters = config.max_characters
        self.characters_per_url = config.characters_reserved_per_url
        self._session = session
        self._owns_session = session is None
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"<MastodonChannel channel='mastodon' base_url={self._config.base_url!r} "
            f"accounts={self._config.account_names!r}>"
        )

    @classmethod
    def text_length(cls, text: str) -> int:
        """Length under the default server rules (links count 23), for the renderer."""
        return status_length(text, characters_per_url=DEFAULT_URL_RESERVATION)

    def length_of(self, text: str) -> int:
        """``text``'s length on this server (compare with ``max_characters``)."""
        return status_length(text, characters_per_url=self.characters_per_url)

    async def start(self) -> None:
        self._ensure_session()
        if self._config.discover_limits:
            await self.discover_limits()

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

    def _url(self, path: str) -> str:
        return f"{self._config.base_url.rstrip('/')}{path}"

    async def discover_limits(self) -> None:
        """Read the server's status limits from ``/api/v2/instance``; keep ours on failure."""
        try:
            async with self._ensure_session().get(self._url(INSTANCE_PATH)) as answer:
                body = await answer.json(content_type=None) if answer.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError):
            body = None
        configuration = body.get("configuration") if isinstance(body, Mapping) else None
        statuses = configuration.get("statuses") if isinstance(configuration, Mapping) else None
        if not isinstance(statuses, Mapping):
            log.warning("Mastodon instance limits unavailable; using configured ones")
            return
        limit = statuses.get("max_characters")
        per_url = statuses.get("characters_reserved_per_url")
        if isinstance(limit, int) and limit > 0:
            self.max_characters = limit
        if isinstance(per_url, int) and per_url >= 0:
            self.characters_per_url = per_url
        log.info("Mastodon server allows %d characters per status", self.max_characters)

    async def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Post each message of ``batch``; see the class docstring.

        Raises:
            ConfigError, Throttled, ConnectionFailed: when every post of the batch failed
                that way (with ``batch_size`` 1: when the one post did).
        """
        return await send_each(batch, self._post)

    async def _post(self, message: OutgoingMessage) -> SendResult:
        token = self._config.accounts.get(message.recipient)
        if token is None:
            raise ConfigError("no token configured for this Mastodon account")
        if not message.text.strip():
            return failed(message, Rejected("empty"))
        length = self.length_of(message.text)
        if length > self.max_characters:
            log.info("status refused locally: length %d > %d", length, self.max_characters)
            return failed(message, Rejected("too long"))
        form = {"status": message.text, "visibility": self._config.visibility}
        if message.language:
            form["language"] = message.language
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": message.idempotency_key,
        }
        try:
            async with self._ensure_session().post(
                self._url(STATUSES_PATH), data=form, headers=headers
            ) as answer:
                status = answer.status
                body = await _json_or_none(answer)
                reset = answer.headers.get("X-RateLimit-Reset")
        except TimeoutError:
            raise ConnectionFailed("timeout") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"network error ({type(exc).__name__})") from None
        log.debug("Mastodon answered HTTP %d for delivery %d", status, message.delivery_id)
        kind = error_kind(status)
        if kind is None:
            return _created(message, body)
        if kind is Throttled:
            raise Throttled("HTTP 429", retry_after=retry_after_from_reset(reset, self._clock()))
        if kind is Rejected and status == 422:
            error = body.get("error") if isinstance(body, Mapping) else None
            return failed(message, Rejected(validation_reason(error)))
        if status in (401, 403):
            raise ConfigError(f"authentication refused (HTTP {status})")
        if kind is Rejected:
            return failed(message, Rejected(f"HTTP {status}"))
        raise kind(f"HTTP {status}")


def _created(message: OutgoingMessage, body: Any) -> SendResult:
    status_id = body.get("id") if isinstance(body, Mapping) else None
    if not isinstance(status_id, str) or not status_id:
        # The status may exist; a retry carries the same Idempotency-Key and gets it back.
        raise ConnectionFailed("unexpected response shape")
    url = body.get("url") or body.get("uri")
    return SendResult(
        delivery_id=message.delivery_id,
        state=STATUS_MAP["created"],
        provider_message_id=status_id,
        url=url if isinstance(url, str) else None,
    )


async def _json_or_none(answer: aiohttp.ClientResponse) -> Any:
    try:
        return await answer.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None
