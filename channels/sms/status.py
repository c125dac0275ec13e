"""Africa's Talking's SMS status words mapped to ours, as plain tables.

Sources: Africa's Talking "Send SMS" documentation (per-recipient ``statusCode``/``status``)
and "SMS notifications" documentation (delivery report ``status``, ``failureReason``).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain import DeliveryState
from gateway.errors import (
    AccountRefused,
    ChannelError,
    ConfigError,
    ConnectionFailed,
    RecipientStopped,
    Rejected,
)

# Per-recipient ``statusCode`` of a send answer -> None (accepted) or the error kind.
SEND_STATUS: Mapping[int, type[ChannelError] | None] = {
    100: None,  # Processed
    101: None,  # Sent (status word "Success")
    102: None,  # Queued
    # Account problems: every later message fails the same way until an operator acts.
    401: ConfigError,  # RiskHold: Africa's Talking holds the account or content for review
    402: ConfigError,  # InvalidSenderId: our sender id is not registered for this network
    405: AccountRefused,  # InsufficientBalance: top up the account (calls draw on it too)
    # This number or this message cannot be delivered: permanent for this message only.
    403: Rejected,  # InvalidPhoneNumber
    404: Rejected,  # UnsupportedNumberType
    407: Rejected,  # CouldNotRoute
    # Africa's Talking documents 409 as a promotional sender id used outside the hours
    # Nigeria's NCC allows, not as the citizen's choice: marking them opted out would silently
    # drop them from every later alert, so it is a rejection of this message.
    409: Rejected,  # DoNotDisturbRejection
    406: RecipientStopped,  # UserInBlacklist: the citizen blocked our sender
    # Provider-side failures: retry with backoff.
    500: ConnectionFailed,  # InternalServerError
    501: ConnectionFailed,  # GatewayError
    502: ConnectionFailed,  # RejectedByGateway
}

# Unknown send codes are rejected (with the provider's word), never assumed sent.
UNKNOWN_SEND_STATUS: type[ChannelError] = Rejected

# Delivery report ``status`` -> our delivery state. Unknown words keep ``sent``.
DLR_STATUS: Mapping[str, DeliveryState] = {
    "Sent": DeliveryState.SENT,  # left Africa's Talking
    "Submitted": DeliveryState.SENT,  # handed to the telco
    "Buffered": DeliveryState.SENT,  # queued by the telco
    "Success": DeliveryState.DELIVERED,  # on the handset (final)
    "Rejected": DeliveryState.FAILED,  # refused by the telco (final)
    "Failed": DeliveryState.FAILED,  # could not reach the handset (final)
    "AbsentSubscriber": DeliveryState.FAILED,  # phone off or out of coverage; telco gave up
    "Expired": DeliveryState.EXPIRED,  # discarded by the telco
}
UNKNOWN_DLR_STATE = DeliveryState.SENT
