"""What each Telegram update does, decided from what was read before anything is written.

``decide(context)`` turns an update into a ``Turn``: how to record it in the inbox table
(``handled``), the change to make (``Subscribe``, ``SetLanguage``, ``StopTelegram``) and the
reply to queue. It reads (the agency's announcements, a code's verification) but never
writes: ``gateway.citizen.telegram_bot`` applies the turn in one transaction. The commands are
listed in that module's docstring.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from channels.telegram.webhook import TelegramInbound
from gateway.citizen import telegram_wording as words
from gateway.citizen import wording
from gateway.citizen.areas import parse_area
from gateway.citizen.directory import SqlCitizenDirectory
from gateway.citizen.telegram_chats import ChatSubscriber
from gateway.codes import normalise_code

LATEST_COUNT = 3
_LANGUAGE_WORDS = {
    "id": "id",
    "ind": "id",
    "indonesia": "id",
    "en": "en",
    "eng": "en",
    "english": "en",
    "inggris": "en",
}


@dataclass(frozen=True, slots=True)
class Subscribe:
    language: str
    area_code: str | None
    area_given: bool
    consent_text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SetLanguage:
    language: str


@dataclass(frozen=True, slots=True)
class StopTelegram:
    pass


Change = Subscribe | SetLanguage | StopTelegram


@dataclass(frozen=True, slots=True)
class Turn:
    """One update's effect: recorded as ``handled``, then ``change``, then ``reply`` queued."""

    handled: str
    reply: str | None = field(repr=False)
    language: str
    change: Change | None = None


@dataclass(frozen=True, slots=True)
class BotContext:
    """What a command reads: the update, its subscriber (if any), the agency, the language."""

    inbound: TelegramInbound
    person: ChatSubscriber | None
    directory: SqlCitizenDirectory
    language: str
    public_url: str

    def link(self, code: str) -> str:
        return f"{self.public_url.rstrip('/')}/a/{code}"

    def turn(
        self, reply: str | None, change: Change | None = None, *, language: str | None = None
    ) -> Turn:
        return Turn("command", reply, language or self.language, change)


def reply_language(inbound: TelegramInbound, person: ChatSubscriber | None, default: str) -> str:
    if person is not None:
        return wording.supported(person.language, default)
    primary = (inbound.language_code or "").split("-", 1)[0].lower()
    return wording.supported(primary, wording.supported(default))


async def _start(ctx: BotContext) -> Turn:
    payload = ctx.inbound.start_payload
    area = parse_area(payload) if payload else None
    given = area is not None
    if not given and ctx.person is not None:
        area = ctx.person.area_code
    text = words.welcome(ctx.language, agency=ctx.directory.agency_name, area=area)
    return ctx.turn(text, Subscribe(ctx.language, area, given, consent_text=text))


async def _stop(ctx: BotContext) -> Turn:
    if ctx.person is None:
        return ctx.turn(words.tg_say(ctx.language, "not_subscribed"))
    text = words.tg_say(ctx.language, "stopped", agency=ctx.directory.agency_name)
    return ctx.turn(text, StopTelegram())


async def _check(ctx: BotContext) -> Turn:
    code = normalise_code("".join(ctx.inbound.args))
    if code is None:
        return ctx.turn(words.tg_say(ctx.language, "check_usage"))
    result = await ctx.directory.verify(code)
    if not result.genuine:
        return ctx.turn(wording.say(ctx.language, "fake", code=code))
    text = words.genuine(
        ctx.language,
        code=code,
        agency=result.agency or "",
        title=result.title or "",
        issued_at=result.issued_at,
        url=ctx.link(code),
    )
    return ctx.turn(text)


async def _latest(ctx: BotContext) -> Turn:
    area = ctx.person.area_code if ctx.person is not None else None
    found = await ctx.directory.latest(area_code=area, language=ctx.language, limit=LATEST_COUNT)
    if not found:
        return ctx.turn(wording.say(ctx.language, "no_news"))
    heading = words.tg_say(ctx.language, "latest", agency=ctx.directory.agency_name)
    lines = [words.bulletin_line(b.title, b.date, ctx.link(b.code)) for b in found]
    return ctx.turn("\n\n".join([heading, *lines]))


async def _language(ctx: BotContext) -> Turn:
    args = ctx.inbound.args
    chosen = _LANGUAGE_WORDS.get(args[0].lower()) if args else None
    if chosen is None:
        return ctx.turn(words.LANGUAGE_ASK)
    if ctx.person is None:
        return ctx.turn(words.tg_say(chosen, "not_subscribed"), language=chosen)
    text = words.tg_say(chosen, "language_set")
    return ctx.turn(text, SetLanguage(chosen), language=chosen)


async def _help(ctx: BotContext) -> Turn:
    subscribed = ctx.person is not None and ctx.person.active
    return ctx.turn(words.help_text(ctx.language, subscribed=subscribed))


COMMANDS: dict[str, Callable[[BotContext], Awaitable[Turn]]] = {
    "start": _start,
    "stop": _stop,
    "berhenti": _stop,
    "cek": _check,
    "check": _check,
    "terbaru": _latest,
    "latest": _latest,
    "bahasa": _language,
    "language": _language,
    "help": _help,
    "bantuan": _help,
}


async def decide(ctx: BotContext) -> Turn:
    """What ``ctx.inbound`` does, from what was read before the write transaction."""
    inbound, language = ctx.inbound, ctx.language
    if inbound.kind == "blocked":
        return Turn("blocked", None, language, StopTelegram() if ctx.person else None)
    if inbound.kind == "unblocked":
        # Consent comes with /start, which Telegram's "Restart" button sends next.
        return Turn("unblocked", None, language)
    if inbound.command is not None:
        return await COMMANDS.get(inbound.command, _help)(ctx)
    if not inbound.text:
        return Turn("ignored", words.tg_say(language, "text_only"), language)
    return Turn("inbox", words.tg_say(language, "received"), language)
