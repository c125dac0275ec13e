"""Drawing the USSD menu's screens, and the directory reads they need (once per request).

``View`` caches what it reads for the length of one request, so replaying a long history asks
the directory for each thing at most once (per language). An announcement's reading pages are
kept across requests (``_reading_pages``): they depend on nothing but the bulletin, the
language and the screen size, and every caller reading it asks for the same ones.
"""

from __future__ import annotations

from functools import lru_cache

from gateway.citizen import menu, wording
from gateway.citizen.menu import MAX_BULLETINS, MAX_TOPICS, PER_PAGE, Frame
from gateway.citizen.ports import Bulletin, Caller, CitizenDirectory, Subscription
from gateway.citizen.screens import PREFIX, clip, pages, screen

_UNSET = object()
AGENCY_HEADER = 40


@lru_cache(maxsize=512)
def _reading_pages(b: Bulletin, language: str, width: int) -> tuple[str, ...]:
    dated = " ".join(
        part
        for part in (wording.short_date(b.date), wording.say(language, "code_word"), b.code)
        if part
    )
    return tuple(pages(f"{b.title}\n{dated}\n{b.body}".strip(), width))


class View:
    def __init__(self, directory: CitizenDirectory, caller: Caller, size: int) -> None:
        self.directory = directory
        self.caller = caller
        self.size = size
        self._subscription: object = _UNSET
        self._bulletins: dict[str, list[Bulletin]] = {}
        self._topics: list[str] | None = None

    async def subscription(self) -> Subscription | None:
        if self._subscription is _UNSET:
            self._subscription = await self.directory.subscription(self.caller.phone)
        return self._subscription  # type: ignore[return-value]

    async def bulletins(self, language: str) -> list[Bulletin]:

        if language not in self._bulletins:
            subscription = await self.subscription()
            area = subscription.area_code if subscription is not None else None
            found = await self.directory.latest(
                area_code=area, language=language, limit=MAX_BULLETINS
            )
            self._bulletins[language] = found[:MAX_BULLETINS]
        return self._bulletins[language]

    async def topics(self) -> list[str]:

        if self._topics is None:
            self._topics = (await self.directory.topics())[:MAX_TOPICS]
        return self._topics

    def _footer_reserve(self, language: str) -> int:
        say = wording.say
        paged = len(say(language, "next")) + 1 + len(say(language, "back"))
        closing = len(say(language, "back")) + 1 + len(say(language, "home_key"))
        return 1 + len("200/200 ") + max(paged, closing)

    async def reading_pages(self, item: int, language: str) -> list[str]:
        """The announcement ``item`` of the latest list, cut into screens (at least one)."""
        found = await self.bulletins(language)
        if not 0 <= item < len(found):
            return [""]
        width = self.size - PREFIX - self._footer_reserve(language)
        return list(_reading_pages(found[item], language, width))

    def consent_text(self, channels: tuple[str, ...], language: str) -> str:
        """The consent sentence as shown (the agency name shortened to fit the screen)."""
        how = wording.channels_phrase(language, channels)
        fixed = wording.say(language, "consent", agency="", channels=how)
        room = self.size - PREFIX - len(fixed) - 1 - len(wording.say(language, "agree"))
        agency = clip(self.directory.agency_name, max(room, 8))
        return wording.say(language, "consent", agency=agency, channels=how)

    def _compose(self, main: str, *, note: str | None, nav: str = "", final: bool = False) -> str:
        """``note`` / ``main`` / ``nav`` on one screen; the nav, then the note give way first."""
        room = self.size - PREFIX
        for parts in ((note, main, nav), (note, main), (main,)):
            body = "\n".join(p for p in parts if p)
            if len(body) <= room:
                return screen(body, size=self.size, final=final)
        return screen(main, size=self.size, final=final)

    def _nav(self, language: str, *keys: str) -> str:
        return " ".join(wording.say(language, key) for key in keys)

    async def render(self, frame: Frame, language: str, *, note: str | None) -> str:

        say = wording.say
        kind = frame.kind
        if kind == menu.HOME:
            options = say(language, "home")
            agency = clip(self.directory.agency_name, AGENCY_HEADER)
            room = self.size - PREFIX
            for parts in ((note, agency, options), (note, options), (options,)):
                body = "\n".join(p for p in parts if p)
                if len(body) <= room:
                    break
            return screen(body, size=self.size)
        if kind == menu.LATEST:
            return await self._latest(frame, language, note)
        if kind == menu.READ:
            return await self._read(frame, language)
        if kind == menu.VERIFY_ASK:
            return self._compose(
                say(language, "verify_ask"), note=note, nav=self._nav(language, "back")
            )
        if kind == menu.VERIFY_RESULT:
            return await self._verdict(frame.code, language, note)
        if kind == menu.AREA:
            return self._compose(
                say(language, "area_ask"), note=note, nav=self._nav(language, "back")
            )
        if kind == menu.TOPICS:
            topics = await self.topics()
            lines = [say(language, "topics_ask"), f"1 {say(language, 'all_topics')}"]
            lines += [f"{n} {clip(t, 20)}" for n, t in enumerate(topics, start=2)]
            return self._compose("\n".join(lines), note=note, nav=self._nav(language, "back"))
        if kind == menu.CHANNELS:
            return self._compose(
                say(language, "channels_ask"), note=note, nav=self._nav(language, "back")
            )
        if kind == menu.CONSENT:
            consent = self.consent_text(frame.channels, language)
            main = f"{consent}\n{say(language, 'agree')}"
            return self._compose(main, note=note, nav=self._nav(language, "back"))
        if kind == menu.UNSUB:
            return self._compose(
                say(language, "unsub_ask"), note=note, nav=self._nav(language, "back")
            )
        if kind == menu.LANGUAGE:
            return self._compose(
                say(language, "language_ask"), note=note, nav=self._nav(language, "back")
            )
        if kind == menu.NOT_SUBSCRIBED:
            return screen(say(language, "not_subscribed"), size=self.size, final=True)
        return screen(say(language, "ended"), size=self.size, final=True)

    async def _latest(self, frame: Frame, language: str, note: str | None) -> str:

        say = wording.say
        found = await self.bulletins(language)
        if not found:
            return self._compose(
                say(language, "no_news"), note=None, nav=self._nav(language, "back")
            )
        page_count = (len(found) + PER_PAGE - 1) // PER_PAGE
        page = min(frame.page, page_count - 1)
        shown = found[page * PER_PAGE : (page + 1) * PER_PAGE]
        header = f"{say(language, 'latest')} {page + 1}/{page_count}"
        keys = ("next", "back", "home_key") if page + 1 < page_count else ("back", "home_key")
        nav = self._nav(language, *keys)
        lead = f"{note}\n{header}" if note else header
        room = self.size - PREFIX - len(lead) - len(nav) - 2 - len(shown)
        width = max(room // len(shown), 6)
        items = [clip(f"{n} {b.title}", width) for n, b in enumerate(shown, start=1)]
        return screen("\n".join([lead, *items, nav]), size=self.size)

    async def _read(self, frame: Frame, language: str) -> str:
        say = wording.say
        found = await self.bulletins(language)
        if not 0 <= frame.item < len(found):
            return self._compose(
                say(language, "no_news"), note=None, nav=self._nav(language, "back")
            )
        text_pages = await self.reading_pages(frame.item, language)
        page = min(frame.page, len(text_pages) - 1)
        more = page + 1 < len(text_pages)
        keys = ("next", "back") if more else ("back", "home_key")
        footer = f"{page + 1}/{len(text_pages)} {self._nav(language, *keys)}"
        return screen(f"{text_pages[page]}\n{footer}", size=self.size)

    async def _verdict(self, code: str, language: str, note: str | None) -> str:
        say = wording.say
        result = await self.directory.verify(code)
        nav = self._nav(language, "back", "home_key")
        if not result.genuine:
            return self._compose(say(language, "fake", code=code), note=note, nav=nav)
        fixed = say(language, "genuine", code=code, agency=result.agency or "", title="")
        date = wording.short_date(result.issued_at)
        room = self.size - PREFIX - len(fixed) - len(nav) - len(date) - 3
        agency = clip(result.agency or "", max(room // 3, 10))
        title_room = room - len(agency) + len(result.agency or "")
        title = clip(result.title or "", max(title_room, 10))
        main = say(language, "genuine", code=code, agency=agency, title=title)
        if date:
            main = f"{main} ({date})"
        return self._compose(main, note=note, nav=nav)
