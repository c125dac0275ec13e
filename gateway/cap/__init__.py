"""CAP 1.2 (OASIS Common Alerting Protocol) in and out.

- ``document``: parse a CAP document safely (no network, no DTD, no entities, size-capped)
  and validate it against ``cap-1.2.xsd``; every problem names the element and its line.
- ``reader``: a validated ``<alert>`` -> the fields of an announcement (docs/cap.md has the
  mapping), with each field remembering the element it came from.
- ``geography``: CAP polygons and circles -> Indonesian area codes, by area centroids.
- ``writer``: an announcement -> a CAP 1.2 document; ``atom``: the public Atom feed.
- ``tables`` / ``store``: which CAP alert became (or changed) which announcement.
"""

from __future__ import annotations

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_MEDIA_TYPE = "application/cap+xml"


class CapProblem(Exception):
    """Why a CAP document cannot become an announcement: the element (``field``, a path such
    as ``alert/info[2]/language``), its line in the document (None when unknown) and why."""

    def __init__(self, field: str, line: int | None, reason: str) -> None:
        self.field = field
        self.line = line
        self.reason = reason
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{field}: {reason}")

    @property
    def message(self) -> str:
        return str(self)
