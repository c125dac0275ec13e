"""SMS keywords: a citizen's text message in, the reply to send back out.

Keywords (case, spacing and trailing punctuation do not matter; ``DAFTAR3171`` works too)::

    DAFTAR [area] / REG [area]   subscribe to SMS (or update the area); new subscribers get
                                 Bahasa Indonesia after DAFTAR and English after REG
    STOP / BERHENTI              opt out of every channel at once (queued deliveries cancelled)
    CEK <code> / CHECK <code>    is this verification code genuine?
    INFO                         the latest announcement for the caller's area and the commands
    BAHASA [EN|ID] / LANG [EN|ID] the language of replies and deliveries (BAHASA alone: Bahasa
                                 Indonesia; LANG alone: English)

On WhatsApp (``channel="whatsapp"``) only STOP/BERHENTI (opt out of WhatsApp alone) and
CEK/CHECK are keywords; the rest goes to the inbox, as does anything that is not a keyword.

Replies are in the subscriber's language (after the keyword took effect), otherwise the
keyword's own language, otherwise the agency's. Anything else gets no reply and waits in the
operator inbox. Every message is recorded once per provider message id; a replayed message
(same id) is answered with no reply, so the citizen is not charged or told twice.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from gateway.citizen import wording
from gateway.citizen.areas import parse_area
from gateway.citizen.ports import CITIZEN_CHANNELS, CitizenDirectory, SubscriptionRequest
from gateway.codes import normalise_code
from gateway.personal import PhoneNumber

MAX_TEXT = 1_000
_KEYWORDS = {
    "DAFTAR": ("subscribe", "id"),
    "REG": ("subscribe", "en"),
    "STOP": ("stop", None),
    "BERHENTI": ("stop", "id"),
    "CEK": ("check", "id"),
    "CHECK": ("check", "en"),
    "INFO": ("info", None),
    "BAHASA": ("language", "id"),
    "LANG": ("language", "en"),
}
# Longest first: a longer keyword wins over a shorter one it starts with.
_BY_LENGTH = sorted(_KEYWORDS, key=len, reverse=True)
_LANGUAGE_WORDS = {
    "ID": "id",
    "IND": "id",
    "INDONESIA": "id",
    "BAHASA": "id",
    "EN": "en",
    "ENG": "en",
    "ENGLISH": "en",
    "INGGRIS": "en",
}
_TRAILING = re.compile(r"[\s.!?,;:]+$")
# Keywords other channels than SMS answer (subscribing and the rest are the SMS's own).
_EVERY_CHANNEL = frozenset({"stop", "check"})


@dataclass(frozen=True, slots=True)
class Keyword:
    word: str
    action: str
    language: str | None
    argument: str


@dataclass(frozen=True, slots=True)
class SmsAnswer:
    """What to do with one inbound SMS: ``reply`` is None when nothing should be sent."""

    reply: str | None
    language: str
    keyword: str | None
    duplicate: bool = False


def parse_keyword(text: str) -> Keyword | None:
    """The keyword in ``text``, or None when it is not one (it then goes to the inbox)."""
    cleaned = unicodedata.normalize("NFKC", text or "")[:MAX_TEXT]
    cleaned = _TRAILING.sub("", " ".join(cleaned.split())).upper()
    for word in _BY_LENGTH:
        if not cleaned.startswith(word):
            continue
        action, language = _KEYWORDS[word]
        rest = cleaned[len(word) :]
        if rest and not rest.startswith(" "):
            # Glued on ("DAFTAR3171"): only when what follows is a real argument.
            glued = (action == "subscribe" and parse_area(rest) is not None) or (
                action == "check" and normalise_code(rest) is not None
            )
            if not glued:
                continue
        return Keyword(word, action, language, rest.strip())
    return None


async def answer_sms(
    text: str,
    phone: PhoneNumber | None,
    directory: CitizenDirectory,
    *,
    default_language: str,
    provider_message_id: str | None,
    channel: str = "sms",
    announcement_id: int | None = None,
) -> SmsAnswer:
    """Act on one inbound text message and build the reply (the caller queues it for sending).

    ``channel`` is where it came from (``sms`` or ``whatsapp``); ``announcement_id`` the
    announcement it answers, when the provider told us. A keyword takes effect before the
    message is recorded, and every effect is idempotent, so a crash between the two is
    repaired by the provider's retry.
    """
    keyword = parse_keyword(text)
    if keyword is not None and channel != "sms" and keyword.action not in _EVERY_CHANNEL:
        keyword = None
    default = wording.supported(default_language)
    if keyword is None or phone is None:
        new = await directory.record_inbound(
            phone=phone,
            text=text[:MAX_TEXT],
            channel=channel,
            provider_message_id=provider_message_id,
            handled="inbox",
            announcement_id=announcement_id,
        )
        return SmsAnswer(reply=None, language=default, keyword=None, duplicate=not new)
    reply, language = await _act(keyword, phone, directory, default, channel)
    new = await directory.record_inbound(
        phone=phone,
        text=text[:MAX_TEXT],
        channel=channel,
        provider_message_id=provider_message_id,
        handled="keyword",
        announcement_id=announcement_id,
    )
    if not new:
        return SmsAnswer(reply=None, language=language, keyword=keyword.action, duplicate=True)
    return SmsAnswer(reply=reply, language=language, keyword=keyword.action)


async def _act(
    keyword: Keyword, phone: PhoneNumber, directory: CitizenDirectory, default: str, channel: str
) -> tuple[str, str]:
    subscription = await directory.subscription(phone)
    language = (
        wording.supported(subscription.language, default)
        if subscription is not None
        else keyword.language or default
    )
    say = wording.say
    agency = directory.agency_name
    if keyword.action == "subscribe":
        area = subscription.area_code if subscription is not None else None
        if keyword.argument:
            area = parse_area(keyword.argument)
            if area is None:
                return say(language, "sms_bad_area"), language
        kept = subscription.channels if subscription is not None else ()
        channels = tuple(dict.fromkeys(("sms", *(c for c in kept if c in CITIZEN_CHANNELS))))
        await directory.subscribe(
            phone,
            SubscriptionRequest(
                language=language,
                area_code=area,
                topics=subscription.topics if subscription is not None else (),
                channels=channels,
                consent_text=f"SMS: {keyword.word} {keyword.argument}".strip(),
                consent_channel="sms",
            ),
        )
        return say(
            language, "sms_registered", agency=agency, area=wording.area_phrase(language, area)
        ), language
    if keyword.action == "stop" and channel != "sms":
        if not await directory.unsubscribe(phone, [channel]):
            return say(language, "wa_not_subscribed", agency=agency), language
        return say(language, "wa_stopped", agency=agency), language
    if keyword.action == "stop":
        if not await directory.unsubscribe(phone, None):
            return say(language, "sms_not_subscribed"), language
        return say(language, "sms_stopped", agency=agency), language
    if keyword.action == "check":
        return await _check(keyword.argument, directory, language), language
    if keyword.action == "language":
        chosen = _LANGUAGE_WORDS.get(keyword.argument.split(" ")[0] if keyword.argument else "")
        chosen = chosen or keyword.language or default
        if not await directory.set_language(phone, chosen):
            return say(chosen, "sms_not_subscribed"), chosen
        return say(chosen, "sms_language_set"), chosen
    return await _info(directory, subscription.area_code if subscription else None, language), (
        language
    )


async def _check(argument: str, directory: CitizenDirectory, language: str) -> str:
    code = normalise_code(argument)
    if code is None:
        return wording.say(language, "sms_check_usage")
    result = await directory.verify(code)
    if not result.genuine:
        return wording.say(language, "fake", code=code)
    text = wording.say(
        language, "genuine", code=code, agency=result.agency or "", title=result.title or ""
    )
    date = wording.short_date(result.issued_at)
    return f"{text} ({date})" if date else text


async def _info(directory: CitizenDirectory, area: str | None, language: str) -> str:
    help_text = wording.say(language, "sms_help")
    found = await directory.latest(area_code=area, language=language, limit=1)
    if not found:
        return help_text
    latest = wording.say(language, "sms_latest", title=found[0].title[:60], code=found[0].code)
    return f"{latest} {help_text}"
