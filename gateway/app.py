"""``create_app(config) -> web.Application``: the whole gateway, resources in ``cleanup_ctx``."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from typing import Literal

from aiohttp import web

from gateway import http_headers, metrics
from gateway.api import (
    agency,
    announcements,
    cap,
    deliveries,
    inbox,
    schedule,
    stats,
    subscribers,
    system,
    tokens,
)
from gateway.api.errors import error_middleware
from gateway.api.openapi import build_openapi
from gateway.api.routing import ApiRoutes
from gateway.appkeys import (
    BALANCES,
    CLOCK,
    CONFIG,
    DISPATCHER,
    ENGINE,
    RENDERER,
    REPORTS,
    VAULT,
    WRITER,
)
from gateway.attempts import AttemptLimit
from gateway.auth import auth_middleware
from gateway.clock import Clock, SystemClock
from gateway.config import ConfigProblem, WartaConfig
from gateway.db.engine import create_engine, ensure_migrated
from gateway.personal import PhoneVault

log = logging.getLogger("warta")

API_MODULES: tuple[ApiRoutes, ...] = (
    agency.routes,
    announcements.routes,
    cap.routes,
    deliveries.routes,
    inbox.routes,
    schedule.routes,
    stats.routes,
    subscribers.routes,
    system.routes,
    tokens.routes,
)
OPENAPI = web.AppKey("openapi", dict)

# What one process does (``warta serve --role``): ``api`` answers HTTP (API, callbacks,
# citizens, pages) and leaves the outbox to others; ``worker`` dispatches and schedules, with
# only the health endpoints (and /metrics) on its port; ``all`` does both.
Role = Literal["api", "worker", "all"]
ROLES: tuple[Role, ...] = ("all", "api", "worker")


def vault_from_config(config: WartaConfig) -> PhoneVault:
    secrets = config.secrets
    if secrets.phone_keys is None or secrets.blind_index_key is None:
        raise ConfigProblem(
            "secrets.phone_keys and secrets.blind_index_key are required: set "
            "WARTA_SECRETS__PHONE_KEYS and WARTA_SECRETS__BLIND_INDEX_KEY (or their _FILE forms)"
        )
    return PhoneVault.from_secrets(
        secrets.phone_keys.get_secret_value(), secrets.blind_index_key.get_secret_value()
    )


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[CONFIG].database)
    try:
        await ensure_migrated(engine)
        app[ENGINE] = engine
        yield
    finally:
        await engine.dispose()


async def _outbox(app: web.Application) -> AsyncIterator[None]:
    from gateway.balances import Balances
    from gateway.db.writer import Writer
    from gateway.outbox.dispatcher import Dispatcher
    from gateway.outbox.reports import ReportWriter

    writer = Writer(app[ENGINE], busy_timeout_ms=app[CONFIG].database.busy_timeout_ms)
    app[WRITER] = writer
    reports = ReportWriter(app[ENGINE], clock=app[CLOCK], writer=writer)
    await reports.start()
    app[REPORTS] = reports
    dispatcher = Dispatcher.from_app(app)
    app[DISPATCHER] = dispatcher
    app[BALANCES] = Balances(dispatcher.channels)
    if app[CONFIG].dispatch.enabled:
        await dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop()
        await reports.stop()
        writer.close()


def create_app(
    config: WartaConfig,
    *,
    clock: Clock | None = None,
    vault: PhoneVault | None = None,
    role: Role = "all",
) -> web.Application:
    """Build the gateway. Nothing connects until the app starts (``cleanup_ctx``).

    ``role`` (see ``Role``): ``api`` turns dispatch and the scheduler off, ``worker`` serves
    only the health endpoints and ``/metrics``; the outbox settings of ``config`` apply otherwise.
    """
    from gateway import dashboard, voice_routes
    from gateway.callbacks import routes as callback_routes
    from gateway.citizen import routes as citizen_routes
    from gateway.citizen import telegram_bot, telegram_polling
    from gateway.citizen.routes import CitizenSettings
    from gateway.outbox.replies import OutboxReplies
    from gateway.renditions import Renderer, TemplateProblem
    from gateway.web import public
    from scheduler.service import SCHEDULER_SETTINGS, SchedulerSettings, scheduler_ctx

    if role != "all":
        dispatching = role == "worker"
        config = config.model_copy(
            update={
                "dispatch": config.dispatch.model_copy(update={"enabled": dispatching}),
                "scheduler": config.scheduler.model_copy(update={"enabled": dispatching}),
            }
        )
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=config.http.max_body_bytes,
    )
    http_headers.install(app)
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[VAULT] = vault or vault_from_config(config)
    app[RENDERER] = Renderer(config.templates_dir)
    try:
        # Syntax errors, undefined variables and sandbox violations stop the start here,
        # naming the template and line; a missing fact is refused per announcement at submit.
        app[RENDERER].check_all()
    except TemplateProblem as exc:
        raise ConfigProblem(f"templates: {exc}") from None
    app[system.VERIFY_LIMITER] = AttemptLimit("verify", limit=20, window_s=20)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_outbox)
    app[SCHEDULER_SETTINGS] = SchedulerSettings.from_config(config.scheduler)
    app.cleanup_ctx.append(scheduler_ctx)
    app.cleanup_ctx.append(telegram_polling.polling_ctx)
    app.router.add_get("/healthz", system.healthz)
    app.router.add_get("/readyz", system.readyz)
    metrics.install(app)
    if role == "worker":
        return app

    all_routes = [route for module in API_MODULES for route in module.routes]
    app[OPENAPI] = build_openapi(all_routes)
    for module in API_MODULES:
        module.install(app)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(request.app[OPENAPI])

    app.router.add_get("/api/v1/openapi.json", openapi)
    callback_routes.install(app)
    voice_routes.install(app)
    citizen_routes.install(
        app,
        settings=CitizenSettings(
            screen_size=config.citizen.ussd_screen_size,
            service_codes=config.citizen.ussd_service_codes,
            short_codes=config.citizen.sms_short_codes,
        ),
        replies=OutboxReplies(app),
    )
    telegram_bot.install(
        app, settings=telegram_bot.TelegramBotSettings(agency_slug=config.telegram.agency)
    )
    public.install(app)
    dashboard.install(app)
    return app


# How long a thread may keep the GIL while another waits for it (Python's default is 5 ms). The
# SQLite writer's thread (gateway.db.writer) lets go of it in every statement and needs it back
# to go on, holding the database's write lock meanwhile; with the event loop busy sending, each
# statement waited for it up to the default's 5 ms. 0.5 ms: 6-19% more deliveries a second
# on SQLite in side-by-side runs (bench/RESULTS.md, session 10).
GIL_SWITCH_INTERVAL_S = 0.0005

# The collector's youngest generation is scanned once this many more container objects were
# made than freed (Python's default is 700). A dispatcher holds a few batches of 2,000 claimed
# deliveries, their messages and outcomes at a time: with 700 each batch's objects were scanned
# while young, again in the middle generation, and the oldest was scanned whole every few
# seconds, 0.5 s of CPU (holding the GIL) for 100,000 deliveries. At 20,000 the batches are
# freed before a scan; what is garbage in cycles is still collected, after at most 20,000 more
# objects (bench/RESULTS.md, session 12). The older generations keep their defaults.
GC_YOUNG_THRESHOLD = 20_000


def settle_process() -> None:
    """For a process that serves the app, once it is set up: the GIL handed over sooner,
    everything loaded so far (modules, templates, tables), which lives as long as the process,
    kept out of the collector's scans, and the youngest generation scanned less often."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)
