"""Settings for one WhatsApp Business phone number on the Cloud API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from channels.meta.graph import DEFAULT_API_VERSION, PRODUCTION_BASE_URL


def _default_languages() -> dict[str, str]:
    return {"id": "id", "en": "en"}


@dataclass(frozen=True, slots=True)
class WhatsAppConfig:
    """How to send from one business phone number, and how to check its webhooks.

    Attributes:
        phone_number_id: the Cloud API id of our business phone number (not the number).
        access_token: a system-user access token with ``whatsapp_business_messaging``.
        app_secret: the Meta app's secret, which signs webhooks (``X-Hub-Signature-256``).
        verify_token: the token we typed into the app dashboard for the subscription handshake.
        template_name: the approved template that carries announcements. Its body must hold
            exactly one text variable (``{{1}}``, or ``{{<parameter_name>}}``) for the text.
        template_languages: our language word -> the template's language code at Meta.
        default_language: the code used when a message's language has no entry.
        parameter_name: set for a template with named parameters; None for ``{{1}}``.
        base_url: scheme and host of the Graph API (a simulator's ``start()`` result works).
        api_version: Graph API version in the path.
        request_timeout: seconds for each request.
        max_connections: most requests in flight at once.
        batch_size: messages per ``send`` (the Cloud API takes one recipient per request;
            ``send`` runs them concurrently).
        rate_per_second: messages per second; the Cloud API allows 80 per number by default.
    """

    phone_number_id: str
    access_token: str = field(repr=False)
    app_secret: str = field(default="", repr=False)
    verify_token: str = field(default="", repr=False)
    template_name: str = "warta_announcement"
    template_languages: Mapping[str, str] = field(default_factory=_default_languages)
    default_language: str = "id"
    parameter_name: str | None = None
    base_url: str = PRODUCTION_BASE_URL
    api_version: str = DEFAULT_API_VERSION
    request_timeout: float = 10.0
    max_connections: int = 32
    batch_size: int = 1
    rate_per_second: float = 80.0

    def __post_init__(self) -> None:
        if not self.phone_number_id.isdigit():
            raise ValueError("phone_number_id must be the numeric Cloud API id")
        if not self.template_name:
            raise ValueError("template_name must be set")
        if self.batch_size < 1 or self.max_connections < 1:
            raise ValueError("batch_size and max_connections must be at least 1")
        if self.request_timeout <= 0 or self.rate_per_second <= 0:
            raise ValueError("request_timeout and rate_per_second must be positive")

    def language_code(self, language: str) -> str:
        """The template language code for one of our language words."""
        return self.template_languages.get(language, self.default_language)
