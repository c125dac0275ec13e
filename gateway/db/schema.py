"""The tables, as SQLAlchemy Core. Alembic migrations in ``migrations/`` own the real schema;
a test checks that they and this module agree.

Indexes follow the queries that run hot:
- the claim (``deliveries`` queued, by channel, priority, due time),
- statistics per announcement × channel × state,
- delivery reports found by provider message id,
- opt-outs cancelling a subscriber's queued deliveries,
- subscribers found by the blind index of their phone number.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from gateway.db.types import UtcDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (and so auto-incrementing);
# BIGINT there would not be, so big ids use BigInteger on PostgreSQL and INTEGER on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")
Money = Numeric(14, 4)
When = UtcDateTime()

agencies = Table(
    "agencies",
    metadata,
    Column("id", Id, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="Asia/Jakarta"),
    Column("default_language", String(8), nullable=False, server_default="id"),
    Column("budget_limit", Money, nullable=True),
    # May an emergency be approved by the one person who wrote it (flagged in the audit)?
    Column("emergency_single_approval", Boolean, nullable=False, server_default=false()),
    Column("created_at", When, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),
    # SHA-256 of a 256-bit random token: enough for a secret nobody chose (see gateway.auth).
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", When, nullable=False),
    Column("last_used_at", When, nullable=True),
    Column("revoked_at", When, nullable=True),
)

announcements = Table(
    "announcements",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    Column("language", String(8), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("facts", JSON, nullable=False),
    # Other languages: {"en": {"title": ..., "body": ..., "facts": {...}}}
    Column("translations", JSON, nullable=False),
    Column("areas", JSON, nullable=False),
    Column("topics", JSON, nullable=False),
    Column("channels", JSON, nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("keep_gsm7", Boolean, nullable=False, server_default=text("false")),
    Column("send_at", When, nullable=True),
    Column("expires_at", When, nullable=True),
    Column("verification_code", String(12), nullable=False, unique=True),
    Column("status", String(24), nullable=False),
    Column("created_by", Id, ForeignKey("api_tokens.id"), nullable=True),
    Column("approved_by", Id, ForeignKey("api_tokens.id"), nullable=True),
    Column("estimated_cost", Money, nullable=True),
    Column("created_at", When, nullable=False),
    Column("updated_at", When, nullable=False),
    Column("submitted_at", When, nullable=True),
    Column("approved_at", When, nullable=True),
    Column("started_at", When, nullable=True),
    Column("finished_at", When, nullable=True),
    Column("cancelled_at", When, nullable=True),
    Index("ix_announcements_agency_id_created_at", "agency_id", "created_at"),
    Index("ix_announcements_status_send_at", "status", "send_at"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    # AEAD ciphertext of the E.164 number (gateway.personal); NULL once erased.
    Column("phone_ciphertext", LargeBinary, nullable=True),
    # Keyed HMAC of the E.164 number: finds and de-duplicates without decrypting.
    Column("phone_index", String(64), nullable=True),
    Column("phone_masked", String(32), nullable=True),
    Column("country", String(2), nullable=True),
    # The mobile network the number was issued to (a number ported since may differ).
    Column("network", String(64), nullable=True),
    Column("telegram_chat_id", BigInteger, nullable=True),
    Column("language", String(8), nullable=False),
    Column("area_code", String(32), nullable=True),
    Column("topics", JSON, nullable=False),
    Column("consent_at", When, nullable=True),
    Column("consent_channel", String(32), nullable=True),
    Column("consent_text", Text, nullable=True),
    Column("created_at", When, nullable=False),
    Column("erased_at", When, nullable=True),
    UniqueConstraint("agency_id", "phone_index"),
    Index("ix_subscribers_agency_id_area_code", "agency_id", "area_code"),
)

# One row per subscriber per channel they chose, in their order of preference. Fan-out joins
# this table, so "who gets SMS for this agency" is an indexed range, not a JSON scan.
subscriber_channels = Table(
    "subscriber_channels",
    metadata,
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("preference", Integer, nullable=False, server_default="0"),
    Column("opted_in_at", When, nullable=False),
    Column("opted_out_at", When, nullable=True),
    Index("ix_subscriber_channels_channel_subscriber_id", "channel", "subscriber_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    # NULL for a reply to a citizen (kind "reply"), which carries its own text.
    # No foreign keys here, on purpose: fan-out writes a million rows selected from the very
    # rows they would reference, in one transaction, and announcements and subscribers are
    # never deleted (erasure blanks a subscriber's data, the row stays). On PostgreSQL each
    # foreign key is a trigger per row, and the subscriber one locks every subscriber row.
    Column("announcement_id", Id, nullable=True),
    Column("agency_id", Id, nullable=False),
    Column("subscriber_id", Id, nullable=True),
    Column("kind", String(16), nullable=False, server_default="announcement"),
    Column("body", Text, nullable=True),
    # A reply may go to a number that is not a subscriber: its own ciphertext, never plain.
    Column("recipient_ciphertext", LargeBinary, nullable=True),
    # The inbound message a reply answers: a replayed inbound message queues no second reply.
    Column("reply_key", String(128), nullable=True),
    Column("url", String(300), nullable=True),
    # Social posts go to an account, not a subscriber.
    Column("account", String(100), nullable=True),
    Column("channel", String(32), nullable=False),
    Column("language", String(8), nullable=False),
    Column("area_code", String(32), nullable=True),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", When, nullable=False),
    Column("lease_until", When, nullable=True),
    Column("provider_message_id", String(128), nullable=True),
    Column("error_kind", String(16), nullable=True),
    Column("error_reason", String(200), nullable=True),
    Column("segments", Integer, nullable=True),
    Column("cost", Money, nullable=True),
    Column("created_at", When, nullable=False),
    Column("sent_at", When, nullable=True),
    Column("finished_at", When, nullable=True),
    # The delivery this one stands in for, after it failed or went unconfirmed
    # (gateway.outbox.fallback); NULL for what fan-out queued. No foreign key, as above.
    Column("fallback_of", Id, nullable=True),
    UniqueConstraint("announcement_id", "channel", "subscriber_id"),
    # Partial: only social posts have an account and only replies a reply key, so the other
    # million rows of a broadcast cost these indexes nothing.
    Index(
        "uq_deliveries_announcement_id_channel_account",
        "announcement_id",
        "channel",
        "account",
        unique=True,
        sqlite_where=text("account IS NOT NULL"),
        postgresql_where=text("account IS NOT NULL"),
    ),
    Index(
        "uq_deliveries_channel_reply_key",
        "channel",
        "reply_key",
        unique=True,
        sqlite_where=text("reply_key IS NOT NULL"),
        postgresql_where=text("reply_key IS NOT NULL"),
    ),
    Index(
        "ix_deliveries_claim",
        "channel",
        "priority",
        "next_attempt_at",
        "id",
        sqlite_where=text("state = 'queued'"),
        postgresql_where=text("state = 'queued'"),
    ),
    Index(
        "ix_deliveries_lease",
        "lease_until",
        sqlite_where=text("state = 'sending'"),
        postgresql_where=text("state = 'sending'"),
    ),
    Index("ix_deliveries_announcement_id_channel_state", "announcement_id", "channel", "state"),
    Index(
        "ix_deliveries_channel_provider_message_id",
        "channel",
        "provider_message_id",
        sqlite_where=text("provider_message_id IS NOT NULL"),
        postgresql_where=text("provider_message_id IS NOT NULL"),
    ),
    # Opt-outs and erasure cancel a subscriber's queued deliveries.
    Index(
        "ix_deliveries_subscriber_id_queued",
        "subscriber_id",
        sqlite_where=text("state = 'queued'"),
        postgresql_where=text("state = 'queued'"),
    ),
    # Fallback: "has this delivery a stand-in yet", and the sweep over recent failures.
    Index(
        "ix_deliveries_fallback_of",
        "fallback_of",
        sqlite_where=text("fallback_of IS NOT NULL"),
        postgresql_where=text("fallback_of IS NOT NULL"),
    ),
    # Statistics over a period (gateway.store.stats, GET /api/v1/stats) read that period only.
    Index("ix_deliveries_agency_id_created_at", "agency_id", "created_at"),
    # Fallback: sends on a data channel still waiting for a delivery report (an emergency
    # unconfirmed too long falls back). SMS never enters it, so a broadcast does not pay for it;
    # gateway.outbox.fallback.unconfirmed names the same channels as literals.
    Index(
        "ix_deliveries_unconfirmed",
        "sent_at",
        sqlite_where=text("state = 'sent' AND channel IN ('telegram', 'whatsapp')"),
        postgresql_where=text("state = 'sent' AND channel IN ('telegram', 'whatsapp')"),
    ),
    Index(
        "ix_deliveries_failed_finished_at",
        "finished_at",
        sqlite_where=text("state = 'failed'"),
        postgresql_where=text("state = 'failed'"),
    ),
)

delivery_reports = Table(
    "delivery_reports",
    metadata,
    Column("id", Id, primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("provider_message_id", String(128), nullable=False),
    Column("status_word", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(200), nullable=True),
    # What the provider charged, when the report says (a voice call's final callback).
    Column("cost", Money, nullable=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=True),
    Column("received_at", When, nullable=False),
    # The same report twice is one row: replays change nothing.
    UniqueConstraint("channel", "provider_message_id", "status_word"),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), nullable=True),
    Column("channel", String(32), nullable=False),
    Column("provider_message_id", String(128), nullable=True),
    Column("phone_index", String(64), nullable=True),
    Column("phone_masked", String(32), nullable=True),
    Column("text", Text, nullable=False),
    Column("announcement_id", Id, ForeignKey("announcements.id"), nullable=True),
    Column("received_at", When, nullable=False),
    Column("handled", String(16), nullable=False, server_default="inbox"),
    # The operator inbox conversation this message belongs to (``handled='inbox'`` only).
    Column("thread_id", Id, ForeignKey("inbox_threads.id"), nullable=True),
    UniqueConstraint("channel", "provider_message_id"),
    Index("ix_inbound_messages_agency_id_received_at", "agency_id", "received_at"),
    Index("ix_inbound_messages_thread_id", "thread_id"),
)

# One conversation with one citizen in the operator inbox (gateway.store.inbox). A citizen is a
# subscriber, or for an unknown sender the blind index of their number (or of their Telegram
# chat): ``citizen_key``. At most one thread per citizen is open; a message after the close
# opens a new one, so each conversation has its own time to first response.
inbox_threads = Table(
    "inbox_threads",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    Column("citizen_key", String(80), nullable=False),
    Column("subscriber_id", Id, ForeignKey("subscribers.id"), nullable=True),
    Column("phone_masked", String(32), nullable=True),
    # Where a reply goes on ``channel``: the AEAD ciphertext of the number or chat id.
    Column("reply_ciphertext", LargeBinary, nullable=True),
    # The channel of the latest message in: operator replies go back the same way.
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("assigned_token_id", Id, ForeignKey("api_tokens.id"), nullable=True),
    Column("announcement_id", Id, ForeignKey("announcements.id"), nullable=True),
    Column("opened_at", When, nullable=False),
    Column("last_message_at", When, nullable=False),
    Column("first_response_at", When, nullable=True),
    # Whole seconds from the first message to the first operator reply, kept so the
    # percentiles in /stats are plain ORDER BY on both databases.
    Column("response_seconds", Integer, nullable=True),
    Column("closed_at", When, nullable=True),
    Index(
        "uq_inbox_threads_agency_id_citizen_key_open",
        "agency_id",
        "citizen_key",
        unique=True,
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
    Index("ix_inbox_threads_agency_id_status_id", "agency_id", "status", "id"),
    Index("ix_inbox_threads_agency_id_first_response_at", "agency_id", "first_response_at"),
    Index("ix_inbox_threads_subscriber_id", "subscriber_id"),
)

# Operator replies in a thread; the reply itself is a ``kind='reply'`` delivery in the outbox.
inbox_replies = Table(
    "inbox_replies",
    metadata,
    Column("id", Id, primary_key=True),
    Column("thread_id", Id, ForeignKey("inbox_threads.id"), nullable=False),
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=False),
    Column("token_id", Id, ForeignKey("api_tokens.id"), nullable=False),
    Column("created_at", When, nullable=False),
    Index("ix_inbox_replies_thread_id", "thread_id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=True),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject_type", String(32), nullable=False),
    Column("subject_id", String(64), nullable=True),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Column("at", When, nullable=False),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    Index("ix_audit_events_agency_id_at", "agency_id", "at"),
)

# People who sign in to the operator dashboard (gateway.dashboard). Each user acts through a
# credential row of their own in ``api_tokens`` (``token_id``; its secret is never kept), so
# authorship, the two-person rule, inbox assignment and the audit log treat a signed-in user
# exactly like an API token of the same role.
users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    # Stored lower-cased, so the unique constraint is case-insensitive.
    Column("email", String(254), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    # argon2id (argon2-cffi), parameters inside the encoded hash.
    Column("password_hash", String(200), nullable=False),
    # Set by an administrator (a new user, a reset): until its user chooses their own, the
    # dashboard shows them only the form to do so.
    Column("password_temporary", Boolean, nullable=False, server_default=false()),
    Column("token_id", Id, ForeignKey("api_tokens.id"), nullable=False),
    Column("created_at", When, nullable=False),
    Column("last_login_at", When, nullable=True),
    Column("disabled_at", When, nullable=True),
    # Sessions issued before this instant are refused (logout ends every session of the user).
    Column("sessions_valid_after", When, nullable=True),
    UniqueConstraint("agency_id", "email"),
)

# Sign-in and verification attempts per fixed window (gateway.attempts), shared by every
# process on the database; keys are SHA-256 digests, rows of past windows are deleted.
attempt_counters = Table(
    "attempt_counters",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("key_hash", String(64), primary_key=True),
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("attempts", Integer, nullable=False),
)

# A channel held because its provider refuses the account (an empty balance, a refused key:
# gateway.outbox.holds). One row while a process holds it, so that the API and the dashboard
# can say why a broadcast waits; ``until`` is when its holder next asks the provider.
channel_holds = Table(
    "channel_holds",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("since", When, nullable=False),
    Column("until", When, nullable=False),
)

# The scheduler declares its tables (recurrences, quiet hours) on this metadata. Importing it
# here keeps one complete picture of the schema for the migrations and the start-up check.
from gateway.cap import tables as _cap_tables  # noqa: E402, F401
from gateway.outbox import shared_rate_tables as _shared_rate_tables  # noqa: E402, F401
from scheduler import tables as _scheduler_tables  # noqa: E402, F401
