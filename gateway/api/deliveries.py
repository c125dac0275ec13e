"""Per-announcement views: the preview before approval and the deliveries after."""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel

from channels.registry import channel_classes
from channels.voice.adapter import call_seconds
from gateway.api import models
from gateway.api.announcements import TAGS, public_url
from gateway.api.routing import ApiRoutes, path_id
from gateway.appkeys import BALANCES, CONFIG, ENGINE, RENDERER, running_channels
from gateway.auth import Principal
from gateway.codes import new_code
from gateway.db.engine import reading
from gateway.db.schema import agencies, deliveries, subscribers
from gateway.domain import Role
from gateway.outbox.accounts import agency_accounts
from gateway.outbox.content import content_for, languages_of
from gateway.outbox.fanout import count_audience
from gateway.pricing import Tariff, billed_minutes
from gateway.renditions import TemplateProblem
from gateway.store.announcements import AnnouncementRow, get_announcement

routes = ApiRoutes()

NO_ACCOUNT = "none of this channel's accounts posts for this agency ([social] account_agencies)"


class RenditionPreview(BaseModel):
    channel: str
    language: str
    text: str | None
    characters: int
    encoding: str | None
    segments: int
    fits: bool
    recipients: int
    estimated_cost: Decimal
    # Voice: how long one call reading the message once lasts, which the cost is billed by.
    call_seconds: int | None = None
    missing_facts: list[str]
    problems: list[str]
    replacements: list[str]


class ProviderBalance(BaseModel):
    """What is left on a paying channel's provider account, beside what the announcement
    would cost on it. ``enough`` is None when the provider states another currency than the
    estimate's. Channels paid from one account (SMS and voice calls on Africa's Talking) share
    one entry: ``channel`` is the one asked, ``channels`` all whose cost it adds up."""

    channel: str
    channels: list[str] = []
    currency: str | None
    amount: Decimal
    estimated_cost: Decimal
    enough: bool | None


class Preview(BaseModel):
    announcement_id: int
    currency: str
    renditions: list[RenditionPreview]
    recipients: int
    sms_segments: int
    estimated_cost: Decimal
    problems: list[str]
    balances: list[ProviderBalance] = []


async def build_preview(request: web.Request, row: AnnouncementRow) -> Preview:
    """Renditions per channel × language with recipients, segments and cost.

    Recipients come from one grouped query (channel × language × country), not a loop over
    subscribers, so a preview of a million-strong audience costs one aggregate.
    """
    app = request.app
    config = app[CONFIG]
    renderer = app[RENDERER]
    classes = channel_classes()
    v = row.values
    configured = running_channels(app)
    async with reading(app[ENGINE]) as conn:
        audience = await count_audience(
            conn,
            agency_id=v["agency_id"],
            channels=v["channels"],
            areas=v["areas"],
            topics=v["topics"],
        )
        accounts = await agency_accounts(conn, configured, config, v["agency_id"])
    langs = languages_of(v)
    # Subscribers whose language the announcement lacks get the main language.
    recipients: dict[tuple[str, str], dict[tuple[str | None, str | None], int]] = defaultdict(
        lambda: defaultdict(int)
    )
    for (channel, lang, country, network), n in audience.items():
        recipients[(channel, lang if lang in langs else v["language"])][(country, network)] += n
    pricing = config.pricing
    tariff = Tariff.from_config(pricing)
    call_tariff = Tariff.for_calls(pricing)
    voice = configured.get("voice")
    out: list[RenditionPreview] = []
    problems: list[str] = []
    # Social channels with accounts, none of them this agency's: it would post nowhere.
    unposted = {c for c in v["channels"] if c in accounts and not accounts[c]}
    for channel in v["channels"]:
        cls = classes.get(channel)
        for language in langs:
            per_country = recipients.get((channel, language), {})
            count = sum(per_country.values())
            if cls is None:
                problems.append(f"{channel}: this gateway has no such channel yet")
                out.append(
                    RenditionPreview(
                        channel=channel,
                        language=language,
                        text=None,
                        characters=0,
                        encoding=None,
                        segments=0,
                        fits=False,
                        recipients=count,
                        estimated_cost=Decimal(0),
                        missing_facts=[],
                        problems=["channel not available"],
                        replacements=[],
                    )
                )
                continue
            content = content_for(
                v,
                language=language,
                agency_name=row.agency_name,
                public_url=public_url(request, v["verification_code"]),
            )
            try:
                rendition = renderer.render(cls, content, keep_gsm7=v["keep_gsm7"])
            except TemplateProblem as exc:
                problems.append(f"{channel}/{language}: {exc}")
                out.append(
                    RenditionPreview(
                        channel=channel,
                        language=language,
                        text=None,
                        characters=0,
                        encoding=None,
                        segments=0,
                        fits=False,
                        recipients=count,
                        estimated_cost=Decimal(0),
                        missing_facts=[],
                        problems=[str(exc)],
                        replacements=[],
                    )
                )
                continue
            cost = Decimal(0)
            seconds: int | None = None
            if channel == "sms":
                for (country, network), n in per_country.items():
                    cost += tariff.price(country, network) * rendition.segments * n
            elif channel == "voice":
                seconds = math.ceil(await call_seconds(voice, rendition.text, language))
                minutes = billed_minutes(seconds, pricing.voice_billing_s)
                for (country, network), n in per_country.items():
                    cost += call_tariff.price(country, network) * minutes * n
            # A post goes out in the main language only.
            unposted_here = [NO_ACCOUNT] if channel in unposted and language == langs[0] else []
            out.append(
                RenditionPreview(
                    channel=channel,
                    language=language,
                    text=rendition.text,
                    characters=rendition.characters,
                    encoding=rendition.encoding,
                    segments=rendition.segments,
                    fits=rendition.fits,
                    recipients=count,
                    estimated_cost=cost,
                    call_seconds=seconds,
                    missing_facts=list(rendition.missing_facts),
                    problems=[*rendition.problems, *unposted_here],
                    replacements=[
                        f"{r.original!r}->{r.replacement!r}" for r in rendition.replacements
                    ],
                )
            )
            problems.extend(f"{channel}/{language}: {p}" for p in out[-1].problems)
    balances = await _balances(request, out, pricing.currency)
    problems.extend(_short(b, out, pricing.currency) for b in balances if b.enough is False)
    return Preview(
        announcement_id=v["id"],
        currency=pricing.currency,
        renditions=out,
        recipients=sum(r.recipients for r in out),
        sms_segments=sum(r.segments * r.recipients for r in out if r.channel == "sms"),
        estimated_cost=sum((r.estimated_cost for r in out), Decimal(0)),
        problems=problems,
        balances=balances,
    )


async def _balances(
    request: web.Request, renditions: list[RenditionPreview], currency: str
) -> list[ProviderBalance]:
    """The provider balance of each account the announcement would cost something on."""
    balances = request.app.get(BALANCES)
    if balances is None:
        return []
    # account -> channel -> cost: SMS and voice calls on one account add up.
    costs: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in renditions:
        if r.estimated_cost > 0:
            costs[balances.account_of(r.channel)][r.channel] += r.estimated_cost
    out: list[ProviderBalance] = []
    for account, per_channel in costs.items():
        known = await balances.of_account(account)
        if known is None:
            continue
        channel, balance = known
        cost = sum(per_channel.values(), Decimal(0))
        comparable = balance.currency is None or balance.currency == currency.upper()
        out.append(
            ProviderBalance(
                channel=channel,
                channels=list(per_channel),
                currency=balance.currency,
                amount=balance.amount,
                estimated_cost=cost,
                enough=balance.amount >= cost if comparable else None,
            )
        )
    return out


def _short(balance: ProviderBalance, renditions: list[RenditionPreview], currency: str) -> str:
    names = "+".join(balance.channels)
    shortfall = (
        f"{names}: the estimated cost ({currency} {balance.estimated_cost}) is more than the "
        f"provider balance left ({currency} {balance.amount})"
    )
    if len(balance.channels) > 1:
        share = int(balance.amount / balance.estimated_cost * 100)
        return (
            f"{shortfall}: about {share}% of it would go out before the channels wait for a top-up"
        )
    recipients = sum(r.recipients for r in renditions if r.channel == balance.channel)
    reached = int(balance.amount / balance.estimated_cost * recipients)
    return (
        f"{shortfall}: about {reached:,} of {recipients:,} recipients would get it before the "
        "channel waits for a top-up"
    )


@routes.get(
    "/announcements/{id}/preview",
    summary="Renditions per channel and language, recipients, SMS segments and estimated cost",
    response=Preview,
    tags=TAGS,
)
async def preview(request: web.Request, principal: Principal) -> Preview:
    async with reading(request.app[ENGINE]) as conn:
        row = await get_announcement(conn, path_id(request), agency_id=principal.agency_id)
    return await build_preview(request, row)


async def preview_unsaved(
    request: web.Request,
    principal: Principal,
    body: models.AnnouncementIn,
    *,
    announcement_id: int = 0,
    verification_code: str | None = None,
) -> Preview:
    """The preview of what ``body`` would be, without storing anything.

    A new announcement has no verification code yet: the renditions carry a freshly drawn
    one (same length and alphabet, so the characters and segments are what they will be);
    an edited draft passes its own code and id (``announcement_id`` 0 means not saved yet).
    """
    async with reading(request.app[ENGINE]) as conn:
        slug, name = (
            await conn.execute(
                sa.select(agencies.c.slug, agencies.c.name).where(
                    agencies.c.id == principal.agency_id
                )
            )
        ).one()
    values = body.model_dump(mode="json", exclude={"recurrence"})
    values.update(
        id=announcement_id,
        agency_id=principal.agency_id,
        verification_code=verification_code or new_code(),
    )
    row = AnnouncementRow(values=values, agency_slug=str(slug), agency_name=str(name))
    return await build_preview(request, row)


@routes.post(
    "/announcements/preview",
    summary="Preview an announcement without saving it: renditions per channel and language, "
    "recipients, SMS segments and estimated cost (the verification code shown is a sample)",
    roles=[Role.AUTHOR],
    body=models.AnnouncementIn,
    response=Preview,
    tags=TAGS,
)
async def preview_draft(
    request: web.Request, principal: Principal, body: models.AnnouncementIn
) -> Preview:
    return await preview_unsaved(request, principal, body)


@routes.get(
    "/announcements/{id}/deliveries",
    summary="Every delivery of an announcement, paged, phone numbers masked",
    query=models.DeliveryQuery,
    response=models.DeliveryList,
    tags=TAGS,
)
async def list_deliveries(
    request: web.Request, principal: Principal, query: models.DeliveryQuery
) -> models.DeliveryList:
    announcement_id = path_id(request)
    async with reading(request.app[ENGINE]) as conn:
        await get_announcement(conn, announcement_id, agency_id=principal.agency_id)
        statement = (
            sa.select(deliveries, subscribers.c.phone_masked)
            .select_from(
                deliveries.outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            )
            .where(deliveries.c.announcement_id == announcement_id)
            .order_by(deliveries.c.id)
            .limit(query.limit)
        )
        if query.after_id is not None:
            statement = statement.where(deliveries.c.id > query.after_id)
        if query.state is not None:
            statement = statement.where(deliveries.c.state == query.state.value)
        if query.channel is not None:
            statement = statement.where(deliveries.c.channel == query.channel)
        rows = (await conn.execute(statement)).mappings().all()
    items = [
        models.DeliveryOut(
            id=r["id"],
            channel=r["channel"],
            phone=r["phone_masked"],
            account=r["account"],
            language=r["language"],
            state=r["state"],
            attempts=r["attempts"],
            provider_message_id=r["provider_message_id"],
            error_kind=r["error_kind"],
            error_reason=r["error_reason"],
            segments=r["segments"],
            cost=r["cost"],
            created_at=r["created_at"],
            sent_at=r["sent_at"],
            finished_at=r["finished_at"],
        )
        for r in rows
    ]
    return models.DeliveryList(
        items=items, next_after_id=items[-1].id if len(items) == query.limit else None
    )
