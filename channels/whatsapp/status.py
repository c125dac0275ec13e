"""WhatsApp Cloud API status words and error codes mapped to ours, as plain tables.

Sources:
- status webhook ``statuses[].status``: "Status messages webhook reference",
  https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status
- error codes: "WhatsApp error codes",
  https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
- throughput (80 mps, error 130429):
  https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput
"""

from __future__ import annotations

from collections.abc import Mapping

from channels.meta.errors import GRAPH_RULES, ErrorRule
from gateway.domain import DeliveryState
from gateway.errors import ConfigError, ConnectionFailed, RecipientStopped, Rejected, Throttled

# Webhook status word -> our state. "read" implies delivered (Meta skips "delivered" when a
# message is read at once); "played" is a voice message heard.
STATUS_MAP: Mapping[str, DeliveryState] = {
    "sent": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "read": DeliveryState.DELIVERED,
    "played": DeliveryState.DELIVERED,
    "failed": DeliveryState.FAILED,
}
UNKNOWN_STATUS_STATE = DeliveryState.SENT

_WHATSAPP_ONLY: Mapping[int, ErrorRule] = {
    # Throughput of the business number (80 mps by default): the whole channel waits a moment.
    130429: ErrorRule(Throttled, "throughput_limit", 1.0),
    # WhatsApp Business Account rate limit (business-use-case).
    80007: ErrorRule(Throttled, "waba_rate_limit", 60.0),
    # Quality-based limit on this phone number; it lifts slowly, so wait long.
    131048: ErrorRule(Throttled, "spam_rate_limit", 3600.0),
    # Too many messages to this one recipient (about one per 6 s): only they wait.
    131056: ErrorRule(Throttled, "pair_rate_limit", 6.0, per_message=True),
    131000: ErrorRule(ConnectionFailed, "something_went_wrong"),
    131016: ErrorRule(ConnectionFailed, "service_unavailable"),
    # Our account or template is wrong: nothing will succeed until an operator acts.
    131005: ErrorRule(ConfigError, "access_denied"),
    131031: ErrorRule(ConfigError, "account_locked"),
    131042: ErrorRule(ConfigError, "payment_issue"),
    131045: ErrorRule(ConfigError, "phone_not_registered"),
    133010: ErrorRule(ConfigError, "phone_not_registered"),
    # A template is one language's: its messages fail each for itself (retried a few times,
    # then failed), and the channel goes on in the other languages instead of being held as a
    # whole (an account problem that refuses every request holds it: gateway.outbox).
    132000: ErrorRule(ConfigError, "template_param_count_mismatch", per_message=True),
    132001: ErrorRule(ConfigError, "template_missing", per_message=True),
    132012: ErrorRule(ConfigError, "template_param_format_mismatch", per_message=True),
    132015: ErrorRule(ConfigError, "template_paused", per_message=True),
    132016: ErrorRule(ConfigError, "template_disabled", per_message=True),
    # For WhatsApp, 368 restricts the whole business account, not one message.
    368: ErrorRule(ConfigError, "account_restricted"),
    # This recipient or this message only.
    # 131026 covers "not a WhatsApp number", old app, terms not accepted and undisclosed
    # reasons; Meta does not say the person blocked us, so it is not treated as an opt-out.
    131026: ErrorRule(Rejected, "undeliverable", per_message=True),
    # Outside the 24 h window for a non-template message; we only send templates, so this
    # means the request was not a template Meta accepts for this user.
    131047: ErrorRule(Rejected, "outside_window", per_message=True),
    # "Meta chose not to deliver" (per-user marketing limits): an announcement is time-bound,
    # so a retry a day later is not useful.
    131049: ErrorRule(Rejected, "not_delivered_ecosystem", per_message=True),
    # The citizen stopped marketing messages from us: their choice, never retry.
    131050: ErrorRule(RecipientStopped, "stopped_marketing", per_message=True),
    131051: ErrorRule(Rejected, "unsupported_message_type", per_message=True),
    131021: ErrorRule(Rejected, "recipient_is_sender", per_message=True),
    131008: ErrorRule(Rejected, "required_parameter_missing", per_message=True),
    131009: ErrorRule(Rejected, "parameter_invalid", per_message=True),
    132005: ErrorRule(Rejected, "template_text_too_long", per_message=True),
    132007: ErrorRule(Rejected, "template_format_policy", per_message=True),
}

# Send answers and failed-status errors: WhatsApp codes first, then the shared Graph codes.
ERROR_RULES: Mapping[int, ErrorRule] = {**GRAPH_RULES, **_WHATSAPP_ONLY}
