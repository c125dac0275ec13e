"""Telling 'the database is unavailable' apart from bugs, for a clear 503.

``unavailable_reason`` names what the storage cannot do right now, in words a client can act
on; ``is_unavailable`` is whether there is such a reason. The kinds, from the driver's own
error code where it gives one (SQLite's ``sqlite_errorname``, PostgreSQL's SQLSTATE) and from
the message otherwise:

- read-only: the file, the filesystem or the database refuses writes (reads still work);
- full: the disk, or SQLite's ``max_page_count``, has no room for the write;
- busy: another writer holds the lock past the busy timeout;
- unreachable: no connection, a dropped connection, a server shutting down.
"""

from __future__ import annotations

from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError

READ_ONLY = "storage is read-only: nothing was saved; reading still works"
FULL = "storage is full: nothing was saved; try again once space is freed"
BUSY = "storage is busy: nothing was saved; try again shortly"
UNREACHABLE = "storage is unavailable; try again shortly"

_SQLITE_CODES = {
    "SQLITE_READONLY": READ_ONLY,
    "SQLITE_FULL": FULL,
    "SQLITE_BUSY": BUSY,
    "SQLITE_LOCKED": BUSY,
    "SQLITE_IOERR": UNREACHABLE,
    "SQLITE_CANTOPEN": UNREACHABLE,
}
# SQLSTATE: class 08 connection exception, 53 insufficient resources, 57P admin shutdown.
_POSTGRES_CODES = {
    "25006": READ_ONLY,  # read_only_sql_transaction (default_transaction_read_only, a standby)
    "53100": FULL,  # disk_full
    "55P03": BUSY,  # lock_not_available
    "40P01": BUSY,  # deadlock_detected
}
_POSTGRES_CLASSES = {"08": UNREACHABLE, "53": FULL, "57P": UNREACHABLE}
_WORDS = (
    ("readonly database", READ_ONLY),
    ("read-only transaction", READ_ONLY),
    ("read-only file system", READ_ONLY),
    ("database or disk is full", FULL),
    ("no space left on device", FULL),
    ("database is locked", BUSY),
    ("disk i/o error", UNREACHABLE),
    ("connection refused", UNREACHABLE),
    ("connection was closed", UNREACHABLE),
    ("cannot connect", UNREACHABLE),
)


def unavailable_reason(exc: BaseException) -> str | None:
    """What the storage cannot do right now, for the client; None when ``exc`` is not that."""
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    by_code = _reason_from_code(original)
    if by_code is not None:
        return by_code
    text = str(exc).lower()
    for words, reason in _WORDS:
        if words in text:
            return reason
    if isinstance(exc, (ConnectionError, TimeoutError, OperationalError)):
        return UNREACHABLE
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return UNREACHABLE
    return None


def is_unavailable(exc: BaseException) -> bool:
    return unavailable_reason(exc) is not None


def _reason_from_code(error: BaseException | None) -> str | None:
    # "SQLITE_READONLY_DBMOVED", "SQLITE_IOERR_WRITE": the extended name starts with its family.
    name = getattr(error, "sqlite_errorname", None)
    if isinstance(name, str):
        for family, reason in _SQLITE_CODES.items():
            if name == family or name.startswith(family + "_"):
                return reason
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(state, str):
        if state in _POSTGRES_CODES:
            return _POSTGRES_CODES[state]
        for prefix, reason in _POSTGRES_CLASSES.items():
            if state.startswith(prefix):
                return reason
    return None


def invalidate_stale_connection(context: ExceptionContext) -> None:
    """A ``handle_error`` listener: drop connections that cannot write any more.

    SQLite opens a file it may not write read-only, and such a connection stays read-only
    after the file is writable again; an I/O error can leave a connection unusable too.
    Treating both as a disconnect makes the pool open fresh connections, so the gateway
    recovers on its own once the storage does.
    """
    name = getattr(context.original_exception, "sqlite_errorname", None)
    if isinstance(name, str) and name.startswith(("SQLITE_READONLY", "SQLITE_IOERR")):
        context.is_disconnect = True
