"""The scheduler's own tables, declared on the gateway's ``metadata`` (migration 0004).

- ``recurrences``: one per recurring announcement. The announcement it belongs to is the
  *template*: approved once, never sent itself (status ``scheduled`` while the series runs).
  ``next_run_at`` is the next occurrence not yet issued; advancing it is a conditional UPDATE
  (``… WHERE next_run_at = :seen``), so exactly one process issues each occurrence.
- ``recurrence_instances``: which dated announcement was issued for which occurrence; the
  unique (recurrence, occurrence) pair is the second guard against a double issue.
- ``agency_quiet_hours``: an agency's quiet hours as minutes after local midnight. No row
  means the default (21:00-06:00); ``starts_minute == ends_minute`` means no quiet hours.

Importing ``scheduler`` (any module of it) registers these tables, so the application must
import it where it builds the app: the migration check compares against ``metadata``.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, UniqueConstraint

from gateway.db.schema import Id, When, metadata

recurrences = Table(
    "recurrences",
    metadata,
    Column("id", Id, primary_key=True),
    Column("template_id", Id, ForeignKey("announcements.id"), nullable=False, unique=True),
    Column("agency_id", Id, ForeignKey("agencies.id"), nullable=False),
    # Standard five-field crontab (Sunday is 0 or 7), read in ``timezone``.
    Column("cron", String(120), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("until", When, nullable=True),
    Column("max_count", Integer, nullable=True),
    # Each occurrence expires this long after its send time (None: never).
    Column("valid_for_s", Integer, nullable=True),
    # pending (template not approved yet) -> active -> finished, or cancelled.
    Column("status", String(16), nullable=False),
    Column("next_run_at", When, nullable=True),
    Column("issued", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("created_at", When, nullable=False),
    Column("updated_at", When, nullable=False),
    Index("ix_recurrences_status_next_run_at", "status", "next_run_at"),
)

recurrence_instances = Table(
    "recurrence_instances",
    metadata,
    Column("announcement_id", Id, ForeignKey("announcements.id"), primary_key=True),
    Column("recurrence_id", Id, ForeignKey("recurrences.id"), nullable=False),
    Column("occurrence_at", When, nullable=False),
    UniqueConstraint("recurrence_id", "occurrence_at"),
)

agency_quiet_hours = Table(
    "agency_quiet_hours",
    metadata,
    Column("agency_id", Id, ForeignKey("agencies.id"), primary_key=True),
    Column("starts_minute", Integer, nullable=False),
    Column("ends_minute", Integer, nullable=False),
    Column("updated_at", When, nullable=False),
)
