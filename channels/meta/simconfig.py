"""What the Meta simulator does on a run: accounts, outcomes, shares, delays, webhooks.

Kept apart from the server so the CLI, the demo and the benchmarks can build a configuration
without importing aiohttp's server side.

Outcome words, per WhatsApp recipient (the ``to`` value as sent) or per Facebook Page id, and
the Graph error the simulator answers with (HTTP status, ``code``, message):

=========================  ====  =======  ==============================================
success                    200   -        ``{"messages": [{"id": "wamid..."}]}`` / ``{"id"}``
undeliverable              400   131026   Message undeliverable
outside_window             400   131047   Re-engagement message
not_delivered_ecosystem    400   131049   Meta chose not to deliver
stopped_marketing          400   131050   User stopped marketing messages
unsupported_message_type   400   131051   Unsupported message type
pair_rate_limit            400   131056   Pair rate limit hit
throughput_limit           400   130429   Rate limit hit
spam_rate_limit            400   131048   Spam rate limit hit
waba_rate_limit            400   80007    Rate limit issues
app_rate_limit             400   4        Application request limit reached
user_rate_limit            400   17       User request limit reached
page_rate_limit            400   32       Page request limit reached
custom_rate_limit          400   613      Calls to this api have exceeded the rate limit
template_missing           404   132001   Template name does not exist in the translation
template_paused            400   132015   Template is paused
policy_block               400   368      Temporarily blocked for policies violations
duplicate_post             400   506      Duplicate status message
permission_denied          403   200      Permissions error
token_invalid              401   190      Invalid OAuth access token
internal_error             500   131000   Something went wrong
api_service                503   2        Service temporarily unavailable
server_error               whole request: HTTP 502, an HTML page (no Graph body)
throttled                  whole request: HTTP 429 with ``Retry-After``, Graph code 4
timeout                    whole request: no answer for ``timeout_hang`` seconds
=========================  ====  =======  ==============================================

Codes from Meta's "WhatsApp error codes" and Graph API "Handling Errors" pages. A recipient's
outcome is ``outcomes[recipient]`` if given, else one draw from ``request_failure_shares``,
then one from ``failure_shares``, else ``success``.

Status webhook outcomes (per WhatsApp recipient, or drawn from ``status_shares``): ``sent``
(sent only), ``delivered`` (sent, delivered), ``read`` (sent, delivered, read) or
``failed:<code>`` (sent, failed with that error code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from channels.simdraws import Seconds

GRAPH_OUTCOMES: Mapping[str, tuple[int, int, str]] = {
    "undeliverable": (400, 131026, "Message undeliverable"),
    "outside_window": (400, 131047, "Re-engagement message"),
    "not_delivered_ecosystem": (400, 131049, "Meta chose not to deliver"),
    "stopped_marketing": (400, 131050, "User stopped marketing messages"),
    "unsupported_message_type": (400, 131051, "Unsupported message type"),
    "pair_rate_limit": (400, 131056, "Pair rate limit hit"),
    "throughput_limit": (400, 130429, "Rate limit hit"),
    "spam_rate_limit": (400, 131048, "Spam rate limit hit"),
    "waba_rate_limit": (400, 80007, "Rate limit issues"),
    "app_rate_limit": (400, 4, "Application request limit reached"),
    "user_rate_limit": (400, 17, "User request limit reached"),
    "page_rate_limit": (400, 32, "Page request limit reached"),
    "custom_rate_limit": (400, 613, "Calls to this api have exceeded the rate limit"),
    "template_missing": (404, 132001, "Template name does not exist in the translation"),
    "template_paused": (400, 132015, "Template is paused"),
    "policy_block": (400, 368, "Temporarily blocked for policies violations"),
    "duplicate_post": (400, 506, "Duplicate status message"),
    "permission_denied": (403, 200, "Permissions error"),
    "token_invalid": (401, 190, "Invalid OAuth access token"),
    "internal_error": (500, 131000, "Something went wrong"),
    "api_service": (503, 2, "Service temporarily unavailable"),
}
REQUEST_OUTCOMES: frozenset[str] = frozenset({"server_error", "throttled", "timeout"})
OUTCOMES: frozenset[str] = frozenset({"success", *GRAPH_OUTCOMES, *REQUEST_OUTCOMES})
FINAL_STATUSES: frozenset[str] = frozenset({"sent", "delivered", "read"})


def split_status_outcome(word: str) -> tuple[str, int | None]:
    """``"failed:131026"`` -> ("failed", 131026); ``"read"`` -> ("read", None); checks both."""
    status, _, code = word.partition(":")
    if status == "failed" and code.isdigit():
        return status, int(code)
    if status in FINAL_STATUSES and not code:
        return status, None
    raise ValueError(f"unknown status outcome {word!r}")


def _default_templates() -> frozenset[tuple[str, str]]:
    return frozenset({("warta_announcement", "id"), ("warta_announcement", "en")})


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """One run of the Meta simulator.

    Attributes:
        phone_number_id, whatsapp_token: the WhatsApp business number it serves and the
            token it accepts for it.
        display_phone_number, waba_id: shown in status webhooks.
        templates: approved (template name, language code) pairs; others get 132001.
        page_tokens: Page id -> the Page access token it accepts for that Page.
        app_secret: signs status webhooks (``X-Hub-Signature-256``).
        latency: seconds before answering each request, fixed or a (low, high) range.
        outcomes: canned outcome per WhatsApp recipient or Page id.
        request_failure_shares: chance per request of ``server_error``/``throttled``/``timeout``.
        failure_shares: chance per request of each Graph error outcome.
        retry_after_seconds: ``Retry-After`` sent with HTTP 429.
        timeout_hang: how long a ``timeout`` request hangs (longer than any client timeout).
        status_webhook_url: where status webhooks go; None sends none.
        status_webhook_delay: seconds before each status webhook of a message.
        status_outcomes: canned status outcome per WhatsApp recipient.
        status_shares: chance of each non-default status outcome.
        default_status: the status outcome when none is canned or drawn.
        webhook_concurrency: most messages whose webhooks are in flight at once.
        webhook_attempts: tries per webhook while the receiver errs or is down.
        webhook_backoff: seconds before the first retry, doubling each time.
        max_records: request records kept in ``received``.
        seed: seeds every draw, so a run repeats exactly; None draws from the OS.
    """

    phone_number_id: str = "100000000000001"
    whatsapp_token: str = field(default="warta-simulator-whatsapp-token", repr=False)
    display_phone_number: str = "15550000000"
    waba_id: str = "200000000000001"
    templates: frozenset[tuple[str, str]] = field(default_factory=_default_templates)
    page_tokens: Mapping[str, str] = field(
        default_factory=lambda: {"300000000000001": "warta-simulator-page-token"}, repr=False
    )
    app_secret: str = field(default="warta-simulator-app-secret", repr=False)
    latency: Seconds = 0.0
    outcomes: Mapping[str, str] = field(default_factory=dict, repr=False)
    request_failure_shares: Mapping[str, float] = field(default_factory=dict)
    failure_shares: Mapping[str, float] = field(default_factory=dict)
    retry_after_seconds: int = 1
    timeout_hang: float = 60.0
    status_webhook_url: str | None = None
    status_webhook_delay: Seconds = 0.0
    status_outcomes: Mapping[str, str] = field(default_factory=dict, repr=False)
    status_shares: Mapping[str, float] = field(default_factory=dict)
    default_status: str = "delivered"
    webhook_concurrency: int = 16
    webhook_attempts: int = 4
    webhook_backoff: float = 0.2
    max_records: int = 1000
    seed: int | None = 0

    def __post_init__(self) -> None:
        for outcome in self.outcomes.values():
            if outcome not in OUTCOMES:
                raise ValueError(f"outcomes: unknown outcome {outcome!r}")
        _check_shares("request_failure_shares", self.request_failure_shares, REQUEST_OUTCOMES)
        _check_shares("failure_shares", self.failure_shares, frozenset(GRAPH_OUTCOMES))
        for word in (*self.status_outcomes.values(), *self.status_shares, self.default_status):
            split_status_outcome(word)
        if sum(self.status_shares.values()) > 1.0 + 1e-9:
            raise ValueError("status_shares: shares add up to more than 1")
        if self.webhook_concurrency < 1 or self.webhook_attempts < 1:
            raise ValueError("webhook_concurrency and webhook_attempts must be at least 1")


def _check_shares(name: str, shares: Mapping[str, float], allowed: frozenset[str]) -> None:
    for key, share in shares.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown outcome {key!r}")
        if share < 0:
            raise ValueError(f"{name}: negative share for {key!r}")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"{name}: shares add up to more than 1")
