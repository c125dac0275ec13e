"""Telling 'the database is unavailable' apart from bugs, for a clear 503."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError

_UNAVAILABLE_WORDS = (
    "database is locked",
    "disk i/o error",
    "database or disk is full",
    "readonly database",
    "connection refused",
    "connection was closed",
    "cannot connect",
)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    text = str(exc).lower()
    return any(word in text for word in _UNAVAILABLE_WORDS)
