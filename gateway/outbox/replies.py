"""Replies to citizens (keyword answers, operator replies) go through the same outbox.

A reply is a delivery of kind ``reply`` with its own text and its own encrypted recipient,
because the citizen may not be a subscriber. ``reply_key`` (the provider id of the message
being answered) is unique per channel, so a replayed inbound message queues no second reply.
Replies are claimed ahead of normal announcements, behind emergencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from aiohttp import web

from gateway.appkeys import CLOCK, DISPATCHER, ENGINE, VAULT
from gateway.db.dialect import insert_ignoring_conflicts
from gateway.db.schema import deliveries, subscribers
from gateway.domain import DeliveryState

if TYPE_CHECKING:
    from gateway.citizen.routes import SmsReply

REPLY_PRIORITY = 2


class OutboxReplies:
    """The reply sink the citizen routes call, for replies to a number (SMS, WhatsApp)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    async def __call__(self, reply: SmsReply) -> None:
        app = self.app
        vault = app[VAULT]
        now = app[CLOCK].now()
        async with app[ENGINE].begin() as conn:
            subscriber_id = await conn.scalar(
                sa.select(subscribers.c.id)
                .where(
                    subscribers.c.agency_id == reply.agency_id,
                    subscribers.c.phone_index.in_(vault.blind_indexes(reply.phone)),
                )
                .limit(1)
            )
            # Any conflict is the reply_key one: a replayed inbound message.
            statement = insert_ignoring_conflicts(conn, deliveries)
            await conn.execute(
                statement.values(
                    announcement_id=None,
                    agency_id=reply.agency_id,
                    subscriber_id=subscriber_id,
                    kind="reply",
                    body=reply.text,
                    recipient_ciphertext=vault.encrypt(reply.phone),
                    reply_key=reply.in_reply_to,
                    channel=reply.channel,
                    language=reply.language,
                    state=DeliveryState.QUEUED.value,
                    priority=REPLY_PRIORITY,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        dispatcher = app.get(DISPATCHER)
        if dispatcher is not None:
            dispatcher.wake_channel(reply.channel)
