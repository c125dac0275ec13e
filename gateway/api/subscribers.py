"""``/api/v1/subscribers``: add, import CSV, list (masked), erase."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Sequence
from datetime import datetime

from aiohttp import web
from pydantic import ValidationError

from gateway.api import models
from gateway.api.errors import ApiError, conflict, from_validation_error, not_found, read_body
from gateway.api.routing import ApiRoutes, path_id
from gateway.appkeys import CLOCK, CONFIG, ENGINE, VAULT
from gateway.auth import Principal
from gateway.db.engine import reading
from gateway.domain import Role
from gateway.personal import InvalidPhoneNumber, normalise
from gateway.store import subscribers as store
from gateway.store.audit import record

routes = ApiRoutes()
TAGS = ("subscribers",)
IMPORT_LIMIT_ROWS = 1_000_000
IMPORT_ERRORS_SHOWN = 1_000
# A list in one cell: "banjir;kebakaran", "sms|voice", or quoted "sms, voice".
_LIST_SEPARATORS = re.compile(r"\s*[;|,]\s*")
CSV_COLUMNS = ("phone", "language", "area_code", "topics", "channels", "telegram_chat_id")


def _to_out(person: dict[str, object]) -> models.SubscriberOut:
    return models.SubscriberOut(
        id=person["id"],
        phone=person["phone_masked"],
        language=person["language"],
        area_code=person["area_code"],
        topics=person["topics"],
        channels=person["channels"],
        opted_out=person["opted_out"],
        created_at=person["created_at"],
        erased=person["erased_at"] is not None,
    )


def _person(body: models.SubscriberIn, *, region: str, consent_at: datetime) -> store.NewSubscriber:
    try:
        phone = normalise(body.phone, region)
    except InvalidPhoneNumber as exc:
        raise ApiError(422, "invalid", f"phone: {exc}", "phone") from None
    return store.NewSubscriber(
        phone=phone,
        language=body.language,
        area_code=body.area_code,
        topics=body.topics,
        channels=list(body.channels),
        telegram_chat_id=body.telegram_chat_id,
        consent_channel=body.consent.channel,
        consent_text=body.consent.text,
        consent_at=body.consent.at or consent_at,
    )


@routes.post(
    "/subscribers",
    summary="Add one subscriber (with their consent record)",
    roles=[Role.OPERATOR],
    body=models.SubscriberIn,
    response=models.SubscriberOut,
    status=201,
    tags=TAGS,
)
async def create_subscriber(
    request: web.Request, principal: Principal, body: models.SubscriberIn
) -> models.SubscriberOut:
    app = request.app
    now = app[CLOCK].now()
    person = _person(body, region=app[CONFIG].phone.default_region, consent_at=now)
    async with app[ENGINE].begin() as conn:
        inserted = await store.insert_subscribers(
            conn, agency_id=principal.agency_id, people=[person], vault=app[VAULT], now=now
        )
        if not inserted:
            raise conflict("this phone number is already subscribed", field="phone")
        (subscriber_id,) = inserted.values()
        await record(
            conn,
            principal=principal,
            action="subscriber.create",
            subject=("subscriber", subscriber_id),
            # No number, not even masked: the audit log outlives an erasure.
            after={"channels": person.channels},
            now=now,
        )
        (created,) = await store.list_subscribers(
            conn, agency_id=principal.agency_id, limit=1, after_id=None, ids=[subscriber_id]
        )
    return _to_out(created)


def _parse_csv(
    text: str, *, region: str, now: datetime
) -> tuple[int, list[store.NewSubscriber], list[models.ImportRowError]]:
    """Parse every row; returns (rows received, valid people, per-row errors)."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if "phone" not in header:
        raise ApiError(422, "invalid", "the CSV header must name a 'phone' column", "phone")
    if unknown:
        raise ApiError(
            422,
            "invalid",
            f"unknown CSV column {unknown[0]!r}; known: {', '.join(CSV_COLUMNS)}",
            unknown[0],
        )
    people: list[store.NewSubscriber] = []
    errors: list[models.ImportRowError] = []
    received = 0
    for received, row in enumerate(reader, start=1):
        if received > IMPORT_LIMIT_ROWS:
            raise ApiError(413, "too_large", f"at most {IMPORT_LIMIT_ROWS} rows per import")
        line = reader.line_num
        if None in row:
            errors.append(models.ImportRowError(row=line, field="*", message="too many columns"))
            continue
        fields: dict[str, object] = {k: v for k, v in row.items() if v not in (None, "")}
        for key in ("topics", "channels"):
            if key in fields:
                parts = _LIST_SEPARATORS.split(str(fields[key]).strip())
                fields[key] = [part for part in parts if part]
        fields["consent"] = {"channel": "import"}
        try:
            body = models.SubscriberIn.model_validate(fields)
            people.append(_person(body, region=region, consent_at=now))
        except ValidationError as exc:
            problem = from_validation_error(exc)
            errors.append(
                models.ImportRowError(row=line, field=problem.field or "*", message=problem.message)
            )
        except ApiError as exc:
            errors.append(
                models.ImportRowError(row=line, field=exc.field or "*", message=exc.message)
            )
    return received, people, errors


@routes.post(
    "/subscribers/import",
    summary="Import subscribers from CSV (text/csv body); valid rows are added, each bad row "
    "is reported with its line number",
    roles=[Role.OPERATOR],
    response=models.ImportReport,
    content_type="text/csv",
    tags=TAGS,
)
async def import_subscribers(request: web.Request, principal: Principal) -> models.ImportReport:
    app = request.app
    limit = app[CONFIG].http.max_body_bytes
    raw = await read_body(
        request, limit=limit, too_large=f"CSV larger than {limit} bytes; split the file"
    )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_csv", "the CSV must be UTF-8 encoded") from None
    now = app[CLOCK].now()
    # Validating a phone number costs tens of microseconds; 100,000 of them would stall the
    # event loop for seconds, so parsing runs in a thread.
    received, people, errors = await asyncio.to_thread(
        _parse_csv, text, region=app[CONFIG].phone.default_region, now=now
    )
    async with app[ENGINE].begin() as conn:
        inserted = await store.insert_subscribers(
            conn, agency_id=principal.agency_id, people=people, vault=app[VAULT], now=now
        )
        await record(
            conn,
            principal=principal,
            action="subscriber.import",
            subject=("subscriber", None),
            after={"received": received, "imported": len(inserted), "errors": len(errors)},
            now=now,
        )
    return models.ImportReport(
        received=received,
        imported=len(inserted),
        duplicates=len(people) - len(inserted),
        errors=errors[:IMPORT_ERRORS_SHOWN],
        errors_truncated=len(errors) > IMPORT_ERRORS_SHOWN,
    )


async def _list(
    request: web.Request,
    principal: Principal,
    *,
    limit: int,
    after_id: int | None,
    area_code: str | None = None,
    phone_indexes: Sequence[str] | None = None,
) -> models.SubscriberList:
    async with reading(request.app[ENGINE]) as conn:
        people = await store.list_subscribers(
            conn,
            agency_id=principal.agency_id,
            limit=limit,
            after_id=after_id,
            area_code=area_code,
            phone_indexes=phone_indexes,
        )
    items = [_to_out(p) for p in people]
    return models.SubscriberList(
        items=items, next_after_id=items[-1].id if len(items) == limit else None
    )


@routes.get(
    "/subscribers",
    summary="List subscribers with masked numbers",
    roles=[Role.OPERATOR],
    query=models.SubscriberQuery,
    response=models.SubscriberList,
    tags=TAGS,
)
async def list_subscribers(
    request: web.Request, principal: Principal, query: models.SubscriberQuery
) -> models.SubscriberList:
    return await _list(
        request, principal, limit=query.limit, after_id=query.after_id, area_code=query.area_code
    )


# A number in a URL ends up in access logs, proxy logs and browser history, so the search
# takes it in the body.
@routes.post(
    "/subscribers/search",
    summary="Find a subscriber by full phone number (exact match via the blind index)",
    roles=[Role.OPERATOR],
    body=models.SubscriberSearch,
    response=models.SubscriberList,
    tags=TAGS,
)
async def search_subscribers(
    request: web.Request, principal: Principal, body: models.SubscriberSearch
) -> models.SubscriberList:
    app = request.app
    try:
        phone = normalise(body.phone, app[CONFIG].phone.default_region)
    except InvalidPhoneNumber as exc:
        raise ApiError(422, "invalid", f"phone: {exc}", "phone") from None
    return await _list(
        request,
        principal,
        limit=body.limit,
        after_id=None,
        phone_indexes=app[VAULT].blind_indexes(phone),
    )


# Erasure is for an administrator: it cannot be undone. A second call on an erased subscriber
# answers 204 again (DELETE is idempotent, so a retried request after a lost answer is not an
# error) and records no second audit event.
@routes.delete(
    "/subscribers/{id}",
    summary="Erase a subscriber's personal data (number, chat id, their messages' texts); "
    "cancels what is still queued for them and keeps anonymous counts. Idempotent: erasing "
    "again answers 204",
    roles=[Role.ADMIN],
    status=204,
    tags=TAGS,
)
async def erase_subscriber(request: web.Request, principal: Principal) -> None:
    subscriber_id = path_id(request)
    app = request.app
    now = app[CLOCK].now()
    async with app[ENGINE].begin() as conn:
        erased = await store.erase(
            conn,
            agency_id=principal.agency_id,
            subscriber_id=subscriber_id,
            vault=app[VAULT],
            now=now,
        )
        if erased is None:
            raise not_found(f"subscriber {subscriber_id}", field="id")
        if erased.first:
            # Counts only: the audit log is append-only, so it must never hold the person.
            await record(
                conn,
                principal=principal,
                action="subscriber.erase",
                subject=("subscriber", subscriber_id),
                after={
                    "cancelled": erased.cancelled,
                    "deliveries_unlinked": erased.deliveries_unlinked,
                    "messages_blanked": erased.messages_blanked,
                    "threads_closed": erased.threads_closed,
                },
                now=now,
            )
