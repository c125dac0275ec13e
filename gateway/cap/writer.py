"""An announcement -> a CAP 1.2 document (``GET /a/{code}.cap``).

One ``<info>`` per language, each with every fact (a translation lacking one takes the main
language's, as the channels do). ``<web>`` is the announcement's public page, where citizens
check the verification code; a link fact of its own travels as the ``warta:link`` parameter,
so importing the document again gives the same facts. A cancelled announcement is published
as a Cancel referring to the Alert it withdraws.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from lxml import etree  # type: ignore[import-untyped]

from gateway.cap import CAP_NS
from gateway.cap.reader import CHANNELS_PARAMETER, LINK_PARAMETER
from gateway.outbox.content import content_for, languages_of
from gateway.store.announcements import AnnouncementRow

CAP_LANGUAGE = {"id": "id-ID", "en": "en-US"}
_BY_URGENCY = {
    "emergency": {"urgency": "Immediate", "severity": "Severe", "certainty": "Likely"},
    "normal": {"urgency": "Unknown", "severity": "Unknown", "certainty": "Unknown"},
}


def cap_time(value: datetime, zone: ZoneInfo) -> str:
    """CAP 1.2 date-time: whole seconds with an explicit offset (``+07:00``, never ``Z``)."""
    return value.astimezone(zone).replace(microsecond=0).isoformat()


def _add(parent: Any, name: str, text: str | None = None) -> Any:
    element = etree.SubElement(parent, f"{{{CAP_NS}}}{name}")
    if text is not None:
        element.text = text
    return element


def _named(parent: Any, name: str, value_name: str, value: str) -> None:
    element = _add(parent, name)
    _add(element, "valueName", value_name)
    _add(element, "value", value)


def alert_identity(row: AnnouncementRow, *, public_base: str, zone: ZoneInfo) -> tuple[str, ...]:
    """(sender, identifier, sent) of the Alert Warta publishes for an announcement."""
    host = urlsplit(public_base).hostname or "warta.invalid"
    v = row.values
    sent = v["approved_at"] or v["created_at"]
    return (
        f"{row.agency_slug}@{host}",
        f"warta-{row.agency_slug}-{v['id']}",
        cap_time(sent, zone),
    )


def cap_document(
    row: AnnouncementRow,
    *,
    public_base: str,
    timezone: str,
    details: dict[str, Any] | None = None,
) -> bytes:
    """The CAP 1.2 document for ``row``. ``details`` are the categories, urgency, severity,
    certainty and response types of the CAP alert it came from, if it came from one."""
    zone = ZoneInfo(timezone)
    v = row.values
    page = f"{public_base.rstrip('/')}/a/{v['verification_code']}"
    sender, identifier, sent = alert_identity(row, public_base=public_base, zone=zone)
    cancelled = v["status"] == "cancelled" and v["cancelled_at"] is not None
    alert = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
    _add(alert, "identifier", f"{identifier}-cancel" if cancelled else identifier)
    _add(alert, "sender", sender)
    _add(alert, "sent", cap_time(v["cancelled_at"], zone) if cancelled else sent)
    _add(alert, "status", "Actual")
    _add(alert, "msgType", "Cancel" if cancelled else "Alert")
    _add(alert, "source", row.agency_name)
    _add(alert, "scope", "Public")
    if cancelled:
        _add(alert, "references", f"{sender},{identifier},{sent}")
    given = details or {}
    levels = {**_BY_URGENCY[v["urgency"]]}
    if given.get("urgency"):
        levels = {k: given.get(k, levels[k]) for k in levels}
    for language in languages_of(v):
        content = content_for(v, language=language, agency_name=row.agency_name, public_url=page)
        facts = content.facts
        info = _add(alert, "info")
        _add(info, "language", CAP_LANGUAGE.get(language, language))
        for category in given.get("category") or ["Other"]:
            _add(info, "category", category)
        _add(info, "event", facts.what or content.title)
        for response in given.get("responseType") or []:
            _add(info, "responseType", response)
        _add(info, "urgency", levels["urgency"])
        _add(info, "severity", levels["severity"])
        _add(info, "certainty", levels["certainty"])
        if v["send_at"] is not None:
            _add(info, "effective", cap_time(v["send_at"], zone))
        if facts.when is not None:
            _add(info, "onset", cap_time(facts.when, zone))
        if v["expires_at"] is not None:
            _add(info, "expires", cap_time(v["expires_at"], zone))
        _add(info, "senderName", row.agency_name)
        _add(info, "headline", content.title)
        if content.body:
            _add(info, "description", content.body)
        if facts.action:
            _add(info, "instruction", facts.action)
        _add(info, "web", page)
        if given.get("contact"):
            _add(info, "contact", given["contact"])
        _named(info, "parameter", "warta:verification_code", v["verification_code"])
        _named(info, "parameter", CHANNELS_PARAMETER, ",".join(v["channels"]))
        if facts.link:
            _named(info, "parameter", LINK_PARAMETER, str(facts.link))
        if v["areas"] or facts.where:
            area = _add(info, "area")
            _add(area, "areaDesc", facts.where or "Kode wilayah " + ", ".join(v["areas"]))
            for code in v["areas"]:
                _named(area, "geocode", "KEMENDAGRI", code)
    document: bytes = etree.tostring(
        alert, xml_declaration=True, encoding="UTF-8", pretty_print=True
    )
    return document
