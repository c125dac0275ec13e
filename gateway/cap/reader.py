"""A validated CAP ``<alert>`` -> the fields of an announcement (mapping in docs/cap.md).

Every field keeps the element it came from (``Draft.sources``), so a value the announcement
model refuses (a headline over 200 characters, an unknown channel) is reported against the
CAP element and its line, not against a JSON field the sender never wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.cap import CAP_NS, CapProblem
from gateway.cap.document import element_path
from gateway.cap.geography import (
    ShapeProblem,
    areas_in_circle,
    areas_in_polygon,
    parse_circle,
    parse_polygon,
)
from gateway.citizen.areas import parse_area

GEOCODE_NAMES = frozenset({"kemendagri", "kode_wilayah"})
CHANNELS_PARAMETER = "warta:channels"
LINK_PARAMETER = "warta:link"
_LANGUAGES = {"id": "id", "in": "id", "en": "en"}
_EMERGENCY_URGENCY = frozenset({"Immediate", "Expected"})
_EMERGENCY_SEVERITY = frozenset({"Extreme", "Severe"})


def _q(name: str) -> str:
    return f"{{{CAP_NS}}}{name}"


@dataclass(frozen=True, slots=True)
class Reference:
    sender: str
    identifier: str
    sent: datetime


@dataclass(frozen=True, slots=True)
class CapMessage:
    """The ``<alert>`` header, and its ``<info>`` elements as they are."""

    root: Any
    identifier: str
    sender: str
    sent: datetime
    sent_text: str
    status: str
    msg_type: str
    scope: str
    references: list[Reference]
    infos: list[Any]

    def where(self, name: str) -> tuple[str, int | None]:
        element = self.root.find(_q(name))
        if element is None:
            return "alert", self.root.sourceline
        return element_path(element), element.sourceline


@dataclass
class Draft:
    """What an ``AnnouncementIn`` is built from, with the element behind each field."""

    fields: dict[str, Any]
    details: dict[str, Any]
    sources: dict[str, Any] = field(default_factory=dict)

    def problem(self, location: str, reason: str) -> CapProblem:
        """A CapProblem for the announcement field at ``location`` (``facts.link``,
        ``translations.en.title``, ``areas.2``), naming the CAP element it came from."""
        parts = location.split(".")
        for end in range(len(parts), 0, -1):
            element = self.sources.get(".".join(parts[:end]))
            if element is not None:
                return CapProblem(element_path(element), element.sourceline, reason)
        return CapProblem("alert", None, reason)


def _child_text(parent: Any, name: str) -> tuple[str | None, Any]:
    element = parent.find(_q(name))
    if element is None:
        return None, None
    text = (element.text or "").strip()
    return (text or None), element


def _problem(element: Any, reason: str) -> CapProblem:
    return CapProblem(element_path(element), element.sourceline, reason)


def parse_datetime(element: Any) -> datetime:
    try:
        value = datetime.fromisoformat((element.text or "").strip())
    except ValueError:
        raise _problem(element, f"'{(element.text or '')[:40]}' is not a date and time") from None
    if value.tzinfo is None:
        raise _problem(element, "the time needs an offset such as +07:00")
    return value


def read_message(root: Any) -> CapMessage:
    """The header of a schema-valid ``<alert>``."""
    values: dict[str, str] = {}
    for name in ("identifier", "sender", "sent", "status", "msgType", "scope"):
        text, _ = _child_text(root, name)
        values[name] = text or ""
    references: list[Reference] = []
    text, element = _child_text(root, "references")
    for triple in (text or "").split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            raise _problem(element, f"'{triple[:80]}' is not a 'sender,identifier,sent' triple")
        try:
            sent = datetime.fromisoformat(parts[2])
        except ValueError:
            sent = None
        if sent is None or sent.tzinfo is None:
            raise _problem(element, f"'{parts[2][:40]}' is not a sent time with an offset")
        references.append(Reference(sender=parts[0], identifier=parts[1], sent=sent))
    return CapMessage(
        root=root,
        identifier=values["identifier"],
        sender=values["sender"],
        sent=parse_datetime(root.find(_q("sent"))),
        sent_text=values["sent"],
        status=values["status"],
        msg_type=values["msgType"],
        scope=values["scope"],
        references=references,
        infos=list(root.iterfind(_q("info"))),
    )


def warta_language(info: Any) -> str:
    """``id``, ``in``, ``id-ID``, ``in-ID`` -> ``id``; ``en``, ``en-US``, ``en-GB`` -> ``en``.

    CAP's default language, when ``<language>`` is left out, is ``en-US``.
    """
    text, element = _child_text(info, "language")
    code = text or "en-US"
    language = _LANGUAGES.get(code.split("-")[0].lower())
    if language is None:
        raise _problem(
            element if element is not None else info,
            f"language '{code[:20]}' is not one Warta sends in: use id (id-ID, in-ID) "
            "or en (en-US)",
        )
    return language


def _parameters(info: Any) -> dict[str, tuple[str, Any]]:
    found: dict[str, tuple[str, Any]] = {}
    for parameter in info.iterfind(_q("parameter")):
        name, _ = _child_text(parameter, "valueName")
        value, _ = _child_text(parameter, "value")
        if name is not None:
            found.setdefault(name.lower(), (value or "", parameter))
    return found


def _area_codes(area: Any) -> list[str]:
    """The area codes one ``<area>`` names: its Kemendagri geocodes, and the areas whose
    centroid its polygons and circles hold. Unknown geocode schemes are ignored."""
    codes: list[str] = []
    for geocode in area.iterfind(_q("geocode")):
        name, _ = _child_text(geocode, "valueName")
        value, value_element = _child_text(geocode, "value")
        if (name or "").lower() not in GEOCODE_NAMES:
            continue
        code = parse_area(value or "")
        if code is None:
            raise _problem(
                value_element if value_element is not None else geocode,
                f"'{(value or '')[:20]}' is not a Kemendagri area code such as 31.71 or 3171",
            )
        codes.append(code)
    for polygon in area.iterfind(_q("polygon")):
        try:
            codes.extend(areas_in_polygon(parse_polygon(polygon.text or "")))
        except ShapeProblem as exc:
            raise _problem(polygon, str(exc)) from None
    for circle in area.iterfind(_q("circle")):
        try:
            codes.extend(areas_in_circle(*parse_circle(circle.text or "")))
        except ShapeProblem as exc:
            raise _problem(circle, str(exc)) from None
    return codes


@dataclass
class _Text:
    """One language's words and facts, with their elements."""

    info: Any
    language: str
    title: str
    body: str
    facts: dict[str, Any]
    sources: dict[str, Any]


def _read_text(info: Any, language: str, *, own_pages: str) -> _Text:
    event, event_el = _child_text(info, "event")
    headline, headline_el = _child_text(info, "headline")
    description, description_el = _child_text(info, "description")
    instruction, instruction_el = _child_text(info, "instruction")
    web, web_el = _child_text(info, "web")
    sources: dict[str, Any] = {
        "title": headline_el if headline is not None else event_el,
        "body": description_el,
        "facts.what": event_el,
        "facts.action": instruction_el,
    }
    facts: dict[str, Any] = {"what": event, "action": instruction}
    when_el = info.find(_q("onset"))
    if when_el is None:
        when_el = info.find(_q("effective"))
    if when_el is not None:
        facts["when"] = parse_datetime(when_el).isoformat()
        sources["facts.when"] = when_el
    link = _parameters(info).get(LINK_PARAMETER)
    if link is not None:
        facts["link"] = link[0] or None
        sources["facts.link"] = link[1]
    elif web is not None and not web.startswith(own_pages):
        # A link to our own verification page is not a fact: every message carries it anyway.
        facts["link"] = web
        sources["facts.link"] = web_el
    descriptions = []
    for area in info.iterfind(_q("area")):
        text, element = _child_text(area, "areaDesc")
        if text is not None and text not in descriptions:
            descriptions.append(text)
            sources.setdefault("facts.where", element)
    if descriptions:
        facts["where"] = "; ".join(descriptions)
    return _Text(
        info=info,
        language=language,
        title=headline or event or "",
        body=description or "",
        facts={k: v for k, v in facts.items() if v is not None},
        sources=sources,
    )


def to_draft(
    message: CapMessage,
    *,
    default_language: str,
    default_channels: list[str],
    own_pages: str,
    now: datetime,
) -> Draft:
    """The announcement a CAP Alert or Update describes.

    ``own_pages`` is the prefix of this gateway's public announcement pages (``…/a/``); a
    ``<web>`` link there is not taken as the link fact. Raises ``CapProblem``.
    """
    if not message.infos:
        path, line = message.where("msgType")
        raise CapProblem(path, line, f"a {message.msg_type} needs at least one <info>")
    texts: dict[str, _Text] = {}
    for info in message.infos:
        language = warta_language(info)
        if language in texts:
            element = info.find(_q("language"))
            raise _problem(
                element if element is not None else info,
                f"a second <info> in language '{language}': give one <info> per language",
            )
        texts[language] = _read_text(info, language, own_pages=own_pages)
    main_language = default_language if default_language in texts else next(iter(texts))
    main = texts[main_language]
    sources: dict[str, Any] = {"language": main.info.find(_q("language")), **main.sources}
    areas: list[str] = []
    first_area = None
    for text in texts.values():
        for area in text.info.iterfind(_q("area")):
            first_area = first_area if first_area is not None else area
            for code in _area_codes(area):
                if code not in areas:
                    areas.append(code)
    if first_area is not None:
        sources["areas"] = first_area
        if not areas:
            raise _problem(
                first_area,
                "no area Warta knows: give a geocode (valueName KEMENDAGRI, value such as "
                "31.71) or a polygon or circle over Indonesia",
            )
    parameters = _parameters(main.info)
    channels = list(default_channels)
    if CHANNELS_PARAMETER in parameters:
        value, element = parameters[CHANNELS_PARAMETER]
        channels = [c for c in re.split(r"[\s,]+", value.lower()) if c]
        sources["channels"] = element
    urgency_text, _ = _child_text(main.info, "urgency")
    severity_text, _ = _child_text(main.info, "severity")
    emergency = urgency_text in _EMERGENCY_URGENCY and severity_text in _EMERGENCY_SEVERITY
    fields: dict[str, Any] = {
        "title": main.title,
        "body": main.body,
        "language": main_language,
        "facts": main.facts,
        "translations": {},
        "areas": areas,
        "channels": channels,
        "urgency": "emergency" if emergency else "normal",
    }
    effective_el = main.info.find(_q("effective"))
    if effective_el is not None:
        effective = parse_datetime(effective_el)
        sources["send_at"] = effective_el
        # Already in effect: send as soon as it is approved.
        fields["send_at"] = effective.isoformat() if effective > now else None
    expires_el = main.info.find(_q("expires"))
    if expires_el is not None:
        fields["expires_at"] = parse_datetime(expires_el).isoformat()
        sources["expires_at"] = expires_el
    for language, text in texts.items():
        if language == main_language:
            continue
        fields["translations"][language] = {
            "title": text.title,
            "body": text.body,
            "facts": text.facts,
        }
        for key, element in text.sources.items():
            sources[f"translations.{language}.{key}"] = element
        sources[f"translations.{language}"] = text.info
    return Draft(
        fields=fields,
        details=_details(main.info),
        sources={k: v for k, v in sources.items() if v is not None},
    )


def _details(info: Any) -> dict[str, Any]:
    """What the announcement has no field for, kept for the CAP we publish."""
    details: dict[str, Any] = {
        "category": [c.text for c in info.iterfind(_q("category"))],
        "responseType": [r.text for r in info.iterfind(_q("responseType"))],
    }
    for name in ("urgency", "severity", "certainty", "senderName", "contact"):
        text, _ = _child_text(info, name)
        if text is not None:
            details[name] = text
    return details
