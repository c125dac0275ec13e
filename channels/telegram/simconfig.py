"""What the Telegram Bot API simulator does on a run: outcomes, shares, delays, limits.

Kept apart from the server so the CLI, the demo and the benchmarks can build a configuration
without importing aiohttp's server side.

Outcome words and what ``sendMessage`` answers for them (HTTP status = ``error_code``; the
descriptions are the ones Telegram sends):

================  ====  =====================================================================
ok                200   ``{"ok": true, "result": <Message>}``
blocked           403   Forbidden: bot was blocked by the user
deactivated       403   Forbidden: user is deactivated
cannot_initiate   403   Forbidden: bot can't initiate conversation with a user
kicked            403   Forbidden: bot was kicked from the group chat
not_member        403   Forbidden: bot is not a member of the channel chat
chat_not_found    400   Bad Request: chat not found
no_rights         400   Bad Request: not enough rights to send text messages to the chat
migrated          400   Bad Request: group chat was upgraded to a supergroup chat
                        (``parameters.migrate_to_chat_id``)
throttled         429   Too Many Requests: retry after N (``parameters.retry_after`` = N)
server_error      500   Internal Server Error
bad_gateway       502   an HTML page, as Telegram's front end sends when the API is down
timeout           --    no answer for ``timeout_hang`` seconds
================  ====  =====================================================================

A chat's outcome is ``outcomes[chat_id]`` (the chat id exactly as sent: ``"12345"`` or
``"@channel"``), else one draw from ``request_failure_shares`` (the whole-request words),
then one from ``recipient_failure_shares``, else ``ok``.

Flood limits (off by default): with ``enforce_bot_rate`` set, a token bucket of that rate
and ``bot_burst`` answers 429 to any ``sendMessage`` beyond it; with
``enforce_chat_limits``, a message to a chat that arrives less than ``chat_interval`` (private)
or ``group_interval`` (groups, channels) after the last accepted one gets 429 too. Telegram
publishes no algorithm, only "about 30 messages per second" and "about one per second per
chat, 20 per minute per group" (https://core.telegram.org/bots/faq); these are the strict
readings, so a benchmark run with zero 429s here respects the documented limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar, get_args

from channels.simdraws import Seconds

RecipientOutcome = Literal[
    "ok",
    "blocked",
    "deactivated",
    "cannot_initiate",
    "kicked",
    "not_member",
    "chat_not_found",
    "no_rights",
    "migrated",
]
RequestOutcome = Literal["throttled", "server_error", "bad_gateway", "timeout"]
Outcome = RecipientOutcome | RequestOutcome
OutcomeT = TypeVar("OutcomeT", bound=str)

RECIPIENT_OUTCOMES: frozenset[str] = frozenset(get_args(RecipientOutcome))
REQUEST_OUTCOMES: frozenset[str] = frozenset(get_args(RequestOutcome))

# Outcome -> (HTTP status and error_code, description).
ERRORS: Mapping[str, tuple[int, str]] = {
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "cannot_initiate": (403, "Forbidden: bot can't initiate conversation with a user"),
    "kicked": (403, "Forbidden: bot was kicked from the group chat"),
    "not_member": (403, "Forbidden: bot is not a member of the channel chat"),
    "chat_not_found": (400, "Bad Request: chat not found"),
    "no_rights": (400, "Bad Request: not enough rights to send text messages to the chat"),
    "migrated": (400, "Bad Request: group chat was upgraded to a supergroup chat"),
    "server_error": (500, "Internal Server Error"),
}

DEFAULT_TOKEN = "123456789:AAF-wartaSimulatorToken_0123456789ab"  # noqa: S105 - the simulator's own


def _default_channels() -> dict[str, int]:
    return {"warta_demo": -1001000000001}


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """One run of the simulator.

    Attributes:
        token: the bot token it accepts; a wrong token of the right shape gets 401
            Unauthorized, a malformed one 404 Not Found, as Telegram answers.
        bot_username, bot_first_name: what ``getMe`` says (the id is the token's prefix).
        latency: seconds before answering each request, fixed or a (low, high) range.
        request_failure_shares: per ``sendMessage``, the chance of each whole-request outcome.
        recipient_failure_shares: per ``sendMessage``, the chance of each recipient outcome.
        outcomes: canned outcome per chat id as sent, applied before any draw.
        retry_after_seconds: ``retry_after`` for canned or drawn ``throttled`` answers.
        timeout_hang: how long a ``timeout`` request hangs (longer than any client timeout).
        channels: public channels it knows, ``username -> chat id``; ``@username`` targets
            not listed here get "chat not found".
        enforce_bot_rate: messages per second for the whole bot; None enforces nothing.
        bot_burst: the bucket's size; None means ``enforce_bot_rate`` (one second's worth).
        enforce_chat_limits: answer 429 to messages that come too soon after the last one
            accepted for the same chat.
        chat_interval, group_interval: the spacing enforced for private chats, and for groups
            and channels (negative ids, ``@username``).
        limit_slack: seconds of tolerance on the per-chat spacing (clock and scheduling noise).
        webhook_url, webhook_secret: a webhook set from the start, as if ``setWebhook`` had been
            called; ``deliver`` POSTs citizens' updates there.
        long_poll_max: the longest ``getUpdates`` waits for an update, whatever it asks.
        max_pending_updates: updates kept for ``getUpdates``; the oldest are dropped.
        max_records: request records kept in ``received`` (counters are never bounded).
        seed: seeds every draw, so a run repeats exactly; None draws from the OS.
    """

    token: str = field(default=DEFAULT_TOKEN, repr=False)
    bot_username: str = "warta_sim_bot"
    bot_first_name: str = "Warta"
    latency: Seconds = 0.0
    request_failure_shares: Mapping[RequestOutcome, float] = field(default_factory=dict)
    recipient_failure_shares: Mapping[RecipientOutcome, float] = field(default_factory=dict)
    outcomes: Mapping[str, Outcome] = field(default_factory=dict, repr=False)
    retry_after_seconds: int = 5
    timeout_hang: float = 60.0
    channels: Mapping[str, int] = field(default_factory=_default_channels)
    enforce_bot_rate: float | None = None
    bot_burst: float | None = None
    enforce_chat_limits: bool = False
    chat_interval: float = 1.0
    group_interval: float = 3.0
    limit_slack: float = 0.0
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    long_poll_max: float = 30.0
    max_pending_updates: int = 10_000
    max_records: int = 1000
    seed: int | None = 0

    def __post_init__(self) -> None:
        _check_shares("request_failure_shares", self.request_failure_shares, REQUEST_OUTCOMES)
        _check_shares("recipient_failure_shares", self.recipient_failure_shares, RECIPIENT_OUTCOMES)
        for outcome in self.outcomes.values():
            if outcome not in RECIPIENT_OUTCOMES and outcome not in REQUEST_OUTCOMES:
                raise ValueError(f"outcomes: unknown outcome {outcome!r}")
        if ":" not in self.token:
            raise ValueError("token must look like <bot id>:<secret>")
        if self.enforce_bot_rate is not None and self.enforce_bot_rate <= 0:
            raise ValueError("enforce_bot_rate must be positive")
        if self.retry_after_seconds < 1:
            raise ValueError("retry_after_seconds must be at least 1")
        if self.max_pending_updates < 1 or self.max_records < 1:
            raise ValueError("max_pending_updates and max_records must be at least 1")

    @property
    def bot_id(self) -> int:
        prefix = self.token.split(":", 1)[0]
        return int(prefix) if prefix.isdigit() else 1


def _check_shares(name: str, shares: Mapping[OutcomeT, float], allowed: frozenset[str]) -> None:
    for key, share in shares.items():
        if key not in allowed:
            raise ValueError(f"{name}: unknown outcome {key!r}")
        if share < 0:
            raise ValueError(f"{name}: negative share for {key!r}")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError(f"{name}: shares add up to more than 1")
