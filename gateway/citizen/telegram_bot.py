"""The Telegram bot's citizen side: ``POST /callbacks/telegram/webhook`` and its commands.

Telegram POSTs one update per request with our secret in ``X-Telegram-Bot-Api-Secret-Token``
(``channels.telegram.webhook``). A missing or wrong secret gets 401 and changes nothing. Every
authentic update gets 200, even one we ignore, cannot parse or fail on, because Telegram
re-sends anything else (and holds back later updates meanwhile); the one exception is a
database that is unreachable or locked (``worth_retrying``): 503, so that Telegram delivers
the update again later instead of it being lost. Replays are harmless (see below).

Commands, in a private chat::

    /start [AREA]        subscribe (or come back); a deep link t.me/<bot>?start=3171 sets the
                         area 31.71; the welcome text shown is the consent record
    /stop, /berhenti     opt out of Telegram at once, cancelling queued Telegram deliveries
    /cek KODE, /check    is this verification code genuine? (agency, title, public link)
    /terbaru, /latest    the three latest announcements for the subscriber's area, with links
    /bahasa [id|en]      the language of replies and announcements
    /help, /bantuan      the commands (also the answer to an unknown command)

What each update does is decided in ``gateway.citizen.telegram_commands``. Free text waits
in the operator inbox (``inbound_messages``, ``handled='inbox'``) and gets a short
acknowledgement. A citizen blocking the bot (``my_chat_member`` ``kicked``) is opted out of
Telegram at once. Replies go through the outbox as ``kind='reply'`` deliveries on channel
``telegram``, in the subscriber's language (else the Telegram app's, else the agency's).

Each update is handled once: it is recorded as ``tg-update-<update_id>`` in the same
transaction that applies its change and queues its reply, so a replay finds the record and
does nothing. Chat ids and texts never reach a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
from aiohttp import web

from channels.telegram.webhook import (
    TelegramInbound,
    UpdateFieldError,
    parse_update,
    verify_secret_token,
)
from gateway.api.errors import error_response
from gateway.appkeys import CLOCK, CONFIG, DISPATCHER, ENGINE, VAULT, running_channels
from gateway.citizen import telegram_chats as chats
from gateway.citizen.directory import SqlCitizenDirectory
from gateway.citizen.telegram_chats import ChatReply
from gateway.citizen.telegram_commands import (
    BotContext,
    SetLanguage,
    StopTelegram,
    Subscribe,
    decide,
    reply_language,
)
from gateway.db.engine import reading

log = logging.getLogger("warta.citizen.telegram")

WEBHOOK_PATH = "/callbacks/telegram/webhook"
# SQLSTATE classes worth a retry: connection exceptions, insufficient resources, operator
# intervention (shutting down, cannot connect now), serialization failure and deadlock.
_RETRY_SQLSTATES = ("08", "53", "57P", "40001", "40P01")


@dataclass(frozen=True, slots=True)
class TelegramBotSettings:
    """``agency_slug``: the agency whose subscribers the bot serves (None: the first one)."""

    agency_slug: str | None = None


TELEGRAM_BOT = web.AppKey("telegram_bot", TelegramBotSettings)


@runtime_checkable
class WebhookChannel(Protocol):
    async def register_webhook(self, url: str) -> None: ...


# -- applying it ----------------------------------------------------------------------------


async def handle_update(app: web.Application, inbound: TelegramInbound) -> bool:
    """Act on one authentic update; returns False when it was ignored or already handled.

    Raises:
        LookupError: no agency exists to serve the bot.
    """
    chat_id = inbound.chat_id
    if inbound.kind == "other" or chat_id is None or inbound.chat_type != "private":
        log.info("Telegram update %s ignored (%s)", inbound.update_id, inbound.kind)
        return False
    engine, clock, vault = app[ENGINE], app[CLOCK], app[VAULT]
    settings = app.get(TELEGRAM_BOT) or TelegramBotSettings()
    directory = await SqlCitizenDirectory.for_agency(
        engine, vault=vault, clock=clock, slug=settings.agency_slug
    )
    if directory is None:
        raise LookupError("no agency is configured")
    agency_id = directory.agency_id
    async with reading(engine) as conn:
        person = await chats.find_chat(conn, agency_id=agency_id, chat_id=chat_id)
    language = reply_language(inbound, person, directory.default_language)
    context = BotContext(inbound, person, directory, language, app[CONFIG].http.public_url)
    turn = await decide(context)

    now = clock.now()
    async with engine.begin() as conn:
        await chats.lock_chat(conn, agency_id=agency_id, chat_id=chat_id)
        person = await chats.find_chat(conn, agency_id=agency_id, chat_id=chat_id)
        subscriber_id = person.id if person is not None else None
        inbound_id = await chats.record_update(
            conn,
            agency_id=agency_id,
            update_id=inbound.update_id,
            subscriber_id=subscriber_id,
            text=inbound.text or "",
            handled=turn.handled,
            now=now,
        )
        if inbound_id is None:
            log.info("Telegram update %s was already handled", inbound.update_id)
            return False
        change = turn.change
        if isinstance(change, Subscribe):
            subscriber_id = await chats.subscribe_chat(
                conn,
                agency_id=agency_id,
                chat_id=chat_id,
                language=change.language,
                area_code=change.area_code,
                area_given=change.area_given,
                consent_text=change.consent_text,
                now=now,
            )
            if person is None:
                await chats.link_update(conn, inbound_id=inbound_id, subscriber_id=subscriber_id)
        elif isinstance(change, StopTelegram) and subscriber_id is not None:
            await chats.stop_chat(conn, subscriber_id=subscriber_id, now=now)
        elif isinstance(change, SetLanguage) and subscriber_id is not None:
            await chats.set_chat_language(
                conn, subscriber_id=subscriber_id, language=change.language
            )
        if turn.reply is not None:
            reply = ChatReply(
                agency_id=agency_id,
                chat_id=chat_id,
                update_id=inbound.update_id,
                text=turn.reply,
                language=turn.language,
                subscriber_id=subscriber_id,
            )
            await chats.queue_reply(conn, reply, vault=vault, now=now)
    log.info("Telegram update %s handled (%s)", inbound.update_id, inbound.command or turn.handled)
    if turn.reply is not None:
        dispatcher = app.get(DISPATCHER)
        if dispatcher is not None:
            dispatcher.wake_channel(chats.CHANNEL)
    return True


# -- HTTP -----------------------------------------------------------------------------------


def worth_retrying(exc: BaseException) -> bool:
    """Whether a failure is the database's passing trouble, so Telegram should re-send.

    Anything else (a bug, a constraint we did not expect) would fail the same way again, and
    Telegram holds back later updates while it retries one.
    """
    if isinstance(exc, OSError | sa.exc.TimeoutError):  # OSError covers connection refusals
        return True
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc.orig, OSError):
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and state.startswith(_RETRY_SQLSTATES):
        return True
    return "database is locked" in str(exc.orig)  # SQLite's busy timeout ran out


def _accepted() -> web.Response:
    return web.Response(status=200)


async def telegram_webhook(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    secret = config.secrets.telegram_webhook_secret
    expected = secret.get_secret_value() if secret is not None else None
    if not verify_secret_token(request.headers, expected):
        problem = "missing or wrong secret token" if expected else "no webhook secret configured"
        log.warning("refused a Telegram webhook call: %s", problem)
        return error_response(401, "unauthorized", "webhook not authenticated")
    try:
        payload = await request.json()
    except ValueError:
        log.warning("Telegram webhook body is not JSON; ignored")
        return _accepted()
    try:
        inbound = parse_update(payload, bot_username=config.telegram.bot_username)
    except UpdateFieldError as exc:
        log.warning("Telegram update ignored: bad field %s", exc.field)
        return _accepted()
    try:
        await handle_update(app, inbound)
    except LookupError:
        log.warning("Telegram update %s not handled: no agency yet", inbound.update_id)
        return error_response(503, "unavailable", "no agency is configured")
    except Exception as exc:
        # Only the class: SQL errors quote their parameters, and those hold chat ids.
        if worth_retrying(exc):
            log.warning("Telegram update %s deferred: %s", inbound.update_id, type(exc).__name__)
            return error_response(503, "unavailable", "try again later")
        log.error("Telegram update %s dropped: %s", inbound.update_id, type(exc).__name__)
    return _accepted()


def webhook_url(public_url: str) -> str:
    return f"{public_url.rstrip('/')}{WEBHOOK_PATH}"


def callback_urls(public_url: str) -> dict[str, str]:
    """The Telegram callback URL, by ``<provider>_<purpose>`` (for the demo and operators)."""
    return {"telegram_webhook": webhook_url(public_url)}


async def register_webhook_on_startup(app: web.Application) -> None:
    """Point the bot's webhook at this gateway, when configured to; a failure is logged only.

    Runs after the outbox's ``cleanup_ctx`` has started the dispatcher and its channels.
    """
    config = app[CONFIG]
    if (
        config.telegram.updates != "webhook"
        or not config.telegram.register_webhook
        or config.secrets.telegram_webhook_secret is None
    ):
        return
    channel = running_channels(app).get(chats.CHANNEL)
    if not isinstance(channel, WebhookChannel):
        log.info("Telegram webhook not registered: the telegram channel is not configured")
        return
    url = webhook_url(config.http.public_url)
    try:
        await channel.register_webhook(url)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        log.warning("Telegram webhook registration failed (%s); updates will not arrive", reason)
        return
    log.info("Telegram webhook registered at %s", url)


def install(app: web.Application, *, settings: TelegramBotSettings | None = None) -> None:
    """Add the webhook route and the start-up registration of the webhook."""
    app[TELEGRAM_BOT] = settings or TelegramBotSettings()
    app.router.add_post(WEBHOOK_PATH, telegram_webhook)
    app.on_startup.append(register_webhook_on_startup)
