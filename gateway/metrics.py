"""``GET /metrics``: the gateway in Prometheus text format, public and free of personal data.

What is measured, and where it comes from:

- ``warta_deliveries{channel,state}`` and ``warta_queue_depth{channel}`` (queued + sending),
  gauges, and ``warta_provider_errors_total{channel,kind}`` (failed deliveries by error kind; a
  counter, since failed is final and deliveries are never deleted): read from the database at
  scrape time. The database is the truth shared by every process (several gateways on one
  PostgreSQL, an ``api`` process apart from a ``worker``), so any process answers for all of
  them, and a restart loses nothing. Answers are cached a few seconds so a scraper, or many,
  cost at most one reading per ``cache_seconds``. A reading is still proportional to the
  table (about 0.35 s per 2,000,000 deliveries on SQLite, 0.5 s on PostgreSQL; see
  ``read_figures``).
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

from gateway.appkeys import DISPATCHER, ENGINE
from gateway.db.engine import reading
from gateway.db.schema import deliveries

log = logging.getLogger("warta.metrics")

LATENCY_SAMPLE = 5000
LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_QUEUED = ("queued", "sending")


@dataclass
class DeliveryFigures:
    """One reading of the deliveries table."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, state)
    failures: dict[tuple[str, str | None], int] = field(default_factory=dict)  # (channel, kind)
    latencies: dict[str, list[float]] = field(default_factory=dict)


# PostgreSQL (and ``python -m bench metrics``, as the baseline): one grouped query, which it
# scans in parallel and hash-aggregates (2,000,000 deliveries: 0.44 s, median of 5 in
# bench/RESULTS.md; the two SQLite statements below took 0.67 s there).
_GROUPED = sa.select(
    deliveries.c.channel, deliveries.c.state, deliveries.c.error_kind, sa.func.count()
).group_by(deliveries.c.channel, deliveries.c.state, deliveries.c.error_kind)
# SQLite: per (announcement, channel, state) first, the order of ix_deliveries_announcement_
# id_channel_state, so it counts from that index alone, streaming; grouping the table by
# (channel, state) read every row and sorted them all (2,000,000: 2.9 s, now 0.35 s).
_PER_ANNOUNCEMENT = (
    sa.select(deliveries.c.channel, deliveries.c.state, sa.func.count().label("n"))
    .group_by(deliveries.c.announcement_id, deliveries.c.channel, deliveries.c.state)
    .subquery()
)
_STATES = sa.select(
    _PER_ANNOUNCEMENT.c.channel, _PER_ANNOUNCEMENT.c.state, sa.func.sum(_PER_ANNOUNCEMENT.c.n)
).group_by(_PER_ANNOUNCEMENT.c.channel, _PER_ANNOUNCEMENT.c.state)
# Failed deliveries are found through the partial index ix_deliveries_failed_finished_at.
_FAILURES = (
    sa.select(deliveries.c.channel, deliveries.c.error_kind, sa.func.count())
    .where(deliveries.c.state == "failed")
    .group_by(deliveries.c.channel, deliveries.c.error_kind)
)
# The primary key bounds the sample to the newest rows whatever the table's size.
_NEWEST = (
    sa.select(deliveries.c.channel, deliveries.c.created_at, deliveries.c.sent_at)
    .order_by(deliveries.c.id.desc())
    .limit(LATENCY_SAMPLE)
    .subquery()
)
_RECENT = sa.select(_NEWEST.c.channel, _NEWEST.c.created_at, _NEWEST.c.sent_at).where(
    _NEWEST.c.sent_at.is_not(None)
)


async def read_figures(engine: AsyncEngine) -> DeliveryFigures:
    """Counts per (channel, state) and failures per (channel, error kind), and recent
    creation-to-sent times per channel."""
    figures = DeliveryFigures()
    counts, failures = figures.counts, figures.failures
    async with reading(engine) as conn:
        if conn.dialect.name == "postgresql":
            for channel, state, kind, count in await conn.execute(_GROUPED):
                counts[(channel, state)] = counts.get((channel, state), 0) + int(count)
                if state == "failed":
                    failures[(channel, kind)] = failures.get((channel, kind), 0) + int(count)
        else:
            for channel, state, count in await conn.execute(_STATES):
                counts[(channel, state)] = int(count)
            for channel, kind, count in await conn.execute(_FAILURES):
                failures[(channel, kind)] = int(count)
        for channel, created_at, sent_at in await conn.execute(_RECENT):
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
        by_state = figures.counts
        queued: dict[str, int] = {}
        for (channel, state), count in by_state.items():
            queued[channel] = queued.get(channel, 0) + (count if state in _QUEUED else 0)
        errors: dict[tuple[str, str], int] = {}
        for (channel, kind), count in figures.failures.items():
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


class PausedCollector(Collector):
    """The channels this process sends nothing on for now, read from its dispatcher at each
    scrape: a provider's 429 pause (reason ``throttled``) or an account the provider refused
    (reason ``config``: an empty balance, a refused key; alert on it)."""

    def __init__(self) -> None:
        self.paused: dict[str, tuple[str, float]] = {}

    def collect(self) -> Iterator[Metric]:
        paused = GaugeMetricFamily(
            "warta_channel_paused_seconds",
            "Seconds until this process sends on the channel again; a channel whose account the "
            "provider refused (reason config) stays listed until a request goes through",
            labels=["channel", "reason"],
        )
        for channel, (reason, left) in sorted(self.paused.items()):
            paused.add_metric([channel, reason], left)
        yield paused


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
        self.paused = PausedCollector()
        self.registry.register(self.paused)
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
    dispatcher = request.app.get(DISPATCHER)
    metrics.paused.paused = {} if dispatcher is None else dispatcher.paused_channels()
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
