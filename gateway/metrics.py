"""``GET /metrics``: the gateway in Prometheus text format, public and free of personal data.

What is measured, and where it comes from:

- ``warta_deliveries{channel,state}`` and ``warta_queue_depth{channel}`` (queued + sending),
  gauges, and ``warta_provider_errors_total{channel,kind}`` (failed deliveries by error kind; a
  counter, since failed is final and deliveries are never deleted): one grouped query over the
  deliveries table at scrape time. The database is the truth shared by every process (several
  gateways on one PostgreSQL, an ``api`` process apart from a ``worker``), so any process
  answers for all of them, and a restart loses nothing. Answers are cached a few seconds so a
  scraper, or many, cost at most one scan per ``cache_seconds``.
- ``warta_dispatch_latency_seconds{channel}``: time from a delivery's creation (fan-out) to
  ``sent_at``, over the sent ones among the newest ``LATENCY_SAMPLE`` deliveries. A sample of
  recent rows is a snapshot, not an ever-growing count, so it is a *gauge histogram*: graph its
  buckets as they are; ``rate()`` over it means nothing.
- ``warta_callbacks_total{provider,status}``: provider callbacks answered by this process,
  counted in an ``on_response_prepare`` hook. The provider label comes from the matched route,
  never from the raw path, which carries a callback secret and could be made up by anyone.
- ``warta_metrics_database_up``: 0 when the last refresh could not read the database (the
  delivery figures are then the last ones read, or absent).

Labels are channels, states, error kinds, providers and HTTP statuses: never a phone number,
a subscriber, an announcement or a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.appkeys import ENGINE
from gateway.db.engine import reading
from gateway.db.schema import deliveries

log = logging.getLogger("warta.metrics")

LATENCY_SAMPLE = 5000
LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_QUEUED = ("queued", "sending")


@dataclass
class DeliveryFigures:
    """One reading of the deliveries table."""

    counts: dict[tuple[str, str, str | None], int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)


async def read_figures(engine: AsyncEngine) -> DeliveryFigures:
    """Counts per (channel, state, error kind), and recent creation-to-sent times per channel."""
    figures = DeliveryFigures()
    grouped = sa.select(
        deliveries.c.channel, deliveries.c.state, deliveries.c.error_kind, sa.func.count()
    ).group_by(deliveries.c.channel, deliveries.c.state, deliveries.c.error_kind)
    # The primary key bounds the sample to the newest rows whatever the table's size.
    newest = (
        sa.select(deliveries.c.channel, deliveries.c.created_at, deliveries.c.sent_at)
        .order_by(deliveries.c.id.desc())
        .limit(LATENCY_SAMPLE)
        .subquery()
    )
    recent = sa.select(newest.c.channel, newest.c.created_at, newest.c.sent_at).where(
        newest.c.sent_at.is_not(None)
    )
    async with reading(engine) as conn:
        for channel, state, kind, count in await conn.execute(grouped):
            figures.counts[(channel, state, kind)] = int(count)
        for channel, created_at, sent_at in await conn.execute(recent):
            seconds = max((sent_at - created_at).total_seconds(), 0.0)
            figures.latencies.setdefault(channel, []).append(seconds)
    return figures


def _histogram_buckets(values: list[float]) -> list[tuple[str, float]]:
    buckets = [
        (repr(float(bound)), float(sum(v <= bound for v in values))) for bound in LATENCY_BUCKETS
    ]
    buckets.append(("+Inf", float(len(values))))
    return buckets


class DeliveryCollector(Collector):
    """Turns the latest ``DeliveryFigures`` into metric families (prometheus_client is sync)."""

    def __init__(self) -> None:
        self.figures: DeliveryFigures | None = None
        self.database_up = True

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "warta_metrics_database_up",
            "1 if the last refresh of delivery figures read the database",
        )
        up.add_metric([], 1.0 if self.database_up else 0.0)
        yield up
        figures = self.figures
        if figures is None:
            return
        by_state: dict[tuple[str, str], int] = {}
        queued: dict[str, int] = {}
        errors: dict[tuple[str, str], int] = {}
        for (channel, state, kind), count in figures.counts.items():
            by_state[(channel, state)] = by_state.get((channel, state), 0) + count
            queued.setdefault(channel, 0)
            if state in _QUEUED:
                queued[channel] += count
            if state == "failed":
                key = (channel, kind or "unknown")
                errors[key] = errors.get(key, 0) + count
        states = GaugeMetricFamily(
            "warta_deliveries", "Deliveries in each state, per channel", labels=["channel", "state"]
        )
        for (channel, state), count in sorted(by_state.items()):
            states.add_metric([channel, state], count)
        yield states
        depth = GaugeMetricFamily(
            "warta_queue_depth",
            "Deliveries waiting or in flight (queued + sending), per channel",
            labels=["channel"],
        )
        for channel, count in sorted(queued.items()):
            depth.add_metric([channel], count)
        yield depth
        failed = CounterMetricFamily(
            "warta_provider_errors",
            "Failed deliveries by error kind (gateway/errors.py), per channel",
            labels=["channel", "kind"],
        )
        for (channel, kind), count in sorted(errors.items()):
            failed.add_metric([channel, kind], count)
        yield failed
        latency = GaugeHistogramMetricFamily(
            "warta_dispatch_latency_seconds",
            f"Seconds from a delivery's creation to its sending, over the sent ones among the "
            f"newest {LATENCY_SAMPLE} deliveries",
            labels=["channel"],
        )
        for channel, values in sorted(figures.latencies.items()):
            latency.add_metric([channel], _histogram_buckets(values), gsum_value=sum(values))
        yield latency


class Metrics:
    """Per application: its own registry (two apps in one process never share a counter)."""

    def __init__(self, *, cache_seconds: float) -> None:
        self.cache_seconds = cache_seconds
        self.registry = CollectorRegistry(auto_describe=True)
        self.callbacks = Counter(
            "warta_callbacks",
            "Provider callbacks answered, by provider and HTTP status",
            labelnames=["provider", "status"],
            registry=self.registry,
        )
        # (provider, status) -> its child counter: ``labels()`` takes a lock and builds the
        # key on every call, once per provider callback.
        self._callback_counters: dict[tuple[str, int], Counter] = {}
        self.deliveries = DeliveryCollector()
        self.registry.register(self.deliveries)
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    def count_callback(self, provider: str, status: int) -> None:
        counter = self._callback_counters.get((provider, status))
        if counter is None:
            counter = self.callbacks.labels(provider=provider, status=str(status))
            self._callback_counters[(provider, status)] = counter
        counter.inc()

    async def refresh(self, engine: AsyncEngine) -> None:
        """Read the database unless the last reading is younger than ``cache_seconds``."""
        async with self._lock:
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self.cache_seconds:
                return
            try:
                self.deliveries.figures = await read_figures(engine)
                self.deliveries.database_up = True
            except Exception as exc:  # a scrape must still answer; the reason is the class only
                log.warning("metrics: cannot read deliveries: %s", type(exc).__name__)
                self.deliveries.database_up = False
            self._read_at = now


METRICS = web.AppKey("metrics", Metrics)


async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await metrics.refresh(request.app[ENGINE])
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _provider_of(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None or not resource.canonical.startswith("/callbacks/"):
        return "unmatched"
    return resource.canonical.split("/")[2]


async def count_callbacks(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/callbacks/"):
        request.app[METRICS].count_callback(_provider_of(request), response.status)


def install(app: web.Application, *, cache_seconds: float = 5.0) -> None:
    """Serve ``/metrics`` and count provider callbacks."""
    app[METRICS] = Metrics(cache_seconds=cache_seconds)
    app.router.add_get("/metrics", metrics_page)
    app.on_response_prepare.append(count_callbacks)
