"""The domain's words as enums; their values are what the database and the API store."""

from __future__ import annotations

from enum import StrEnum


class AnnouncementStatus(StrEnum):
    DRAFT = "draft"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Urgency(StrEnum):
    NORMAL = "normal"
    EMERGENCY = "emergency"


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# Personal channels whose provider never confirms delivery: Telegram's Bot API answers "ok"
# and says nothing later, so ``sent`` is its last word and counts as reached. (Checked against
# the adapters' status maps by tests/gateway/test_stats_api.py.)
RECEIPTLESS_CHANNELS = frozenset({"telegram"})

PENDING_DELIVERY_STATES = (DeliveryState.QUEUED, DeliveryState.SENDING)
FINAL_DELIVERY_STATES = (
    DeliveryState.DELIVERED,
    DeliveryState.FAILED,
    DeliveryState.EXPIRED,
    DeliveryState.CANCELLED,
)


class Role(StrEnum):
    AUTHOR = "author"
    APPROVER = "approver"
    OPERATOR = "operator"
    ADMIN = "admin"


class Priority:
    """Lower is claimed first: emergencies ahead of everything else."""

    EMERGENCY = 0
    NORMAL = 5


# Allowed announcement transitions: (from, action) -> to.
TRANSITIONS: dict[tuple[AnnouncementStatus, str], AnnouncementStatus] = {
    (AnnouncementStatus.DRAFT, "submit"): AnnouncementStatus.PENDING_APPROVAL,
    (AnnouncementStatus.PENDING_APPROVAL, "approve"): AnnouncementStatus.APPROVED,
    (AnnouncementStatus.PENDING_APPROVAL, "reject"): AnnouncementStatus.DRAFT,
    (AnnouncementStatus.DRAFT, "cancel"): AnnouncementStatus.CANCELLED,
    (AnnouncementStatus.PENDING_APPROVAL, "cancel"): AnnouncementStatus.CANCELLED,
    (AnnouncementStatus.APPROVED, "cancel"): AnnouncementStatus.CANCELLED,
    (AnnouncementStatus.SCHEDULED, "cancel"): AnnouncementStatus.CANCELLED,
    (AnnouncementStatus.SENDING, "cancel"): AnnouncementStatus.CANCELLED,
}


# Every channel Warta knows; which ones an agency can use depends on configuration.
PERSONAL_CHANNELS = ("sms", "voice", "telegram", "whatsapp")
SOCIAL_CHANNELS = ("telegram_channel", "facebook", "x", "mastodon")
CHANNELS = PERSONAL_CHANNELS + SOCIAL_CHANNELS
