"""What can go wrong when a channel talks to its provider.

A channel's ``send`` never decides whether to retry. It reports one of these kinds, and the
dispatcher decides what each means::

    ChannelError                    something went wrong talking to a provider
    ├── ConfigError                 our side is misconfigured (credentials, account, sender id):
    │                               nothing will succeed until an operator fixes it; a whole
    │                               request refused so holds the channel (AccountHeld)
    ├── ConnectionFailed            network error, timeout or 5xx: retry with backoff
    │   └── Throttled               429 or the provider's rate words: retry after ``retry_after``
    ├── RecipientStopped            the citizen blocked us or opted out at the provider:
    │                               mark them opted out of this channel, never retry
    └── Rejected                    the provider refused this message for a reason
                                    (invalid number, content): permanent, never retry

An error may describe the whole batch (raised from ``send``) or one recipient (carried in that
recipient's ``SendResult``). Messages never contain phone numbers or secrets: channels pass the
provider's reason words, not the request.
"""

from __future__ import annotations


class ChannelError(Exception):
    """Base of every provider-facing error; ``kind`` is the stable word stored on a delivery."""

    kind = "error"
    retryable = False

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"


class ConfigError(ChannelError):
    kind = "config"


class AccountRefused(ConfigError):
    """The provider refused the account itself (its balance ran out, its credentials were
    refused), not one channel's setting such as a sender id: every channel paid from that
    account (``Channel.paying_account``) would be refused alike."""


class ConnectionFailed(ChannelError):
    kind = "connection"
    retryable = True


class Throttled(ConnectionFailed):
    kind = "throttled"

    def __init__(self, reason: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, retry_after={self.retry_after!r})"


class HandedBack(Throttled):
    """A claimed request given back unsent: its channel is paused by a 429 another request
    met, the rate window booked for it passed before it could leave (see
    ``gateway.ratelimit.SEND_BY``), or the gateway is stopping. Queued again, no attempt
    spent."""


class AccountHeld(HandedBack):
    """A request the provider refused whole for an account reason (a ``ConfigError``: the
    balance ran out, the credentials or sender id were refused, the account is under review):
    nothing left. Its channel is held (``[dispatch] account_hold_s``) and its messages are
    queued again for after the hold, no attempt spent, until an operator puts the account
    right; then the broadcast goes on where it stopped. Stored with the kind ``config``."""

    kind = "config"


class RecipientStopped(ChannelError):
    kind = "stopped"


class Rejected(ChannelError):
    kind = "rejected"


ERROR_KINDS: dict[str, type[ChannelError]] = {
    cls.kind: cls
    for cls in (ChannelError, ConfigError, ConnectionFailed, Throttled, RecipientStopped, Rejected)
}
