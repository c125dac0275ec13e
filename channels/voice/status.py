"""Africa's Talking voice status words mapped to ours, as plain tables.

Sources:
- call request answer, per number ``status``: ``Queued`` or the refusal words
  ``InvalidPhoneNumber``, ``DestinationNotSupported``, ``InsufficientCredit`` (Africa's Talking
  "Make a call" documentation, as mirrored by the SDKs, e.g. the ``at_ex`` docs on hexdocs.pm);
- final callback (``isActive=0``): ``callSessionState`` / ``status`` and ``hangupCause``
  (docs.africastalking.com/voice/callhandler; help.africastalking.com "What are the parameters
  for Hang up Cause" and "What does hangupCause parameter mean").
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.domain import DeliveryState
from gateway.errors import AccountRefused, ChannelError, ConfigError, ConnectionFailed, Rejected

# Per-number ``status`` of a call request answer -> None (queued) or the error kind.
CALL_ENTRY_STATUS: Mapping[str, type[ChannelError] | None] = {
    "Queued": None,
    "InvalidPhoneNumber": Rejected,
    "DestinationNotSupported": Rejected,
    # Top up the account: every later call fails the same way until an operator acts.
    "InsufficientCredit": AccountRefused,
}
# A word we do not know is a refusal of this call, never assumed queued.
UNKNOWN_CALL_ENTRY_STATUS: type[ChannelError] = Rejected

# ``errorMessage`` of an answer that lists no entries: keywords -> (error kind, our word).
# The message itself is never passed on: it may repeat the number it complains about.
REQUEST_ERROR_WORDS: tuple[tuple[str, type[ChannelError], str], ...] = (
    ("credit", AccountRefused, "InsufficientCredit"),
    ("balance", AccountRefused, "InsufficientCredit"),
    ("callerid", ConfigError, "InvalidCallerId"),
    ("from", ConfigError, "InvalidCallerId"),
    ("username", AccountRefused, "InvalidUsername"),
)
UNKNOWN_REQUEST_ERROR: tuple[type[ChannelError], str] = (ConnectionFailed, "RequestRefused")

# Final callback: ``callSessionState`` or ``status`` words that mean the citizen listened.
ANSWERED_WORDS = frozenset({"Completed", "Success", "Answered"})

# Final callback ``hangupCause`` -> our state. NORMAL_CLEARING: "the call was successfully
# answered and successfully ended"; every other cause means nobody heard the message.
HANGUP_CAUSES: Mapping[str, DeliveryState] = {
    "NORMAL_CLEARING": DeliveryState.DELIVERED,
    "NO_ANSWER": DeliveryState.FAILED,
    "NO_USER_RESPONSE": DeliveryState.FAILED,
    "USER_BUSY": DeliveryState.FAILED,
    "CALL_REJECTED": DeliveryState.FAILED,
    "UNALLOCATED_NUMBER": DeliveryState.FAILED,
    "INVALID_NUMBER_FORMAT": DeliveryState.FAILED,
    "SUBSCRIBER_ABSENT": DeliveryState.FAILED,
    "USER_NOT_REGISTERED": DeliveryState.FAILED,
    "NORMAL_TEMPORARY_FAILURE": DeliveryState.FAILED,
    "RECOVERY_ON_TIMER_EXPIRE": DeliveryState.FAILED,
    "NETWORK_OUT_OF_ORDER": DeliveryState.FAILED,
    "DESTINATION_OUT_OF_ORDER": DeliveryState.FAILED,
    "NO_ROUTE_DESTINATION": DeliveryState.FAILED,
    "SERVICE_UNAVAILABLE": DeliveryState.FAILED,
    "ORIGINATOR_CANCEL": DeliveryState.FAILED,
    "LOSE_RACE": DeliveryState.FAILED,
    "UNSPECIFIED": DeliveryState.FAILED,
}

# Causes where calling again later may reach the citizen (phone busy, off, unanswered or a
# passing network fault), for a dispatcher that re-calls emergencies. Not used for the state.
RETRY_LATER_CAUSES = frozenset(
    {
        "NO_ANSWER",
        "NO_USER_RESPONSE",
        "USER_BUSY",
        "SUBSCRIBER_ABSENT",
        "NORMAL_TEMPORARY_FAILURE",
        "RECOVERY_ON_TIMER_EXPIRE",
        "NETWORK_OUT_OF_ORDER",
        "SERVICE_UNAVAILABLE",
    }
)

# Final ``callSessionState`` words without a cause we know -> our state.
SESSION_STATES: Mapping[str, DeliveryState] = {
    "Completed": DeliveryState.DELIVERED,
    "NotAnswered": DeliveryState.FAILED,
    "Failed": DeliveryState.FAILED,
    "Aborted": DeliveryState.FAILED,
}
# The call is over and nothing says it was heard: report it failed (and log the word).
UNKNOWN_FINAL_STATE = DeliveryState.FAILED
