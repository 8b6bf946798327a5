"""The read path at scale: a million subscriptions and ten million events, then the queries."""

import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, text

from finance_core.store import statements as hot
from finance_core.store.db import statement_reads, write_transaction
from finance_core.store.models import (
    invoices,
    products,
    subscription_counts,
    subscriptions,
    webhook_events,
)
from finance_core.views.queries import stripe_sync_status, subscription_summary

STATUSES = (
    ["active"] * 70 + ["trialing"] * 8 + ["past_due"] * 5 + ["canceled"] * 15 + ["unpaid"] * 2
)
EVENT_TYPES = [
    "customer.subscription.updated",
    "invoice.paid",
    "invoice.payment_failed",
    "product.updated",
]
BATCH = 20_000


def fill(
    engine: Engine,
    *,
    subscriptions_n: int,
    events_n: int,
    invoices_n: int = 20_000,
    plans: int = 20,
) -> float:
    """Bulk-load the store as the ingest path would leave it; returns seconds taken.

    One invoice in ten is failing and open.
    """
    started = time.perf_counter()
    rng = random.Random(11)
    now = datetime.now(UTC)
    state = {
        "state_created": 1_790_000_000,
        "state_event_id": "evt_bulk",
        "updated_at": now,
        "livemode": False,
    }
    counts: dict[tuple[str, str], int] = {}
    with write_transaction(engine) as conn:
        conn.execute(
            insert(products),
            [
                {
                    "id": f"prod_scale_{p:02d}",
                    "name": f"Plan {p:02d}",
                    "active": True,
                    "deleted": False,
                    **state,
                }
                for p in range(plans)
            ],
        )
    for start in range(0, subscriptions_n, BATCH):
        rows = []
        for n in range(start, min(start + BATCH, subscriptions_n)):
            product, status = f"prod_scale_{rng.randrange(plans):02d}", rng.choice(STATUSES)
            counts[(product, status)] = counts.get((product, status), 0) + 1
            rows.append(
                {
                    "id": f"sub_scale_{n:08d}",
                    "status": status,
                    "product_id": product,
                    "price_id": None,
                    "customer_id": None,
                    "current_period_start": None,
                    "current_period_end": None,
                    "cancel_at_period_end": False,
                    **state,
                }
            )
        with write_transaction(engine) as conn:
            conn.execute(insert(subscriptions), rows)
    with write_transaction(engine) as conn:
        # Where the schema keeps the counts by trigger, they are already there.
        kept = conn.execute(select(func.count()).select_from(subscription_counts)).scalar_one()
        if not kept:
            conn.execute(
                insert(subscription_counts),
                [
                    {"product_id": p, "status": s, "subscription_count": c}
                    for (p, s), c in counts.items()
                ],
            )
    for start in range(0, invoices_n, BATCH):
        with write_transaction(engine) as conn:
            conn.execute(
                insert(invoices),
                [
                    {
                        "id": f"in_scale_{n:09d}",
                        "subscription_id": None,
                        "status": "open",
                        "payment_failing": n % 10 == 0,
                        "failing_since": now if n % 10 == 0 else None,
                        "amount_due": 2900,
                        "currency": "usd",
                        "attempt_count": 1,
                        **state,
                    }
                    for n in range(start, min(start + BATCH, invoices_n))
                ],
            )
    load_events(engine, events_n=events_n, first=now - timedelta(days=30), span=timedelta(days=30))
    analyze(engine)
    return time.perf_counter() - started


def load_events(
    engine: Engine, *, events_n: int, first: datetime, span: timedelta, prefix: str = "evt_scale"
) -> None:
    """Bulk-load `events_n` processed deliveries received evenly over [first, first + span)."""
    step = span / max(events_n, 1)
    for start in range(0, events_n, BATCH):
        rows = []
        for n in range(start, min(start + BATCH, events_n)):
            at = first + step * n
            rows.append(
                {
                    "id": f"{prefix}_{n:09d}",
                    "type": EVENT_TYPES[n % 4],
                    "created": 1_790_000_000 + n,
                    "api_version": "2025-03-31.basil",
                    "livemode": False,
                    "status": "processed",
                    "error": None,
                    "attempts": 1,
                    "deliveries": 1,
                    "first_received_at": at,
                    "last_received_at": at,
                    "processed_at": at,
                    "payload": None,
                    "dismissed_by": None,
                }
            )
        with write_transaction(engine) as conn:
            conn.execute(insert(webhook_events), rows)


def analyze(engine: Engine) -> None:
    """Fresh planner statistics after a bulk load."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    else:
        with write_transaction(engine) as conn:
            conn.execute(text("ANALYZE"))


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """Median, nearest-rank 95th percentile and maximum of some timings in milliseconds."""
    ordered = sorted(samples_ms)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[math.ceil(len(ordered) * 0.95) - 1],
        "max_ms": ordered[-1],
    }


def _timings(function: Any, repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def measure(engine: Engine, *, repeat: int = 300) -> dict[str, dict[str, float]]:
    """Each query's server-side time, alternating with a trivial database round trip.

    On a connection as the listener takes one for an answer and for /healthz.
    """
    statuses = ["active", "trialing", "past_due"]

    def summary() -> None:
        with statement_reads(engine) as conn:
            subscription_summary(conn=conn, active_statuses=statuses, now=datetime.now(UTC))

    def sync_status() -> None:
        with statement_reads(engine) as conn:
            stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))

    def healthz() -> None:
        with statement_reads(engine) as conn:
            hot.run(conn, hot.SELECT_ONE, {}).fetchall()

    results: dict[str, list[dict[str, float]]] = {
        "subscription-summary": [],
        "stripe-sync-status": [],
        "healthz": [],
    }
    for _ in range(3):  # alternate, so that machine noise hits all three alike
        results["healthz"].append(_timings(healthz, repeat // 3))
        results["subscription-summary"].append(_timings(summary, repeat // 3))
        results["stripe-sync-status"].append(_timings(sync_status, repeat // 3))
    return {
        name: {key: statistics.median(r[key] for r in runs) for key in ("p50_ms", "p95_ms")}
        for name, runs in results.items()
    }
