"""API tokens: random, shown once, stored as SHA-256, scoped to one agency and one role.

A token is 256 random bits, so a fast hash is enough: a memory-hard hash protects secrets
people choose (passwords), and nobody chooses these. Looking a token up by its hash keeps
authentication to one indexed read.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.api.errors import ApiError
from gateway.appkeys import CLOCK, ENGINE
from gateway.db.engine import reading
from gateway.db.schema import api_tokens
from gateway.domain import Role

log = logging.getLogger("warta.auth")
TOKEN_PREFIX = "wrt_"  # noqa: S105 - a visible marker, not a secret
# Writing last_used_at on every request would make every read a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    agency_id: int
    role: Role
    name: str


PRINCIPAL = web.RequestKey("principal", Principal)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: int
    token: str  # shown once; never stored
    prefix: str

    def __repr__(self) -> str:
        return f"IssuedToken(id={self.id}, prefix={self.prefix!r})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    conn: AsyncConnection, *, agency_id: int, role: Role, name: str, now: datetime
) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    prefix = token[: len(TOKEN_PREFIX) + 6]
    token_id = await conn.scalar(
        sa.insert(api_tokens)
        .values(
            agency_id=agency_id,
            role=role.value,
            name=name,
            prefix=prefix,
            token_hash=hash_token(token),
            created_at=now,
        )
        .returning(api_tokens.c.id)
    )
    assert token_id is not None
    return IssuedToken(id=token_id, token=token, prefix=prefix)


async def authenticate(engine: AsyncEngine, token: str, now: datetime) -> Principal | None:
    async with reading(engine) as conn:
        row = (
            await conn.execute(
                sa.select(
                    api_tokens.c.id,
                    api_tokens.c.agency_id,
                    api_tokens.c.role,
                    api_tokens.c.name,
                    api_tokens.c.last_used_at,
                ).where(
                    api_tokens.c.token_hash == hash_token(token), api_tokens.c.revoked_at.is_(None)
                )
            )
        ).first()
    if row is None:
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        # Best effort: a read must still work while storage refuses writes (read-only, full).
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    sa.update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=now)
                )
        except Exception as exc:
            from gateway.db.errors import is_unavailable

            if not is_unavailable(exc):
                raise
            log.warning("token last use not recorded: %s", type(exc).__name__)
    return Principal(token_id=row.id, agency_id=row.agency_id, role=Role(row.role), name=row.name)


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise ApiError(
            401, "unauthenticated", "an API token is required: Authorization: Bearer <token>"
        )
    return principal


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the principal for a valid bearer token; routes decide whether one is required."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthenticated", "Authorization must be 'Bearer <token>'")
        if len(token) > 200:
            raise ApiError(401, "unauthenticated", "the API token is not valid")
        principal = await authenticate(request.app[ENGINE], token, request.app[CLOCK].now())
        if principal is None:
            raise ApiError(401, "unauthenticated", "the API token is not valid or was revoked")
        request[PRINCIPAL] = principal
    return await handler(request)
