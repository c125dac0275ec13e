"""``/api/v1/agency``: the settings of the caller's agency.

Any role reads them; only an admin changes them, and every change is in the audit log with
its before and after. ``budget_limit`` is the monthly spending ceiling approvals are checked
against (409 ``over_budget``; emergencies pass); ``emergency_single_approval`` lets the one
person who wrote an emergency approve it too, when nobody else can be reached in time — each
such approval is flagged ``single_approval`` in the audit log.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.api.errors import not_found, unprocessable
from gateway.api.routing import ApiRoutes
from gateway.appkeys import CLOCK, CONFIG, ENGINE, RENDERER, running_channels
from gateway.auth import Principal
from gateway.db.engine import reading
from gateway.db.schema import agencies
from gateway.domain import Role
from gateway.outbox.accounts import agency_accounts
from gateway.store.audit import record

routes = ApiRoutes()
TAGS = ("agency",)
_FIELDS = ("name", "timezone", "default_language", "budget_limit", "emergency_single_approval")


class AgencyOut(BaseModel):
    id: int
    slug: str
    name: str
    timezone: str
    default_language: str
    budget_limit: Decimal | None = Field(description="monthly ceiling; null: none")
    emergency_single_approval: bool
    social_accounts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per social channel, the accounts your announcements are posted to "
        "(the gateway's [social] account_agencies); read-only",
    )


class AgencyPatch(BaseModel):
    """Only the fields given change; ``budget_limit: null`` removes the ceiling."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = Field(default=None, max_length=64, examples=["Asia/Makassar"])
    default_language: str | None = Field(default=None, min_length=2, max_length=8)
    budget_limit: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=4)
    emergency_single_approval: bool | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from scheduler.validation import FieldError, zone

        try:
            return zone(value).key
        except FieldError as exc:
            raise ValueError(exc.reason) from None


def _out(row: Any) -> AgencyOut:
    return AgencyOut(
        id=row.id,
        slug=row.slug,
        name=row.name,
        timezone=row.timezone,
        default_language=row.default_language,
        budget_limit=None if row.budget_limit is None else Decimal(row.budget_limit),
        emergency_single_approval=bool(row.emergency_single_approval),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def _read(conn: Any, agency_id: int) -> Any:
    row = (await conn.execute(sa.select(agencies).where(agencies.c.id == agency_id))).first()
    if row is None:
        raise not_found("agency")
    return row


@routes.get("/agency", summary="Your agency's settings", response=AgencyOut, tags=TAGS)
async def get_agency(request: web.Request, principal: Principal) -> AgencyOut:
    async with reading(request.app[ENGINE]) as conn:
        out = _out(await _read(conn, principal.agency_id))
        return await _with_accounts(request, conn, out)


async def _with_accounts(request: web.Request, conn: Any, out: AgencyOut) -> AgencyOut:
    channels = running_channels(request.app)
    accounts = await agency_accounts(conn, channels, request.app[CONFIG], out.id)
    return out.model_copy(update={"social_accounts": accounts})


@routes.route(
    "PATCH",
    "/agency",
    summary="Change your agency's settings (budget, time zone, language, emergency approval)",
    roles=[Role.ADMIN],
    body=AgencyPatch,
    response=AgencyOut,
    tags=TAGS,
)
async def change_agency(request: web.Request, principal: Principal, body: AgencyPatch) -> AgencyOut:
    given = body.model_dump(exclude_unset=True)
    for name in ("name", "timezone", "default_language", "emergency_single_approval"):
        if name in given and given[name] is None:
            raise unprocessable(f"{name}: may not be null", name)
    language = given.get("default_language")
    if language is not None and language not in request.app[RENDERER].languages():
        known = ", ".join(request.app[RENDERER].languages())
        raise unprocessable(
            f"default_language: no templates for {language!r} ({known})", "default_language"
        )
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        before = _out(await _read(conn, principal.agency_id))
        if given:
            await conn.execute(
                sa.update(agencies).where(agencies.c.id == principal.agency_id).values(**given)
            )
        after = await _with_accounts(request, conn, _out(await _read(conn, principal.agency_id)))
        changed = {
            name: (getattr(before, name), getattr(after, name))
            for name in _FIELDS
            if getattr(before, name) != getattr(after, name)
        }
        if changed:
            await record(
                conn,
                principal=principal,
                action="agency.settings",
                subject=("agency", principal.agency_id),
                before={
                    name: str(old) if old is not None else None
                    for name, (old, _) in changed.items()
                },
                after={
                    name: str(new) if new is not None else None
                    for name, (_, new) in changed.items()
                },
                now=now,
            )
    return after
