"""Citizens' WhatsApp messages: keywords answered, everything else filed in the operator inbox.

The Cloud API webhook (``gateway.callbacks.whatsapp_webhook``) hands over the parsed
messages of one signed webhook. Each sender is found by the blind index of their number
(``+`` and their WhatsApp id); the number itself is only ever encrypted (for a reply) or
masked. STOP/BERHENTI opts them out of WhatsApp and CEK/CHECK answers, with the SMS keyword
parser (``gateway.citizen.keywords``); anything else waits in their inbox thread, which an
unknown sender gets too, as for SMS. A message that answers one of our WhatsApp messages
(``context.id``) is linked to that message's announcement; otherwise a quoted verification
code or a recent delivery links it (``gateway.store.inbox``).

A replayed webhook (the same message id) records, files and answers nothing new.
Which agency: the first (lowest id), as for an unmapped SMS short code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from aiohttp import web

from channels.whatsapp import InboundMessage
from gateway.appkeys import CLOCK, CONFIG, ENGINE, VAULT
from gateway.citizen.directory import SqlCitizenDirectory
from gateway.citizen.keywords import answer_sms
from gateway.citizen.routes import SMS_REPLIES, SmsReply, file_in_inbox
from gateway.db.schema import deliveries
from gateway.personal import InvalidPhoneNumber, PhoneNumber, normalise

log = logging.getLogger("warta.citizen")
CHANNEL = "whatsapp"


class UnknownSender(ValueError):
    """A message's ``from`` is not a phone number; ``field`` is its path in the webhook."""

    def __init__(self, path: str) -> None:
        self.field = f"{path}.from"
        super().__init__(f"{self.field} is not a phone number")


class NoAgency(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class _Sender:
    message: InboundMessage
    phone: PhoneNumber  # ``message.sender`` as a number


def senders(app: web.Application, messages: Sequence[InboundMessage]) -> list[_Sender]:
    """Each message with its sender's number, all checked before anything is written.

    Raises:
        UnknownSender: a sender's WhatsApp id is not a valid international number.
    """
    region = app[CONFIG].phone.default_region
    found = []
    withheld = 0
    for message in messages:
        if message.sender is None:
            withheld += 1
            continue
        try:
            found.append(_Sender(message, normalise("+" + message.sender, region)))
        except InvalidPhoneNumber:
            raise UnknownSender(message.path) from None
    if withheld:
        # Acknowledged with the rest of the webhook (refusing it would lose its statuses and
        # have Meta retry it for days), but not filed: the inbox, keywords and replies all
        # go by number.
        log.warning(
            "%d WhatsApp message(s) from users who withhold their number (usernames) were "
            "not filed: Warta files and answers WhatsApp messages by number",
            withheld,
        )
    return found


async def receive(app: web.Application, people: Sequence[_Sender]) -> None:
    """Answer keywords and file the rest, message by message, in the order WhatsApp sent.

    Raises:
        NoAgency: no agency is configured, so nobody could read the messages.
    """
    if not people:
        return
    directory = await SqlCitizenDirectory.for_agency(
        app[ENGINE], vault=app[VAULT], clock=app[CLOCK], slug=app[CONFIG].whatsapp.agency
    )
    if directory is None:
        raise NoAgency("no agency is configured")
    for person in people:
        await _one(app, directory, person.message, person.phone)


async def _answered_announcement(
    app: web.Application, agency_id: int, context_id: str | None
) -> int | None:
    """The announcement of our WhatsApp message ``context_id``, if it was one of ours."""
    if context_id is None:
        return None
    async with app[ENGINE].connect() as conn:
        found = await conn.scalar(
            sa.select(deliveries.c.announcement_id).where(
                deliveries.c.channel == CHANNEL,
                deliveries.c.provider_message_id == context_id,
                deliveries.c.agency_id == agency_id,
            )
        )
    return None if found is None else int(found)


async def _one(
    app: web.Application,
    directory: SqlCitizenDirectory,
    message: InboundMessage,
    phone: PhoneNumber,
) -> None:
    answer = await answer_sms(
        message.text,
        phone,
        directory,
        default_language=directory.default_language,
        provider_message_id=message.message_id,
        channel=CHANNEL,
        announcement_id=await _answered_announcement(app, directory.agency_id, message.context_id),
    )
    if answer.keyword is None:
        # Also for a replayed message: filing is idempotent, and repairs a crash before it.
        await file_in_inbox(app, agency_id=directory.agency_id, phone=phone, channel=CHANNEL)
        return
    if answer.reply is None:
        return
    sink = app.get(SMS_REPLIES)
    if sink is None:
        log.info("WhatsApp keyword %s answered; no reply sink installed", answer.keyword)
        return
    await sink(
        SmsReply(
            agency_id=directory.agency_id,
            phone=phone,
            text=answer.reply,
            language=answer.language,
            in_reply_to=message.message_id,
            channel=CHANNEL,
        )
    )
