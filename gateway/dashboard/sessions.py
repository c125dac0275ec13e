"""Dashboard sessions as signed cookies, and the CSRF token tied to each session.

Why signed cookies rather than session rows: every Warta process (several share one PostgreSQL)
can check a session with one HMAC and the user row it reads anyway, and no table grows with
every visit. What a row would give, ending one session on the server, is covered by
``users.sessions_valid_after``: logging out ends every session of that user issued until then
(and disabling a user ends them all). A session carries:

- ``n``: 128 random bits, the session id; a new one at every sign-in (no fixation);
- ``u``: the user id (absent for the anonymous session the login form runs in);
- ``i``: when it was issued (the absolute expiry counts from here);
- ``s``: when it was last seen (the idle expiry counts from here; refreshed once a minute).

The cookie is ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` and, when the public URL is https,
``Secure`` with the ``__Host-`` name prefix. The CSRF token of a session is an HMAC of its id
under the same key (a synchronizer token: it changes with the session and is checked with a
constant-time compare on every POST).

The key is derived from ``secrets.blind_index_key`` (HMAC with a label of its own, so the two
uses never share a key); without that secret a random key per process is used and sessions do
not survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta

from aiohttp import web

IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
REFRESH_AFTER = timedelta(minutes=1)
_MAX_COOKIE = 512


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    user_id: int | None
    issued: float
    seen: float

    def __repr__(self) -> str:
        return f"Session(user_id={self.user_id})"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionKeeper:
    """Signs, checks and sets session cookies; one per application."""

    def __init__(self, key: bytes, *, secure: bool) -> None:
        self._key = key
        self.secure = secure
        self.cookie_name = "__Host-warta_session" if secure else "warta_session"

    def __repr__(self) -> str:
        return f"SessionKeeper(secure={self.secure})"

    @classmethod
    def derive(cls, secret: str | None, *, secure: bool) -> SessionKeeper:
        if secret is None:
            return cls(secrets.token_bytes(32), secure=secure)
        key = hmac.new(secret.encode(), b"warta dashboard session v1", hashlib.sha256).digest()
        return cls(key, secure=secure)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def new(self, *, user_id: int | None, now: float) -> Session:
        return Session(nonce=_b64(secrets.token_bytes(16)), user_id=user_id, issued=now, seen=now)

    def encode(self, session: Session) -> str:
        body = {"n": session.nonce, "i": session.issued, "s": session.seen}
        if session.user_id is not None:
            body["u"] = session.user_id
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def decode(self, value: str | None, *, now: float) -> Session | None:
        """The session in ``value`` if its signature is good and it has not expired."""
        if not value or len(value) > _MAX_COOKIE or "." not in value:
            return None
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(
                nonce=str(body["n"]),
                user_id=None if body.get("u") is None else int(body["u"]),
                issued=float(body["i"]),
                seen=float(body["s"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if now - session.issued > ABSOLUTE_TIMEOUT.total_seconds():
            return None
        if now - session.seen > IDLE_TIMEOUT.total_seconds():
            return None
        return session

    def refreshed(self, session: Session, *, now: float) -> Session | None:
        """A copy seen now, when the cookie is worth rewriting; None otherwise."""
        if now - session.seen < REFRESH_AFTER.total_seconds():
            return None
        return replace(session, seen=now)

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._key, b"csrf:" + session.nonce.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def set_cookie(self, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(
            self.cookie_name,
            self.encode(session),
            path="/",
            httponly=True,
            secure=self.secure,
            samesite="Lax",
        )

    def clear_cookie(self, response: web.StreamResponse) -> None:
        response.del_cookie(
            self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="Lax"
        )
