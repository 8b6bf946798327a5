"""`GET /metrics`: Prometheus text through prometheus-client, in a registry of the app's own.

Counters and the ack histogram are this process's, as Prometheus expects of counters; the
gauges are the store's, read through `finance_core.views.gauges` at most every few seconds and
shared by every scrape in between, so that all listener processes on a store report the same
values and a scrape storm costs one read per few seconds. The webhook path adds one counter
increment and one histogram observation per delivery.
"""

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from finance_core.settings import Settings
from finance_core.store.db import statement_reads
from finance_core.views.gauges import StoreGauges, store_gauges
from finance_core.views.queries import WebhookHealth
from webhook_listener.background_process import JOBS

log = logging.getLogger("webhook_listener.metrics")

METRICS_PATH = "/metrics"
# What a verified delivery became (the writer's outcome); "queued" comes with thin events.
OUTCOMES = ("processed", "duplicate", "ignored", "failed", "queued")
# From a millisecond (an ack on a quiet machine) to the few seconds nothing should take.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GAUGES_TTL_S = 5.0

GaugeReader = Callable[[], StoreGauges]


class StoreGaugeCollector:
    """The store's gauges as last read; `refresh` reads them again once they are `ttl` old.

    Collecting never reads the store, so that a scrape whose gauges are fresh is rendered on
    the event loop, without a trip to the thread pool; none are given while the store is away.
    """

    def __init__(self, read: GaugeReader, ttl: float = GAUGES_TTL_S) -> None:
        self._read = read
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: StoreGauges | None = None
        self._read_at = -math.inf

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._read_at >= self._ttl

    def refresh(self) -> None:
        """Read the store if the gauges are stale (blocking: call it off the event loop)."""
        with self._lock:  # concurrent scrapes wait for one read instead of each reading
            if not self.stale:
                return
            try:
                self._value = self._read()
            except SQLAlchemyError:
                log.warning("the store's gauges are left out: the database cannot be read")
                self._value = None
            self._read_at = time.monotonic()

    def describe(self) -> Iterator[Metric]:
        # Names for the registry's duplicate check, without reading the store.
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._value)

    def _families(self, gauges: StoreGauges | None) -> Iterator[Metric]:
        health = GaugeMetricFamily(
            "finance_webhook_health",
            "Webhook health: 1 for the current state (healthy, delayed, error), 0 for the others",
            labels=["state"],
        )
        received = GaugeMetricFamily(
            "finance_webhook_last_received_timestamp_seconds",
            "Arrival of the latest verified delivery, Unix time (0 before the first)",
        )
        families = {
            "finance_active_subscriptions": "Subscriptions in ACTIVE_SUBSCRIPTION_STATUSES",
            "finance_failed_payments": "Open invoices whose latest payment attempt failed",
            "finance_unresolved_failed_events": "Events that failed to apply, not yet settled",
            "finance_thin_events_pending": "Thin events waiting for their object from Stripe",
        }
        if gauges is None:
            yield health
            yield received
            for name, documentation in families.items():
                yield GaugeMetricFamily(name, documentation)
            return
        for state in WebhookHealth:
            health.add_metric([state.value], 1.0 if state is gauges.webhook_health else 0.0)
        yield health
        last = gauges.last_webhook_received
        received.add_metric([], last.timestamp() if last else 0.0)
        yield received
        values = [
            gauges.active_subscriptions,
            gauges.failed_payments,
            gauges.unresolved_failed_events,
            gauges.thin_events_pending,
        ]
        for (name, documentation), value in zip(families.items(), values, strict=True):
            yield GaugeMetricFamily(name, documentation, value=value)
        if gauges.feed_check is not None:  # absent while the feed check is off or never ran
            ok, checked_at = gauges.feed_check
            yield GaugeMetricFamily(
                "finance_feed_check_ok",
                "1 when Stripe's view of the feed (SPEC 17) found it complete, else 0",
                value=ok,
            )
            yield GaugeMetricFamily(
                "finance_feed_check_timestamp_seconds",
                "When the latest feed check ran, Unix time",
                value=checked_at,
            )


class ListenerMetrics:
    """This listener process's metrics: counters, the ack histogram, the store's gauges."""

    def __init__(self, read_gauges: GaugeReader) -> None:
        # No `_created` series beside each counter: Prometheus reads them as more gauges.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "finance_webhook_deliveries",
            "Verified deliveries answered, by outcome (or the error that answered them)",
            ["outcome"],
            registry=self.registry,
        )
        # Every outcome from the start, so that rate() sees the first one of each.
        self._outcomes = {outcome: self.deliveries.labels(outcome) for outcome in OUTCOMES}
        self.rejections = Counter(
            "finance_webhook_rejections",
            "Deliveries refused (400 or 413), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "finance_webhook_ack_seconds",
            "Seconds from receiving a delivery to its answer",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.background_rounds = Counter(
            "finance_background_rounds",
            "Rounds of work each job of this listener's background worker finished (alerts: "
            "one evaluation of the rules; digest: one look at DIGEST_AT)",
            ["background_job"],  # `job` is Prometheus's own label, the scrape job's name
            registry=self.registry,
        )
        self.background_last_round = Gauge(
            "finance_background_last_round_timestamp_seconds",
            "When each background job last finished a round (Unix time): a job that stopped "
            "shows as an old time",
            ["background_job"],
            registry=self.registry,
        )
        # No process_* metrics: they would speak of this process only, not of its writer and
        # worker, and cost a quarter of a scrape; node_exporter sees every process.
        self.gauges = StoreGaugeCollector(read_gauges)
        self.registry.register(self.gauges)

    def delivered(self, outcome: str, started: float) -> None:
        """Count a verified delivery's answer; `started` is its perf_counter() on arrival."""
        counter = self._outcomes.get(outcome) or self.deliveries.labels(outcome)
        counter.inc()
        self.ack_seconds.observe(time.perf_counter() - started)

    def background_round(self, job: str) -> None:
        """Count a round the background worker reports; a name it does not run is dropped."""
        if job in JOBS:
            self.background_rounds.labels(job).inc()
            self.background_last_round.labels(job).set_to_current_time()

    def rejected(self, reason: str, started: float) -> None:
        """Count a refused delivery's answer."""
        self.rejections.labels(reason).inc()
        self.ack_seconds.observe(time.perf_counter() - started)


def gauge_reader(engine: Engine, settings: Settings) -> GaugeReader:
    """Read the store's gauges on a pooled connection, outside a transaction."""

    def read() -> StoreGauges:
        with statement_reads(engine) as conn:
            return store_gauges(conn=conn, settings=settings, now=datetime.now(UTC))

    return read


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as its bearer, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def install_metrics(app: FastAPI) -> None:
    """Add GET /metrics; it answers from `app.state.metrics`, set when the app starts."""

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        state = request.app.state
        token = state.settings.metrics_bearer()
        if token is not None and not bearer_matches(request.headers.get("authorization"), token):
            return PlainTextResponse(
                "send METRICS_TOKEN as 'Authorization: Bearer <token>'\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        metrics: ListenerMetrics = state.metrics
        if metrics.gauges.stale:  # a store read, on the thread pool; else none at all
            await run_in_threadpool(metrics.gauges.refresh)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
