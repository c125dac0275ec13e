"""Which CAP alert became, changed or cancelled which announcement (migration 0008).

A CAP message is known by its (sender, identifier, sent) triple, which is what later messages
name in ``<references>``. The triple is unique per agency: the same message posted twice is
refused, and an Update or Cancel finds its announcement here. ``sent`` is stored as the UTC
instant and ``sent_text`` as written, so references match however the offset was spelled.
``details`` keeps what an announcement has no field for (categories, certainty, severity,
urgency, response types), so the exported CAP says what the authority said.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, ForeignKey, Index, String, Table, UniqueConstraint

from gateway.db.schema import Id, When, metadata

cap_alerts = Table(
    "cap_alerts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    Column("sender", String(255), nullable=False),
    Column("identifier", String(255), nullable=False),
    Column("sent", When, nullable=False),
    Column("sent_text", String(40), nullable=False),
    # Alert, Update or Cancel.
    Column("msg_type", String(16), nullable=False),
    Column("announcement_id", Id, ForeignKey("announcements.id"), nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_by", Id, ForeignKey("api_tokens.id"), nullable=True),
    Column("received_at", When, nullable=False),
    UniqueConstraint("agency_id", "sender", "identifier", "sent"),
    Index("ix_cap_alerts_announcement_id", "announcement_id"),
)
