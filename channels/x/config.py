"""Settings for posting to X accounts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PRODUCTION_BASE_URL = "https://api.x.com"
PUBLIC_BASE_URL = "https://x.com"


@dataclass(frozen=True, slots=True)
class XConfig:
    """How to reach X and which accounts Warta posts as.

    Attributes:
        accounts: account username (without ``@``) -> OAuth 2.0 user-context access token
            with the ``tweet.write`` scope (plus ``tweet.read`` and ``users.read``, which X
            requires alongside it). A delivery's ``recipient`` is one of these usernames.
            Never shown in ``repr``; ``usernames`` lists the accounts.
        base_url: scheme and host of the API (``https://api.x.com``), so a simulator's
            ``start()`` result can be passed as is.
        public_base_url: where posts are seen, for ``https://x.com/{username}/status/{id}``.
        request_timeout: seconds for the whole request (connect, send, answer).
        rate_per_second: posts per second we allow ourselves; X's own cap on ``POST
            /2/tweets`` is per 15 minutes and per 24 hours, and answers 429 beyond it.
    """

    accounts: Mapping[str, str] = field(repr=False)
    base_url: str = PRODUCTION_BASE_URL
    public_base_url: str = PUBLIC_BASE_URL
    request_timeout: float = 10.0
    rate_per_second: float = 1.0

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("accounts: at least one X account is needed")
        for username, token in self.accounts.items():
            if not username or username.startswith("@"):
                raise ValueError("accounts: give usernames without '@'")
            if not token:
                raise ValueError("accounts: every account needs a token")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")

    @property
    def usernames(self) -> tuple[str, ...]:
        return tuple(self.accounts)

    def __repr__(self) -> str:
        return (
            f"XConfig(usernames={self.usernames!r}, base_url={self.base_url!r}, "
            f"request_timeout={self.request_timeout!r})"
        )

    def post_url(self, username: str, post_id: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/{username}/status/{post_id}"
