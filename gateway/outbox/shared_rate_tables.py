"""The shared provider-rate budget (migration 0010): what each channel used in each window.

One row per channel and window (``window_start``: Unix seconds at the window's start). A
process sending on a channel adds what it sends to a window's ``used`` only while that stays
within the channel's limit for the window (``gateway.outbox.shared_rate``); old windows are
deleted as they age. Used on PostgreSQL only, but created everywhere so the schema is one.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from gateway.db.schema import metadata

rate_budgets = Table(
    "rate_budgets",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("used", Integer, nullable=False),
)
