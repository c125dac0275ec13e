"""Authenticity checks for Meta webhooks, as pure functions.

Meta signs every webhook POST with ``X-Hub-Signature-256: sha256=<hex>``, the HMAC-SHA256 of
the raw request body keyed with the app secret (Meta's Webhooks "Getting started" guide). Meta
escapes non-ASCII characters as ``\\uXXXX`` before signing, so the check must run over the
bytes exactly as received, never over re-encoded JSON.

Subscribing a callback URL starts with a GET carrying ``hub.mode=subscribe``,
``hub.verify_token`` (the token we typed into the app dashboard) and ``hub.challenge``, which we
echo back only when the token matches.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def sign(raw_body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``raw_body``: ``sha256=<lowercase hex>``."""
    digest = hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def verify_signature(raw_body: bytes, header: str | None, app_secret: str) -> bool:
    """Whether ``header`` is Meta's signature of ``raw_body`` under ``app_secret``.

    False for a missing or malformed header, an empty secret (a misconfigured gateway must not
    accept everything), or any mismatch. The comparison takes constant time.
    """
    if not header or not app_secret:
        return False
    value = header.strip()
    if not value.lower().startswith(_PREFIX):
        return False
    given = value[len(_PREFIX) :]
    if len(given) != 64 or not _HEX_DIGITS.issuperset(given):
        return False
    expected = sign(raw_body, app_secret)[len(_PREFIX) :]
    return hmac.compare_digest(given.lower().encode(), expected.encode())


def verify_subscription(query: Mapping[str, str], verify_token: str) -> str | None:
    """The ``hub.challenge`` to echo for a genuine subscription request, else None.

    Genuine means ``hub.mode`` is ``subscribe`` and ``hub.verify_token`` equals ``verify_token``
    (compared in constant time); an empty configured token never matches. The caller answers
    200 with the challenge as plain text, or 403.
    """
    if not verify_token or query.get("hub.mode") != "subscribe":
        return None
    given = query.get("hub.verify_token", "")
    if not hmac.compare_digest(given.encode(), verify_token.encode()):
        return None
    challenge = query.get("hub.challenge")
    return challenge or None
