"""Telegram updates by long polling, for deployments without a public URL for the webhook.

With ``[telegram] updates = "polling"``, the process that dispatches (``warta serve`` with
role ``all`` or ``worker``) removes any webhook and long-polls ``getUpdates``; each update goes
through the same ``handle_update`` as a webhook call, so commands, the inbox and opt-outs
behave the same. The offset moves past an update once it was handled (or could never be);
an update whose handling hit a passing database problem is asked for again, and because each
update is recorded under its id, asking twice does nothing twice. Telegram allows one poller
per bot: run exactly one dispatching process with polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from aiohttp import web

from channels.telegram.webhook import UpdateFieldError, parse_update
from gateway.appkeys import CONFIG, running_channels
from gateway.citizen.telegram_bot import handle_update, worth_retrying
from gateway.errors import ChannelError

log = logging.getLogger("warta.telegram")
RETRY_S = 2.0


@runtime_checkable
class PollingChannel(Protocol):
    async def delete_webhook(self) -> None: ...
    async def get_updates(self, offset: int | None, *, timeout: int) -> list[dict[str, object]]: ...


async def poll_once(
    app: web.Application, channel: PollingChannel, offset: int | None, *, timeout: int
) -> tuple[int | None, bool]:
    """Fetch one batch of updates and handle them in order.

    Returns the next offset and whether an update was deferred (to be asked for again)."""
    bot_username = app[CONFIG].telegram.bot_username
    for update in await channel.get_updates(offset, timeout=timeout):
        update_id = update.get("update_id")
        try:
            inbound = parse_update(update, bot_username=bot_username)
        except UpdateFieldError as exc:
            log.warning("Telegram update ignored: bad field %s", exc.field)
            if isinstance(update_id, int):
                offset = update_id + 1
            continue
        try:
            await handle_update(app, inbound)
        except Exception as exc:
            if isinstance(exc, LookupError) or worth_retrying(exc):
                # Not handled: ask for it (and what follows) again after a pause.
                log.warning(
                    "Telegram update %s deferred: %s", inbound.update_id, type(exc).__name__
                )
                return offset, True
            # Only the class: SQL errors quote their parameters, and those hold chat ids.
            log.error("Telegram update %s dropped: %s", inbound.update_id, type(exc).__name__)
        offset = inbound.update_id + 1
    return offset, False


async def _poll_forever(app: web.Application, channel: PollingChannel) -> None:
    timeout = app[CONFIG].telegram.poll_timeout_s
    offset: int | None = None
    webhook_removed = False
    while True:
        try:
            if not webhook_removed:
                await channel.delete_webhook()
                webhook_removed = True
            offset, deferred = await poll_once(app, channel, offset, timeout=timeout)
            if deferred:
                await asyncio.sleep(RETRY_S)
        except ChannelError as exc:
            log.warning("Telegram polling failed (%s: %s); retrying", exc.kind, exc.reason)
            await asyncio.sleep(RETRY_S)
        except Exception as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                return  # a cancellation that came back as a driver error: we are stopping
            log.error("Telegram polling failed: %s; retrying", type(exc).__name__)
            await asyncio.sleep(RETRY_S)


async def polling_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` entry after the outbox's: polls while the app runs, when configured."""
    config = app[CONFIG]
    channel = running_channels(app).get("telegram")
    if (
        config.telegram.updates != "polling"
        or not config.dispatch.enabled
        or not isinstance(channel, PollingChannel)
    ):
        yield
        return
    task = asyncio.create_task(_poll_forever(app, channel), name="telegram-polling")
    log.info("Telegram updates by polling getUpdates")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
