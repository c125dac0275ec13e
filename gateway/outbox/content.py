"""From a stored announcement to what templates see, per language."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, cast

from gateway.renditions import AnnouncementContent, Facts


def languages_of(announcement: Mapping[str, Any]) -> list[str]:
    return [announcement["language"], *announcement["translations"].keys()]


def _facts(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    facts = dict(raw or {})
    when = facts.get("when")
    if isinstance(when, str):
        facts["when"] = datetime.fromisoformat(when)
    return {k: facts.get(k) for k in ("what", "when", "where", "action", "link")}


def content_for(
    announcement: Mapping[str, Any], *, language: str, agency_name: str, public_url: str
) -> AnnouncementContent:
    """The announcement's text in ``language`` (its translation, or the main text).

    Facts a translation leaves out (a date, a link) are taken from the main language, so every
    language carries every fact.
    """
    base = _facts(announcement["facts"])
    title, body = announcement["title"], announcement["body"]
    if language != announcement["language"]:
        translation = announcement["translations"].get(language)
        if translation is not None:
            title, body = translation["title"], translation.get("body", "")
            given = {k: v for k, v in _facts(translation.get("facts")).items() if v is not None}
            base.update(given)
        else:
            language = announcement["language"]
    return AnnouncementContent(
        title=title,
        body=body,
        facts=Facts(**base),
        verification_code=announcement["verification_code"],
        public_url=public_url,
        agency_name=agency_name,
        language=language,
        urgency=cast(Literal["normal", "emergency"], announcement["urgency"]),
    )
