"""The public Atom feed (RFC 4287) of the latest announcements: each entry links to the
announcement's page (``text/html``) and to its CAP 1.2 document (``application/cap+xml``),
the way alert aggregators expect a CAP feed to look."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from lxml import etree  # type: ignore[import-untyped]

from gateway.cap import CAP_MEDIA_TYPE

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_MEDIA_TYPE = "application/atom+xml"
SUMMARY_CHARS = 280


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _add(parent: Any, name: str, text: str | None = None, **attributes: str) -> Any:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{name}", attrib=attributes)
    if text is not None:
        element.text = text
    return element


def atom_feed(
    items: Iterable[Mapping[str, Any]], *, public_base: str, title: str, now: datetime
) -> bytes:
    """``items``: announcements with ``title``, ``body``, ``facts``, ``verification_code``,
    ``language``, ``agency`` (its name), ``published`` and ``updated`` datetimes."""
    base = public_base.rstrip("/")
    rows = list(items)
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    _add(feed, "id", f"{base}/feed.atom")
    _add(feed, "title", title)
    _add(feed, "updated", _stamp(max((r["updated"] for r in rows), default=now)))
    _add(feed, "link", rel="self", type=ATOM_MEDIA_TYPE, href=f"{base}/feed.atom")
    _add(feed, "link", rel="alternate", type="text/html", href=f"{base}/")
    author = _add(feed, "author")
    _add(author, "name", title)
    for row in rows:
        page = f"{base}/a/{row['verification_code']}"
        entry = _add(feed, "entry")
        _add(entry, "id", page)
        _add(entry, "title", row["title"])
        _add(entry, "updated", _stamp(row["updated"]))
        _add(entry, "published", _stamp(row["published"]))
        entry_author = _add(entry, "author")
        _add(entry_author, "name", row["agency"])
        _add(entry, "link", rel="alternate", type="text/html", href=page)
        _add(entry, "link", rel="alternate", type=CAP_MEDIA_TYPE, href=f"{page}.cap")
        what = (row["facts"] or {}).get("what")
        summary = row["body"] or what or row["title"]
        if len(summary) > SUMMARY_CHARS:
            summary = summary[: SUMMARY_CHARS - 1] + "…"
        _add(entry, "summary", summary, type="text")
        _add(entry, "category", term=row["urgency"])
    document: bytes = etree.tostring(
        feed, xml_declaration=True, encoding="UTF-8", pretty_print=True
    )
    return document
