"""Deterministic bursts of subscription and invoice events, for load tests and benchmarks;
sending them as Stripe does, and comparing the store with a clean run's."""

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, select

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction
from finance_core.store.models import (
    ALERT_STATE_OK,
    alert_rules,
    alerts,
    invoices,
    subscription_counts,
    subscriptions,
    webhook_events,
)
from finance_core.views.queries import stripe_sync_status
from tests.support import stripe_factory as sf
from tests.support.servers import ListenerProcess
from tests.support.waiting import wait_until

STATUSES = ["active", "trialing", "past_due", "canceled", "unpaid"]


def burst(count: int, *, seed: int, subscriptions_n: int = 300) -> list[dict[str, Any]]:
    """Subscription and invoice events; `created` rises, so the newest per object is the last."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        sub_id = f"sub_burst_{rng.randrange(subscriptions_n):04d}"
        if rng.random() < 0.7:
            obj = sf.subscription(sub_id, rng.choice(STATUSES), f"prod_{rng.randrange(8)}")
            event_type = "customer.subscription.updated"
        else:
            event_type = rng.choice(["invoice.payment_failed", "invoice.paid"])
            status = "open" if event_type == "invoice.payment_failed" else "paid"
            obj = sf.invoice(
                f"in_burst_{rng.randrange(subscriptions_n):04d}", status, subscription_id=sub_id
            )
        events.append(
            sf.event(
                event_type, obj, event_id=f"evt_burst_{seed}_{n:06d}", created=1_780_000_000 + n
            )
        )
    return events


def fingerprint(engine: Engine) -> dict[str, Any]:
    """Everything the numbers depend on, in a comparable form."""
    with read_transaction(engine) as conn:
        return {
            "subscriptions": sorted(
                conn.execute(
                    select(
                        subscriptions.c.id,
                        subscriptions.c.status,
                        subscriptions.c.product_id,
                        subscriptions.c.state_event_id,
                    )
                ).all()
            ),
            "invoices": sorted(
                conn.execute(
                    select(invoices.c.id, invoices.c.status, invoices.c.payment_failing)
                ).all()
            ),
            "counts": sorted(r for r in conn.execute(select(subscription_counts)).all() if r[2]),
            "events": sorted(
                conn.execute(select(webhook_events.c.id, webhook_events.c.status)).all()
            ),
        }


def clean_store(tmp_path: Path, events: list[dict[str, Any]]) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path}/clean.db")
    migrate.upgrade(engine)
    now = datetime.now(UTC)
    for event in events:
        ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=now)
    return engine


def send_all(
    url: str,
    events: list[dict[str, Any]],
    *,
    workers: int = 8,
    stop_after_acks: int | None = None,
    on_stop: Any = None,
) -> dict[str, Any]:
    """POST every event signed over keep-alive connections, as Stripe's senders do.

    Returns each event's (status code or None for no answer, seconds to the answer).
    """
    results: dict[str, Any] = {}
    acks = 0
    lock = threading.Lock()
    stopped = threading.Event()

    def post_slice(chunk: list[dict[str, Any]]) -> None:
        nonlocal acks
        with httpx.Client(base_url=url, timeout=10) as client:
            for event in chunk:
                if stopped.is_set():
                    results[event["id"]] = (None, 0.0)
                    continue
                body, headers = sf.signed(event)
                started = time.perf_counter()
                try:
                    code = client.post(
                        "/webhooks/stripe", content=body, headers=headers
                    ).status_code
                except httpx.TransportError:
                    code = None
                results[event["id"]] = (code, time.perf_counter() - started)
                if code == 200 and stop_after_acks is not None:
                    with lock:
                        acks += 1
                        if acks == stop_after_acks:
                            stopped.set()
                            on_stop()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(post_slice, [events[i::workers] for i in range(workers)]))
    return results


def codes(results: dict[str, Any]) -> dict[str, int | None]:
    return {event_id: code for event_id, (code, _) in results.items()}


def redeliver_the_unacknowledged(url: str, events: list[dict[str, Any]], first: dict, seed: int):
    """Stripe redelivers everything that did not get a 2xx, in its own order: all land now."""
    retry = [e for e in events if first.get(e["id"]) != 200]
    random.Random(seed).shuffle(retry)
    assert set(codes(send_all(url, retry)).values()) == {200}


def assert_same_as_a_clean_run(tmp_path: Path, url: str, events, acknowledged: set[str]) -> None:
    store = make_engine(url)
    clean = clean_store(tmp_path, events)
    with read_transaction(store) as conn:
        stored = set(conn.execute(select(webhook_events.c.id)).scalars())
    assert acknowledged <= stored  # no acknowledged event is missing
    assert fingerprint(store) == fingerprint(clean)
    store.dispose()
    clean.dispose()


@contextmanager
def listener_and_writer(url: str, **env: str) -> Iterator[tuple[ListenerProcess, int]]:
    """A listener process on `url` (with `env`) and the pid of its writer; stopped after."""
    listener = ListenerProcess(url, **env).start()
    try:
        writer = listener.writer_pid()
        assert writer is not None
        yield listener, writer
    finally:
        listener.stop()


def acknowledged_in(first: dict[str, int | None]) -> set[str]:
    return {event_id for event_id, code in first.items() if code == 200}


def no_failed_events_and_healthy(url: str) -> None:
    """After a fault: no event is failed and webhook health is healthy, by itself."""
    engine = make_engine(url)
    try:
        with read_transaction(engine) as conn:
            statuses = set(conn.execute(select(webhook_events.c.status)).scalars())
            health = stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))
    finally:
        engine.dispose()
    assert "failed" not in statuses, statuses
    assert health.webhook_health == "healthy", health


# The listener settings under which the fault tests watch the alerts: evaluated every second.
ALERTS_EVERY_SECOND = {"ALERT_CHECK_SECONDS": "1"}

# The rules a fault of ours can set off. `failed_payments` is left out: a burst of events with
# failing invoices rightly raises it, whatever the fault, and it is about the data, not the feed.
FEED_RULES = ("webhook_health", "rejections")


def alerts_recovered_without_flapping(url: str, *, timeout: float = 60) -> dict[str, list[str]]:
    """After a fault, the feed's alerts healed without anyone acting: every feed rule back to ok
    (waited for), each rule's alerts alternating started and ended, and no rule started in the
    same state twice (a flapping alert would). The states each rule started in, by rule."""
    engine = make_engine(url)
    feed = alert_rules.c.rule.in_(FEED_RULES)

    def recovered() -> bool:
        with read_transaction(engine) as conn:
            states = set(conn.execute(select(alert_rules.c.state).where(feed)).scalars())
        return states <= {ALERT_STATE_OK}

    try:
        wait_until(recovered, timeout=timeout, every=0.2, what="every feed alert rule back to ok")
        with read_transaction(engine) as conn:
            rows = conn.execute(
                select(alerts.c.rule, alerts.c.kind, alerts.c.state)
                .where(alerts.c.kind.in_(("started", "ended")), alerts.c.rule.in_(FEED_RULES))
                .order_by(alerts.c.id)
            ).all()
    finally:
        engine.dispose()
    started: dict[str, list[str]] = {}
    kinds: dict[str, list[str]] = {}
    for rule, kind, state in rows:
        kinds.setdefault(rule, []).append(kind)
        if kind == "started":
            started.setdefault(rule, []).append(state)
    for rule, sequence in kinds.items():
        assert sequence == ["started", "ended"] * (len(sequence) // 2), (rule, sequence)
        assert len(set(started[rule])) == len(started[rule]), (rule, started[rule])
    return started
