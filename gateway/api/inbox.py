"""``/api/v1/inbox``: what citizens wrote, as threads an operator reads, assigns, answers, closes.

Replies go through the outbox as ``kind='reply'`` deliveries on the channel the citizen last
wrote from, so they are claimed, sent, retried and reported like everything else. On WhatsApp
a reply is free-form text, which WhatsApp takes only within 24 hours of the citizen's last
message (the customer-service window): later, the reply is refused with a 409
``outside_window`` instead of being queued to fail. Another
agency's thread is a 404, never a 403: its existence is not ours to reveal. Every change is
audited with ids and counts only (a reply's text may hold personal data).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from channels.registry import channel_classes
from gateway.api import models
from gateway.api.errors import ApiError, conflict, not_found
from gateway.api.routing import ApiRoutes, path_id
from gateway.appkeys import CLOCK, DISPATCHER, ENGINE
from gateway.auth import Principal
from gateway.db.engine import reading
from gateway.db.schema import agencies
from gateway.domain import DeliveryState, Role
from gateway.outbox.replies import REPLY_PRIORITY
from gateway.store import inbox as store
from gateway.store.audit import record

routes = ApiRoutes()
TAGS = ("inbox",)
# Channels that take free-form replies only this long after the citizen's last message.
SERVICE_WINDOWS = {"whatsapp": timedelta(hours=24)}


def thread_out(row: dict[str, Any]) -> models.InboxThreadOut:
    return models.InboxThreadOut(
        id=row["id"],
        status=row["status"],
        channel=row["channel"],
        subscriber_id=row["subscriber_id"],
        phone=row["phone_masked"],
        assigned_token_id=row["assigned_token_id"],
        announcement_id=row["announcement_id"],
        opened_at=row["opened_at"],
        last_message_at=row["last_message_at"],
        first_response_at=row["first_response_at"],
        response_seconds=row["response_seconds"],
        closed_at=row["closed_at"],
        messages_in=row["messages_in"],
        replies_out=row["replies_out"],
    )


def _message_out(item: dict[str, Any]) -> models.InboxMessageOut:
    outgoing = item["direction"] == "out"
    return models.InboxMessageOut(
        direction=item["direction"],
        id=item["id"],
        channel=item["channel"],
        text=item["body"] if outgoing else item["text"],
        at=item["at"],
        announcement_id=item.get("announcement_id"),
        operator_token_id=item.get("token_id"),
        delivery_id=item.get("delivery_id"),
        state=item.get("state"),
        error_kind=item.get("error_kind"),
        error_reason=item.get("error_reason"),
        sent_at=item.get("sent_at"),
        finished_at=item.get("finished_at"),
    )


@routes.get(
    "/inbox",
    summary="Threads of citizens' messages, newest first (numbers masked)",
    roles=[Role.OPERATOR],
    query=models.InboxQuery,
    response=models.InboxThreadList,
    tags=TAGS,
)
async def list_threads(
    request: web.Request, principal: Principal, query: models.InboxQuery
) -> models.InboxThreadList:
    assigned: int | None = None
    if query.assigned == "me":
        assigned = principal.token_id
    elif query.assigned not in (None, "none"):
        assigned = int(query.assigned)
    async with reading(request.app[ENGINE]) as conn:
        rows = await store.list_threads(
            conn,
            agency_id=principal.agency_id,
            limit=query.limit,
            before_id=query.before_id,
            status=query.status,
            channel=query.channel,
            assigned_token_id=assigned,
            unassigned=query.assigned == "none",
        )
    items = [thread_out(row) for row in rows]
    return models.InboxThreadList(
        items=items, next_before_id=items[-1].id if len(items) == query.limit else None
    )


async def _thread(
    conn: Any, principal: Principal, thread_id: int, **options: Any
) -> dict[str, Any]:
    row = await store.get_thread(
        conn, agency_id=principal.agency_id, thread_id=thread_id, **options
    )
    if row is None:
        raise not_found(f"thread {thread_id}", field="thread_id")
    return row


@routes.get(
    "/inbox/{thread_id}",
    summary="One thread: messages in and replies out, each reply with its delivery state",
    roles=[Role.OPERATOR],
    response=models.InboxThreadDetail,
    tags=TAGS,
)
async def get_thread(request: web.Request, principal: Principal) -> models.InboxThreadDetail:
    thread_id = path_id(request, "thread_id")
    async with reading(request.app[ENGINE]) as conn:
        row = await _thread(conn, principal, thread_id)
        messages = await store.thread_messages(conn, thread_id=thread_id)
    return models.InboxThreadDetail(
        **thread_out(row).model_dump(), messages=[_message_out(m) for m in messages]
    )


@routes.post(
    "/inbox/{thread_id}/assign",
    summary="Assign the thread to an operator token ({} assigns it to yourself; "
    '{"unassign": true} clears it)',
    roles=[Role.OPERATOR],
    body=models.InboxAssignIn,
    response=models.InboxThreadOut,
    tags=TAGS,
)
async def assign(
    request: web.Request, principal: Principal, body: models.InboxAssignIn
) -> models.InboxThreadOut:
    thread_id = path_id(request, "thread_id")
    token_id = None if body.unassign else (body.token_id or principal.token_id)
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        row = await _thread(conn, principal, thread_id, for_update=True)
        if token_id is not None and not await store.operator_token(
            conn, agency_id=principal.agency_id, token_id=token_id
        ):
            raise ApiError(
                422, "invalid", "token_id: not a live operator token of your agency", "token_id"
            )
        if row["assigned_token_id"] != token_id:
            await store.assign(conn, thread_id=thread_id, token_id=token_id)
            await record(
                conn,
                principal=principal,
                action="inbox.assign",
                subject=("inbox_thread", thread_id),
                before={"assigned_token_id": row["assigned_token_id"]},
                after={"assigned_token_id": token_id},
                now=now,
            )
        row = await _thread(conn, principal, thread_id)
    return thread_out(row)


def _check_length(text: str, channel: str) -> None:
    adapter = channel_classes().get(channel)
    if adapter is None:
        return
    length = adapter.text_length(text)
    most = adapter.reply_max_length or adapter.max_length
    if length > most:
        raise ApiError(
            422, "invalid", f"text: {length} characters; {channel} takes at most {most}", "text"
        )


async def _check_window(conn: Any, thread: dict[str, Any], now: datetime) -> None:
    channel = thread["channel"]
    window = SERVICE_WINDOWS.get(channel)
    if window is None:
        return
    last = await store.last_inbound_at(
        conn, thread_id=thread["id"], subscriber_id=thread["subscriber_id"], channel=channel
    )
    if last is None or now - last > window:
        raise ApiError(
            409,
            "outside_window",
            f"the citizen last wrote on {channel} more than {window.total_seconds() / 3600:g} "
            f"hours ago; {channel} takes a free-form reply only within that window",
            "channel",
        )


@routes.post(
    "/inbox/{thread_id}/reply",
    summary="Answer the citizen on the channel they wrote from, through the outbox "
    "(409 when they opted out of that channel, or on WhatsApp more than 24 hours after "
    "their last message)",
    roles=[Role.OPERATOR],
    body=models.InboxReplyIn,
    response=models.InboxReplyOut,
    status=202,
    tags=TAGS,
)
async def reply(
    request: web.Request, principal: Principal, body: models.InboxReplyIn
) -> models.InboxReplyOut:
    thread_id = path_id(request, "thread_id")
    app = request.app
    now = app[CLOCK].now()
    async with app[ENGINE].begin() as conn:
        row = await _thread(conn, principal, thread_id, for_update=True)
        channel = row["channel"]
        _check_length(body.text, channel)
        if row["subscriber_id"] is not None and await store.opted_out(
            conn, subscriber_id=row["subscriber_id"], channel=channel
        ):
            raise conflict(f"the citizen opted out of {channel}; no reply can be sent")
        if row["reply_ciphertext"] is None:
            raise conflict(f"no {channel} address is known for this citizen")
        await _check_window(conn, row, now)
        language = row["language"] or await conn.scalar(
            agencies.select()
            .with_only_columns(agencies.c.default_language)
            .where(agencies.c.id == principal.agency_id)
        )
        delivery_id = await store.record_reply(
            conn,
            thread=row,
            token_id=principal.token_id,
            text=body.text,
            language=str(language or "id"),
            priority=REPLY_PRIORITY,
            now=now,
        )
        await record(
            conn,
            principal=principal,
            action="inbox.reply",
            subject=("inbox_thread", thread_id),
            after={"delivery_id": delivery_id, "channel": channel, "length": len(body.text)},
            now=now,
        )
        row = await _thread(conn, principal, thread_id)
    dispatcher = app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.wake_channel(channel)
    return models.InboxReplyOut(
        delivery_id=delivery_id, channel=channel, state=DeliveryState.QUEUED, thread=thread_out(row)
    )


@routes.post(
    "/inbox/{thread_id}/close",
    summary="Close the thread (closing a closed thread changes nothing); the citizen's next "
    "message opens a new one",
    roles=[Role.OPERATOR],
    response=models.InboxThreadOut,
    tags=TAGS,
)
async def close(request: web.Request, principal: Principal) -> models.InboxThreadOut:
    thread_id = path_id(request, "thread_id")
    now = request.app[CLOCK].now()
    async with request.app[ENGINE].begin() as conn:
        await _thread(conn, principal, thread_id, for_update=True)
        if await store.close(conn, thread_id=thread_id, now=now):
            await record(
                conn,
                principal=principal,
                action="inbox.close",
                subject=("inbox_thread", thread_id),
                after={"status": store.CLOSED},
                now=now,
            )
        row = await _thread(conn, principal, thread_id)
    return thread_out(row)
