"""Settings for posting to Facebook Pages through the Graph API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from channels.meta.graph import DEFAULT_API_VERSION, PRODUCTION_BASE_URL

PUBLIC_BASE_URL = "https://www.facebook.com"


@dataclass(frozen=True, slots=True)
class FacebookConfig:
    """Which Pages we may post to, and how.

    Attributes:
        page_tokens: Page id -> Page access token (``pages_manage_posts`` and the Page's
            ``CREATE_CONTENT`` task); never shown in ``repr``. A delivery's recipient is the
            Page id, so one config serves every Page an agency runs.
        base_url: scheme and host of the Graph API (a simulator's ``start()`` result works).
        api_version: Graph API version in the path.
        public_base_url: where posts are seen, for each result's ``url``.
        attach_link: also send the text's first http(s) URL as the post's ``link``, which
            makes Facebook show its preview card.
        request_timeout: seconds for each request.
        max_connections: most requests in flight at once.
        batch_size: posts per ``send`` (one Page per request; run concurrently).
        rate_per_second: posts per second we allow ourselves.
    """

    page_tokens: Mapping[str, str] = field(repr=False)
    base_url: str = PRODUCTION_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    public_base_url: str = PUBLIC_BASE_URL
    attach_link: bool = True
    request_timeout: float = 15.0
    max_connections: int = 8
    batch_size: int = 1
    rate_per_second: float = 1.0

    def __post_init__(self) -> None:
        for page_id, token in self.page_tokens.items():
            if not page_id.isdigit() or not token:
                raise ValueError("page_tokens: every key must be a numeric Page id with a token")
        if self.batch_size < 1 or self.max_connections < 1:
            raise ValueError("batch_size and max_connections must be at least 1")
        if self.request_timeout <= 0 or self.rate_per_second <= 0:
            raise ValueError("request_timeout and rate_per_second must be positive")

    @property
    def page_ids(self) -> tuple[str, ...]:
        return tuple(self.page_tokens)
