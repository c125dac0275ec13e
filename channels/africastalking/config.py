"""Account settings for Africa's Talking, shared by every channel that uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import AfricasTalkingSection

PRODUCTION_BASE_URL = "https://api.africastalking.com"
SANDBOX_BASE_URL = "https://api.sandbox.africastalking.com"


@dataclass(frozen=True, slots=True)
class AfricasTalkingConfig:
    """How to reach one Africa's Talking account.

    Attributes:
        username: the application's username (``sandbox`` for the sandbox).
        api_key: the application's API key; never shown in ``repr``.
        base_url: scheme and host of the API, without ``/version1`` (the SDK adds it), so a
            simulator's ``start()`` result can be passed as is.
        sender_id: registered alphanumeric sender id or short code; None uses the account's
            default.
        enqueue: ask Africa's Talking to queue the messages and answer before the telcos do,
            which its documentation recommends for bulk senders.
        executor_workers: threads running the synchronous SDK, hence the most provider
            requests in flight at once for this account.
        request_timeout: seconds for connecting and, separately, for each read.
        batch_size: recipients per bulk request (Africa's Talking publishes no maximum).
        rate_per_second: messages per second we allow ourselves towards this account.
        cost_currency: the currency actual costs are kept in (the gateway's ``[pricing]
            currency``); a cost the provider states in another currency is not recorded.
            None records any.
    """

    username: str
    api_key: str = field(repr=False)
    base_url: str = PRODUCTION_BASE_URL
    sender_id: str | None = None
    enqueue: bool = True
    executor_workers: int = 8
    request_timeout: float = 10.0
    batch_size: int = 100
    rate_per_second: float = 200.0
    cost_currency: str | None = None

    def __post_init__(self) -> None:
        if self.executor_workers < 1:
            raise ValueError("executor_workers must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")

    @classmethod
    def from_settings(
        cls, section: AfricasTalkingSection, api_key: str, *, cost_currency: str | None = None
    ) -> AfricasTalkingConfig:
        """Build from the ``[africastalking]`` settings and the key read from the environment."""
        return cls(
            username=section.username,
            api_key=api_key,
            base_url=section.base_url,
            sender_id=section.sender_id,
            executor_workers=section.executor_workers,
            request_timeout=section.request_timeout_s,
            batch_size=section.batch_size,
            rate_per_second=section.rate_per_second,
            cost_currency=cost_currency,
        )
