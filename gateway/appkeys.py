"""Typed application state: every long-lived resource has one key, declared here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import Clock
from gateway.config import WartaConfig
from gateway.personal import PhoneVault

if TYPE_CHECKING:
    from channels.base import Channel
    from gateway.balances import Balances
    from gateway.db.writer import Writer
    from gateway.outbox.dispatcher import Dispatcher
    from gateway.outbox.reports import ReportWriter
    from gateway.renditions import Renderer

CONFIG = web.AppKey("config", WartaConfig)
ENGINE = web.AppKey("engine", AsyncEngine)
CLOCK = web.AppKey("clock", Clock)
VAULT = web.AppKey("vault", PhoneVault)
RENDERER: web.AppKey[Renderer] = web.AppKey("renderer")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
REPORTS: web.AppKey[ReportWriter] = web.AppKey("reports")
WRITER: web.AppKey[Writer] = web.AppKey("writer")
BALANCES: web.AppKey[Balances] = web.AppKey("balances")


def running_channels(app: web.Application) -> Mapping[str, Channel]:
    """The channels this process's dispatcher runs, by name (none before it is set up)."""
    dispatcher = app.get(DISPATCHER)
    return {} if dispatcher is None else dispatcher.channels
