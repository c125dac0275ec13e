"""The USSD menu as a pure function: the caller's whole input history in, one screen out.

Africa's Talking sends the whole history of a session with every request (``text``, inputs
joined by ``*``), so the history is the only state: ``respond`` replays it from the main menu
each time. A session therefore survives a gateway restart, a replayed request gives the same
screen, and no session table is needed.

Menu map (``0`` = back, ``00`` = main menu, ``9`` = next page, on every screen)::

    main ─ 1 latest news (3 per page) ─ 1..3 read one (screen by screen)
         ─ 2 check a code ─ <code> ─ genuine / unknown
         ─ 3 subscribe ─ area (1 = all, or digits 3171) ─ topic (1 = all, 2..) ─
             channel (1 SMS, 2 voice, 3 both) ─ consent (1 I agree) ─ END subscribed
         ─ 4 unsubscribe ─ 1 all, 2 SMS, 3 voice ─ END done (not subscribed: END)
         ─ 5 language ─ 1 Bahasa Indonesia, 2 English ─ back to main, in that language

Conventions:
- ``0`` goes back one page of a paged screen, else one screen up (on the main menu it stays).
- ``00`` returns to the main menu from anywhere.
- An input the screen does not take shows the same screen again, headed "Invalid choice".
- Effects (subscribe, unsubscribe, set the language) happen only for the LAST input of the
  history; earlier ones are replayed as navigation only, so nothing happens twice. The
  directory's effects are idempotent, so a request repeated by the provider is harmless.
- Inputs after a screen that ended the session (``END``) mean the history is stale or forged:
  the answer is an ``END`` asking to dial again, and nothing happens.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

from gateway.citizen import wording
from gateway.citizen.areas import parse_area
from gateway.citizen.menu import (
    AREA,
    CHANNEL_CHOICES,
    CHANNELS,
    CONSENT,
    HOME,
    LANGUAGE,
    LANGUAGE_CHOICES,
    LATEST,
    MAX_HISTORY_CHARS,
    MAX_INPUT_CHARS,
    MAX_INPUTS,
    NOT_SUBSCRIBED,
    PER_PAGE,
    READ,
    TOPICS,
    UNSUB,
    UNSUB_CHOICES,
    VERIFY_ASK,
    VERIFY_RESULT,
    Frame,
)
from gateway.citizen.ports import Caller, CitizenDirectory, SubscriptionRequest
from gateway.citizen.screens import check_size, screen
from gateway.citizen.ussd_view import View
from gateway.codes import normalise_code


@dataclass(frozen=True, slots=True)
class _Step:
    stack: tuple[Frame, ...]
    note: str | None = None
    final: str | None = None  # an END screen that closes the session


def split_history(text: str) -> list[str]:
    """Africa's Talking's ``text`` -> inputs: ``""`` is the first request, ``"1*2"`` two."""
    return [] if text == "" else text.split("*")


def _choice(raw: str) -> int | None:
    """A menu number typed plainly: ASCII digits, no leading zero, at most three digits."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 3 or raw.startswith("0"):
        return None
    return int(raw)


async def respond(
    history: list[str],
    caller: Caller,
    directory: CitizenDirectory,
    *,
    screen_size: int,
    language: str,
) -> str:
    """The screen for this point of the session: ``CON …`` or ``END …``, within ``screen_size``.

    Args:
        history: every input of the session so far, oldest first (``split_history``).
        caller: who is dialling.
        directory: the agency's announcements and subscribers.
        screen_size: characters the handset shows (``screens.MIN_SCREEN``..``MAX_SCREEN``).
        language: the wording when the caller has no subscription language (``id``, ``en``).

    Raises:
        ValueError: for a screen size out of range (a configuration error).
        Whatever ``directory`` raises (the route turns it into a "busy" screen).
    """
    size = check_size(screen_size)
    return await _Session(caller, directory, size, wording.supported(language)).run(history)


class _Session:
    def __init__(
        self, caller: Caller, directory: CitizenDirectory, size: int, language: str
    ) -> None:
        self.caller = caller
        self.directory = directory
        self.size = size
        self.language = language
        self.view = View(directory, caller, size)

    def _end(self, key: str, **values: str) -> str:
        return screen(wording.say(self.language, key, **values), size=self.size, final=True)

    async def run(self, history: list[str]) -> str:
        subscription = await self.view.subscription()
        if subscription is not None:
            self.language = wording.supported(subscription.language, self.language)
        if len(history) > MAX_INPUTS or sum(len(part) for part in history) > MAX_HISTORY_CHARS:
            return self._end("too_long")
        stack: tuple[Frame, ...] = (Frame(HOME),)
        note: str | None = None
        for position, raw in enumerate(history):
            if stack[-1].kind == NOT_SUBSCRIBED:
                return self._end("ended")
            last = position == len(history) - 1
            step = await self._step(stack, unicodedata.normalize("NFKC", raw).strip(), last=last)
            if step.final is not None:
                return step.final if last else self._end("ended")
            stack, note = step.stack, step.note
        return await self.view.render(stack[-1], self.language, note=note)

    async def _step(self, stack: tuple[Frame, ...], raw: str, *, last: bool) -> _Step:
        top = stack[-1]
        if raw == "00":
            return _Step((Frame(HOME),))
        if raw == "0":
            if top.page > 0:
                return _Step((*stack[:-1], replace(top, page=top.page - 1)))
            return _Step(stack[:-1] if len(stack) > 1 else stack)
        invalid = _Step(stack, note=wording.say(self.language, "invalid"))
        if len(raw) > MAX_INPUT_CHARS:
            return invalid
        choice = _choice(raw)
        if top.kind == VERIFY_ASK:
            code = normalise_code(raw)
            if code is None:
                return _Step(stack, note=wording.say(self.language, "bad_code"))
            return _Step((*stack, Frame(VERIFY_RESULT, code=code)))
        if top.kind == AREA:
            if choice == 1:
                area = None
            else:
                area = parse_area(raw)
                if area is None:
                    return _Step(stack, note=wording.say(self.language, "bad_area"))
            topics = await self.view.topics()
            following = Frame(TOPICS, area=area) if topics else Frame(CHANNELS, area=area)
            return _Step((*stack, following))
        if choice is None:
            return invalid
        nxt = await self._choose(top, choice, last=last)
        if nxt is None:
            return invalid
        if isinstance(nxt, str):
            return _Step(stack, final=nxt)
        if isinstance(nxt, tuple):
            return _Step(nxt[0], note=nxt[1])
        if nxt.kind == top.kind:
            return _Step((*stack[:-1], nxt))
        return _Step((*stack, nxt))

    async def _choose(
        self, top: Frame, choice: int, *, last: bool
    ) -> Frame | str | tuple[tuple[Frame, ...], str] | None:
        """The frame a numeric choice leads to (same kind: replaces the top), an END screen,
        a whole new stack with a note, or None when the choice is not on this screen."""
        if top.kind == HOME:
            return await self._from_home(choice)
        if top.kind == LATEST:
            count = len(await self.view.bulletins(self.language))
            if choice == 9 and (top.page + 1) * PER_PAGE < count:
                return replace(top, page=top.page + 1)
            index = top.page * PER_PAGE + choice - 1
            if 1 <= choice <= PER_PAGE and index < count:
                return Frame(READ, item=index)
            return None
        if top.kind == READ:
            pages = await self.view.reading_pages(top.item, self.language)
            if choice == 9 and top.page + 1 < len(pages):
                return replace(top, page=top.page + 1)
            return None
        if top.kind == TOPICS:
            topics = await self.view.topics()
            if choice == 1:
                return Frame(CHANNELS, area=top.area)
            if 2 <= choice < len(topics) + 2:
                return Frame(CHANNELS, area=top.area, topics=(topics[choice - 2],))
            return None
        if top.kind == CHANNELS and choice in CHANNEL_CHOICES:
            return replace(top, kind=CONSENT, channels=CHANNEL_CHOICES[choice])
        if top.kind == CONSENT and choice == 1:
            return await self._subscribe(top) if last else self._end("ended")
        if top.kind == UNSUB and choice in UNSUB_CHOICES:
            return await self._unsubscribe(UNSUB_CHOICES[choice]) if last else self._end("ended")
        if top.kind == LANGUAGE and choice in LANGUAGE_CHOICES:
            self.language = LANGUAGE_CHOICES[choice]
            subscription = await self.view.subscription() if last else None
            # Choosing the language already stored changes nothing: no write, no lock.
            if subscription is not None and subscription.language != self.language:
                await self.directory.set_language(self.caller.phone, self.language)
            return (Frame(HOME),), wording.say(self.language, "language_set")
        return None

    async def _from_home(self, choice: int) -> Frame | None:
        if choice == 1:
            return Frame(LATEST)
        if choice == 2:
            return Frame(VERIFY_ASK)
        if choice == 3:
            return Frame(AREA)
        if choice == 4:
            subscription = await self.view.subscription()
            active = subscription is not None and subscription.active
            return Frame(UNSUB) if active else Frame(NOT_SUBSCRIBED)
        if choice == 5:
            return Frame(LANGUAGE)
        return None

    async def _subscribe(self, frame: Frame) -> str:
        consent = self.view.consent_text(frame.channels, self.language)
        request = SubscriptionRequest(
            language=self.language,
            area_code=frame.area,
            topics=frame.topics,
            channels=frame.channels,
            consent_text=consent,
            consent_channel="ussd",
        )
        await self.directory.subscribe(self.caller.phone, request)
        return self._end("subscribed", area=wording.area_phrase(self.language, frame.area))

    async def _unsubscribe(self, channels: tuple[str, ...] | None) -> str:
        if not await self.directory.unsubscribe(self.caller.phone, channels):
            return self._end("not_subscribed")
        return self._end("unsubscribed", channels=wording.channels_phrase(self.language, channels))
