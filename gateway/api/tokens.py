"""``/api/v1/tokens``: an agency's admin issues, lists and revokes API tokens.

A token is shown once, in the answer that issues it; afterwards only its id, role, name,
visible prefix and times are shown. Revoking takes effect on the next request (authentication
reads the token row every time). Every issue and revocation is in the audit log, without the
token. An admin cannot revoke the token they are using (that would lock the agency out by
accident); another admin's token can.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel, Field

from gateway.api.errors import ApiError, not_found
from gateway.api.routing import ApiRoutes, path_id
from gateway.appkeys import CLOCK, ENGINE
from gateway.auth import Principal, issue_token
from gateway.db.engine import reading
from gateway.db.schema import api_tokens
from gateway.domain import Role
from gateway.store.audit import record

routes = ApiRoutes()
TAGS = ("tokens",)


class TokenIn(BaseModel):
    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    role: Role
    name: str = Field(min_length=1, max_length=100, description="who or what uses it")


class TokenOut(BaseModel):
    id: int
    role: Role
    name: str
    prefix: str = Field(description="the token's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None = Field(description="to the minute")
    revoked_at: datetime | None


class IssuedTokenOut(TokenOut):
    token: str = Field(description="shown this once; store it now")


class TokenList(BaseModel):
    items: list[TokenOut]


def _out(row: Any) -> TokenOut:
    return TokenOut(
        id=row.id,
        role=Role(row.role),
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


_COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.role,
    api_tokens.c.name,
    api_tokens.c.prefix,
    api_tokens.c.created_at,
    api_tokens.c.last_used_at,
    api_tokens.c.revoked_at,
)


@routes.get(
    "/tokens",
    summary="The agency's API tokens (never the tokens themselves)",
    roles=[Role.ADMIN],
    response=TokenList,
    tags=TAGS,
)
async def list_tokens(request: web.Request, principal: Principal) -> TokenList:
    async with reading(request.app[ENGINE]) as conn:
        rows = await conn.execute(
            sa.select(*_COLUMNS)
            .where(api_tokens.c.agency_id == principal.agency_id)
            .order_by(api_tokens.c.id)
        )
        return TokenList(items=[_out(row) for row in rows])


@routes.post(
    "/tokens",
    summary="Issue a token for a role in this agency; the token is shown only in this answer",
    roles=[Role.ADMIN],
    body=TokenIn,
    response=IssuedTokenOut,
    status=201,
    tags=TAGS,
)
async def create_token(request: web.Request, principal: Principal, body: TokenIn) -> IssuedTokenOut:
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        issued = await issue_token(
            conn, agency_id=principal.agency_id, role=body.role, name=body.name, now=now
        )
        await record(
            conn,
            principal=principal,
            action="token.issue",
            subject=("token", issued.id),
            now=now,
            after={"role": body.role.value, "name": body.name, "prefix": issued.prefix},
        )
    return IssuedTokenOut(
        id=issued.id,
        role=body.role,
        name=body.name,
        prefix=issued.prefix,
        created_at=now,
        last_used_at=None,
        revoked_at=None,
        token=issued.token,
    )


@routes.delete(
    "/tokens/{id}",
    summary="Revoke a token at once (idempotent)",
    roles=[Role.ADMIN],
    response=TokenOut,
    tags=TAGS,
)
async def revoke_token(request: web.Request, principal: Principal) -> TokenOut:
    token_id = path_id(request)
    if token_id == principal.token_id:
        raise ApiError(
            409, "conflict", "this is the token you are using: revoke it with another admin's", "id"
        )
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        revoked = await conn.execute(
            sa.update(api_tokens)
            .where(
                api_tokens.c.id == token_id,
                api_tokens.c.agency_id == principal.agency_id,
                api_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        row = (
            await conn.execute(
                sa.select(*_COLUMNS).where(
                    api_tokens.c.id == token_id, api_tokens.c.agency_id == principal.agency_id
                )
            )
        ).first()
        if row is None:
            raise not_found(f"token {token_id}", "id")
        if revoked.rowcount:
            await record(
                conn,
                principal=principal,
                action="token.revoke",
                subject=("token", token_id),
                now=now,
                before={"role": row.role, "name": row.name, "prefix": row.prefix},
            )
    return _out(row)
