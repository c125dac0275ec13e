"""One announcement rendered for one channel and language, from ``templates/<lang>/<channel>``.

Templates are operator-editable text, so they run in Jinja2's immutable sandbox with
``StrictUndefined`` and see only the announcement's own words (``AnnouncementContent``) plus
the ``level`` of shortening and a few formatting filters: never configuration or secrets.

Shortening is the template's business: the renderer renders at ``level`` 0, 1, 2 ... up to
``len(SHORTENING_STEPS)`` until the text fits the channel, and records each step that changed
the text. Facts and the verification code are never cut; when even the shortest form does
not fit, the rendition says ``fits=False``. The parity check then names every given fact the
text does not carry, so an announcement cannot go out with a channel silently missing one.
"""

from __future__ import annotations

import re
import string
import tomllib
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

import jinja2
import markupsafe
from jinja2.sandbox import ImmutableSandboxedEnvironment

from channels.base import Encoding
from gateway.domain import Urgency
from gateway.gsm import Replacement, SmsAnalysis, analyse, to_gsm7

DEFAULT_TEMPLATES_DIR: Final = Path(__file__).resolve().parent.parent / "templates"

# What each ``level`` above 0 lets a template drop, in order. Templates must keep to this
# meaning, since the rendition reports these words to the author.
SHORTENING_STEPS: Final = (
    "body dropped",
    "title shortened",
    "public link dropped",
    "title dropped",
)

FACT_NAMES: Final = ("what", "when", "where", "action", "link")
_SUFFIXES: Final = (".txt.j2", ".html.j2")
_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z", re.IGNORECASE)


class TemplateProblem(Exception):
    """A template that cannot be loaded or rendered: syntax, undefined name, sandbox refusal.

    ``template`` is the name under the templates folder (``id/sms.txt.j2``); ``line`` the
    template line when known.
    """

    def __init__(self, template: str, reason: str, line: int | None = None) -> None:
        where = f"template {template}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {reason}")
        self.template = template
        self.line = line
        self.reason = reason


class TemplateMissing(TemplateProblem):
    """No template exists for this channel in this language."""

    def __init__(self, channel: str, language: str) -> None:
        super().__init__(
            f"{language}/{channel}",
            f"no template for channel {channel!r} in language {language!r}",
        )
        self.channel = channel
        self.language = language


class ChannelLimits(Protocol):
    """What the renderer reads from a channel; every ``type[Channel]`` satisfies it."""

    @property
    def name(self) -> str: ...
    @property
    def max_length(self) -> int: ...
    @property
    def max_segments(self) -> int | None: ...
    @property
    def encoding(self) -> Encoding: ...
    @property
    def supports_links(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class PageLimits:
    """Limits of a target that is not a channel adapter, such as the public web page."""

    name: str
    max_length: int = 100_000
    max_segments: int | None = None
    encoding: Encoding = "unicode"
    supports_links: bool = True


WEB_PAGE: Final = PageLimits(name="web")


@dataclass(frozen=True, slots=True)
class Facts:
    """The things every channel must carry; None means not given."""

    what: str | None = None
    when: datetime | None = None
    where: str | None = None
    action: str | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class AnnouncementContent:
    """Everything a template may show. ``public_url`` is the ``/a/{code}`` page's full URL.

    ``facts.when`` is shown in its own time zone, so pass it in the audience's zone.
    """

    title: str
    body: str
    facts: Facts
    verification_code: str
    public_url: str
    agency_name: str
    language: str
    urgency: Literal["normal", "emergency"] | Urgency = "normal"


@dataclass(frozen=True, slots=True)
class Rendition:
    """An announcement as one channel will carry it in one language.

    ``encoding`` is ``gsm7``/``ucs2`` for channels with GSM 03.38 rules, else ``unicode``;
    ``segments`` is 1 outside SMS. ``fits`` is False when even the shortest form breaks the
    channel's ``max_length`` or ``max_segments``. ``missing_facts`` names given facts (and
    ``verification_code``) the text lacks. ``replacements`` lists what keep-GSM-7 mode changed.
    """

    channel: str
    language: str
    template: str
    markup: Literal["text", "html"]
    text: str
    characters: int
    encoding: Literal["gsm7", "ucs2", "unicode"]
    segments: int
    fits: bool
    level: int
    shortened_steps: tuple[str, ...] = ()
    missing_facts: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    replacements: tuple[Replacement, ...] = ()
    sms: SmsAnalysis | None = field(default=None, repr=False)


DATE_STYLES: Final = ("long", "short")
_DATE_FIELDS: Final = frozenset(
    {"weekday", "day", "month", "mon", "month_number", "year", "hour", "minute"}
)


@dataclass(frozen=True, slots=True)
class Calendar:
    """How dates read in one language, from ``templates/<language>/calendar.toml``.

    ``days`` start on Monday; ``long`` and ``short`` are ``str.format`` patterns over
    ``weekday day month mon month_number year hour minute`` (``mon``: first three letters of
    the month). The zone word (WIB, WITA, WIT, UTC+x) is appended by the formatter.
    """

    days: tuple[str, ...] = ()
    months: tuple[str, ...] = ()
    long: str = "{year}-{month_number:02}-{day:02} {hour:02}:{minute:02}"
    short: str = "{year}-{month_number:02}-{day:02} {hour:02}:{minute:02}"

    def format(self, value: datetime, style: str = "long") -> str:
        """``value`` in its own time zone; ``style`` is ``long`` or ``short``."""
        if style not in DATE_STYLES:
            raise ValueError(f"unknown date style {style!r}; use one of {DATE_STYLES}")
        month = self.months[value.month - 1] if self.months else str(value.month)
        text = (self.long if style == "long" else self.short).format(
            weekday=self.days[value.weekday()] if self.days else "",
            day=value.day,
            month=month,
            mon=month[:3],
            month_number=value.month,
            year=value.year,
            hour=value.hour,
            minute=value.minute,
        )
        zone = _zone(value)
        return f"{text} {zone}" if zone else text


def _load_calendar(path: Path) -> Calendar:
    name = f"{path.parent.name}/{path.name}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateProblem(name, str(exc)) from exc
    names: dict[str, tuple[str, ...]] = {}
    for key, count in (("days", 7), ("months", 12)):
        value = data.get(key)
        if not (isinstance(value, list) and len(value) == count):
            raise TemplateProblem(name, f"{key} must list {count} names")
        names[key] = tuple(map(str, value))
    for style in DATE_STYLES:
        pattern = data.get(style)
        if not isinstance(pattern, str):
            raise TemplateProblem(name, f"{style} must be a format pattern")
        # Plain field names only: a pattern must not reach attributes of the values.
        fields = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
        if not fields <= _DATE_FIELDS:
            unknown = ", ".join(sorted(fields - _DATE_FIELDS))
            raise TemplateProblem(name, f"{style} uses unknown fields: {unknown}")
    return Calendar(names["days"], names["months"], data["long"], data["short"])


# Indonesia's own zone words, which citizens read more easily than UTC offsets.
_ZONE_WORDS: Final = {7 * 60: "WIB", 8 * 60: "WITA", 9 * 60: "WIT", 0: "UTC"}


def _zone(value: datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        return ""
    minutes = int(offset.total_seconds() // 60)
    if minutes in _ZONE_WORDS:
        return _ZONE_WORDS[minutes]
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02}" if rest else "")


def spell(code: str) -> str:
    """``AB12`` -> ``A B 1 2``: a voice reads a code one sign at a time."""
    return " ".join(code)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?:;" else text + "."


def _paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def _http_url(url: str) -> str:
    # Autoescaping does not stop a javascript: URL in an href, so only web links pass.
    return url if urlsplit(url.strip()).scheme.lower() in ("http", "https") else ""


def _tidy(text: str) -> str:
    """Drop trailing spaces and runs of blank lines that conditional blocks leave behind."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    # Jinja rewrites tracebacks so template frames carry template line numbers.
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if filename is not None and frame.f_code.co_filename == filename:
            line = lineno
    return line


class Renderer:
    """Renders announcements with the templates of one folder; cheap to call repeatedly.

    Compiled templates are cached for the renderer's life: changed files need a new Renderer.
    """

    def __init__(self, templates_dir: Path | str | None = None) -> None:
        self.templates_dir = Path(templates_dir) if templates_dir else DEFAULT_TEMPLATES_DIR
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=lambda name: name is not None and name.endswith(".html.j2"),
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
            # A None a template forgot to guard prints as nothing, never as "None".
            finalize=lambda value: "" if value is None else value,
        )
        self._env.filters.update(
            datetime=self._datetime_filter,
            spell=spell,
            sentence=_sentence,
            paragraphs=_paragraphs,
            http_url=_http_url,
        )
        self._cache: dict[tuple[str, str], jinja2.Template] = {}
        self._calendars: dict[str, Calendar] = {}

    def calendar(self, language: str) -> Calendar:
        """Date names for ``language``; ISO-like dates when it has no ``calendar.toml``.

        Raises ``TemplateProblem`` when the file exists but is malformed.
        """
        calendar = self._calendars.get(language)
        if calendar is None:
            path = self.templates_dir / language / "calendar.toml"
            exists = _SAFE_NAME.match(language) is not None and path.is_file()
            calendar = _load_calendar(path) if exists else Calendar()
            self._calendars[language] = calendar
        return calendar

    @jinja2.pass_context
    def _datetime_filter(
        self, context: jinja2.runtime.Context, value: datetime | None, style: str = "long"
    ) -> str:
        if value is None:  # an unguarded optional date prints nothing, like any None
            return ""
        return self.calendar(str(context["language"])).format(value, style)

    def languages(self) -> list[str]:
        """Languages with a template folder, sorted."""
        if not self.templates_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.templates_dir.iterdir()
            if entry.is_dir() and _SAFE_NAME.match(entry.name)
        )

    def has_template(self, channel: str, language: str) -> bool:
        try:
            self.template(channel, language)
        except TemplateMissing:
            return False
        return True

    def template(self, channel: str, language: str) -> jinja2.Template:
        """The compiled template for ``channel`` in ``language``.

        Raises ``TemplateMissing`` when there is none and ``TemplateProblem`` when it does not
        compile or two templates (``.txt.j2`` and ``.html.j2``) compete.
        """
        cached = self._cache.get((language, channel))
        if cached is not None:
            return cached
        if not (_SAFE_NAME.match(channel) and _SAFE_NAME.match(language)):
            raise TemplateMissing(channel, language)
        names = [
            f"{language}/{channel}{suffix}"
            for suffix in _SUFFIXES
            if (self.templates_dir / language / f"{channel}{suffix}").is_file()
        ]
        if not names:
            raise TemplateMissing(channel, language)
        if len(names) > 1:
            raise TemplateProblem(names[0], f"ambiguous: both {' and '.join(names)} exist")
        compiled = self._load(names[0])
        self._cache[(language, channel)] = compiled
        return compiled

    def _load(self, name: str) -> jinja2.Template:
        try:
            return self._env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(name, exc.message or "syntax error", exc.lineno) from exc
        except jinja2.TemplateError as exc:
            raise TemplateProblem(name, str(exc)) from exc

    def _render(self, template: jinja2.Template, content: AnnouncementContent, level: int) -> str:
        name = template.name or "?"
        try:
            raw = template.render(
                title=content.title,
                body=content.body,
                facts=content.facts,
                verification_code=content.verification_code,
                public_url=content.public_url,
                agency_name=content.agency_name,
                language=content.language,
                urgency=str(content.urgency),
                level=level,
            )
        except Exception as exc:  # templates are operator code: report, don't crash
            reason = str(exc) or type(exc).__name__
            raise TemplateProblem(name, reason, _template_line(exc, template.filename)) from exc
        return _tidy(raw)

    def render(
        self, channel: ChannelLimits, content: AnnouncementContent, *, keep_gsm7: bool = False
    ) -> Rendition:
        """Render ``content`` for ``channel`` in ``content.language``, shortened to fit.

        ``keep_gsm7`` replaces look-alike characters (``gsm.to_gsm7``) on GSM-7 channels;
        elsewhere it changes nothing. Raises ``TemplateMissing`` or ``TemplateProblem``.
        """
        template = self.template(channel.name, content.language)
        is_sms = channel.encoding == "gsm7"
        # X weighs characters and links; Mastodon counts links as 23: the channel knows.
        measure: Callable[[str], int] = getattr(channel, "text_length", len)
        steps: list[str] = []
        previous: str | None = None
        for level in range(len(SHORTENING_STEPS) + 1):
            raw = self._render(template, content, level)
            if previous is not None and raw != previous:
                steps.append(SHORTENING_STEPS[level - 1])
            text, replacements = to_gsm7(raw) if keep_gsm7 and is_sms else (raw, [])
            sms = analyse(text) if is_sms else None
            fits = measure(text) <= channel.max_length and (
                sms is None or channel.max_segments is None or sms.segments <= channel.max_segments
            )
            if fits:
                break
            previous = raw

        markup: Literal["text", "html"] = (
            "html" if (template.name or "").endswith(".html.j2") else "text"
        )
        problems = []
        if not fits:
            limit = f"{channel.max_length} characters"
            used = f"{measure(text)} characters"
            if sms is not None and channel.max_segments is not None:
                limit += f" in {channel.max_segments} SMS"
                used += f" in {sms.segments} SMS"
            problems.append(
                f"{channel.name}/{content.language}: {used} even at the shortest form; the limit"
                f" is {limit}. Shorten the facts or the agency name."
            )
        unmappable = "".join(r.original for r in replacements if r.unmappable)
        if unmappable:
            problems.append(f"no GSM-7 stand-in for {unmappable!r}: the SMS goes as UCS-2")
        return Rendition(
            channel=channel.name,
            language=content.language,
            template=template.name or "",
            markup=markup,
            text=text,
            characters=measure(text),
            encoding=sms.encoding if sms is not None else "unicode",
            segments=sms.segments if sms is not None else 1,
            fits=fits,
            level=level,
            shortened_steps=tuple(steps),
            missing_facts=tuple(self.missing_facts(raw, content, links=channel.supports_links)),
            problems=tuple(problems),
            replacements=tuple(replacements),
            sms=sms,
        )

    def missing_facts(
        self, text: str, content: AnnouncementContent, *, links: bool = True
    ) -> list[str]:
        """Names of the given facts ``text`` does not show, plus ``verification_code`` if absent.

        A fact counts as shown when its text appears as is or HTML-escaped, a date in any style
        the ``datetime`` filter offers, and the code as is or spelled out for voice. With
        ``links=False`` (a channel where links are useless, such as voice) the link is not required.
        """
        facts = content.facts
        missing = []
        for name in FACT_NAMES:
            value = getattr(facts, name)
            if value is None or (name == "link" and not links):
                continue
            if isinstance(value, datetime):
                shown = [self.calendar(content.language).format(value, s) for s in DATE_STYLES]
            else:
                shown = [str(value).strip(), str(markupsafe.escape(str(value).strip()))]
            if not any(form and form in text for form in shown):
                missing.append(name)
        code = content.verification_code
        if code not in text and spell(code) not in text:
            missing.append("verification_code")
        return missing

    def check_all(self, channels: Iterable[ChannelLimits] = ()) -> list[str]:
        """Load and trial-render every template; call at start-up to fail early.

        Every template is rendered at every level with sample content (all facts, and none).
        For each of ``channels``, every language must have a template that carries every
        fact. Returns the template names checked; raises ``TemplateProblem`` (or
        ``TemplateMissing``) for the first fault.
        """
        checked: list[str] = []
        for language in self.languages():
            self.calendar(language)
            samples = _samples(language)
            for path in sorted((self.templates_dir / language).iterdir()):
                channel = next(
                    (path.name[: -len(s)] for s in _SUFFIXES if path.name.endswith(s)), None
                )
                # Names starting with "_" are partials for {% include %}, not channel templates.
                if channel is None or not _SAFE_NAME.match(channel) or not path.is_file():
                    continue
                template = self.template(channel, language)
                for content in samples:
                    for level in range(len(SHORTENING_STEPS) + 1):
                        self._render(template, content, level)
                checked.append(template.name or path.name)
            for limits in channels:
                rendition = self.render(limits, samples[0])
                if rendition.missing_facts:
                    raise TemplateProblem(
                        rendition.template,
                        f"leaves out {', '.join(rendition.missing_facts)}",
                    )
        return checked


def _samples(language: str) -> Sequence[AnnouncementContent]:
    """Content that exercises every branch a template is likely to have."""
    full = AnnouncementContent(
        title="Sample title",
        body="Sample body.\n\nSecond paragraph.",
        facts=Facts(
            what="Sample what",
            when=datetime(2025, 3, 3, 14, 0, tzinfo=timezone(timedelta(hours=7))),
            where="Sample where",
            action="Sample action",
            link="https://example.org/info",
        ),
        verification_code="K7P2QX",
        public_url="https://example.org/a/K7P2QX",
        agency_name="Sample Agency",
        language=language,
        urgency="emergency",
    )
    bare = replace(full, body="", facts=Facts(), urgency="normal")
    return (full, bare)
