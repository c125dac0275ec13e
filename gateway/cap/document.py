"""Reading CAP XML safely and checking it against the CAP 1.2 schema.

The parser resolves no entities, loads no DTD, never touches the network and refuses
libxml2's "huge tree" mode; a document type declaration is refused outright, so entity
expansion attacks (billion laughs, external entities) have nothing to work with. Callers cap
the size of what they read before it gets here (``MAX_CAP_BYTES``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree  # type: ignore[import-untyped]

from gateway.cap import CAP_NS, CapProblem

MAX_CAP_BYTES = 512 * 1024
SCHEMA_PATH = Path(__file__).with_name("cap-1.2.xsd")
# Elements that may repeat: their paths carry a 1-based index (``alert/info[2]``).
REPEATABLE = frozenset(
    {
        "code",
        "info",
        "category",
        "responseType",
        "eventCode",
        "parameter",
        "resource",
        "area",
        "polygon",
        "circle",
        "geocode",
    }
)
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
_ELEMENT_PREFIX = re.compile(r"^Element '[^']*'(?:, attribute '[^']*')?: ")
_FACET = re.compile(r"\[facet '[^']*'\] ")


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
    )


@cache
def cap_schema() -> Any:
    """The compiled CAP 1.2 schema (compiled once per process)."""
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH), _parser()))


def local_name(element: Any) -> str:
    return str(etree.QName(element).localname)


def element_path(element: Any) -> str:
    """``alert/info[2]/area[1]/geocode[3]``: the element, named for a person to find."""
    parts: list[str] = []
    node = element
    while node is not None and isinstance(node.tag, str):
        name = local_name(node)
        parent = node.getparent()
        if name in REPEATABLE and parent is not None:
            same = [c for c in parent if isinstance(c.tag, str) and c.tag == node.tag]
            name = f"{name}[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/".join(reversed(parts))


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def parse_cap(raw: bytes) -> Any:
    """Parse and validate one CAP 1.2 document; returns its root ``<alert>`` element.

    Raises ``CapProblem`` naming the element and line of the first problem found.
    """
    if len(raw) > MAX_CAP_BYTES:
        raise CapProblem("alert", None, f"the document is larger than {MAX_CAP_BYTES} bytes")
    if not raw.strip():
        raise CapProblem("alert", None, "the document is empty; a CAP 1.2 <alert> is expected")
    declaration = _DOCTYPE.search(raw)
    if declaration is not None:
        raise CapProblem(
            "alert",
            _line_of(raw, declaration.start()),
            "document type declarations and entities are not allowed in CAP",
        )
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) else None
        reason = str(exc.msg or "not well-formed XML").split(" (line")[0]
        raise CapProblem("alert", line, f"not well-formed XML: {reason}") from None
    if root.tag != f"{{{CAP_NS}}}alert":
        namespace = etree.QName(root).namespace
        raise CapProblem(
            local_name(root),
            root.sourceline,
            f"the root element must be <alert> in the namespace {CAP_NS}, "
            f"not <{local_name(root)}> in {namespace or 'no namespace'}",
        )
    schema = cap_schema()
    if not schema.validate(root):
        error = schema.error_log[0]
        field = "alert"
        if error.path:
            found = root.getroottree().xpath(error.path)
            if found and isinstance(found, list):
                field = element_path(found[0])
        reason = _FACET.sub("", _ELEMENT_PREFIX.sub("", str(error.message)))
        raise CapProblem(field, error.line or None, reason)
    return root
