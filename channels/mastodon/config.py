"""Settings for posting to accounts on one Mastodon server."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Visibility = Literal["public", "unlisted", "private", "direct"]
DEFAULT_MAX_CHARACTERS = 500
DEFAULT_URL_RESERVATION = 23


@dataclass(frozen=True, slots=True)
class MastodonConfig:
    """How to reach one Mastodon server and which of its accounts Warta posts as.

    Attributes:
        base_url: the server, e.g. ``https://mastodon.social`` (a simulator's ``start()``
            result can be passed as is).
        accounts: account name (as used in a delivery's ``recipient``, e.g. ``bpbd``) ->
            access token with the ``write:statuses`` scope. Never shown in ``repr``.
        visibility: ``public`` so every citizen can see the post.
        max_characters: the server's limit (500 unless its admin changed it);
            ``discover_limits`` replaces it with what ``/api/v2/instance`` says.
        characters_reserved_per_url: what one link counts as (23 on stock Mastodon).
        discover_limits: read ``configuration.statuses`` from ``/api/v2/instance`` on start.
        request_timeout: seconds for the whole request.
        rate_per_second: posts per second we allow ourselves; stock Mastodon allows 300
            API requests per 5 minutes and 300 new statuses per 3 hours per account.
    """

    base_url: str
    accounts: Mapping[str, str] = field(repr=False)
    visibility: Visibility = "public"
    max_characters: int = DEFAULT_MAX_CHARACTERS
    characters_reserved_per_url: int = DEFAULT_URL_RESERVATION
    discover_limits: bool = True
    request_timeout: float = 10.0
    rate_per_second: float = 0.5

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("accounts: at least one Mastodon account is needed")
        if not all(name and token for name, token in self.accounts.items()):
            raise ValueError("accounts: every account needs a name and a token")
        if self.visibility not in ("public", "unlisted", "private", "direct"):
            raise ValueError("visibility must be public, unlisted, private or direct")
        if self.max_characters < 1 or self.characters_reserved_per_url < 0:
            raise ValueError("max_characters must be positive")
        if self.request_timeout <= 0 or self.rate_per_second <= 0:
            raise ValueError("request_timeout and rate_per_second must be positive")

    @property
    def account_names(self) -> tuple[str, ...]:
        return tuple(self.accounts)

    def __repr__(self) -> str:
        return (
            f"MastodonConfig(base_url={self.base_url!r}, accounts={self.account_names!r}, "
            f"visibility={self.visibility!r}, max_characters={self.max_characters!r})"
        )
