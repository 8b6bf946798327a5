"""Scale-out as deployed: HAProxy in front of two listener processes, one PostgreSQL, one Redis.

Everything is started from deploy/ (tests/support/cluster.py, the `scale_out` fixture) on
loopback: a crash of one listener mid-burst loses nothing and changes nothing, and the Finance
API's limit is one per token whichever listener answers.
"""

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from finance_core.access.tokens import create_token
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction
from finance_core.store.models import (
    invoices,
    prices,
    products,
    subscription_counts,
    subscriptions,
    webhook_events,
)
from finance_core.views.queries import stripe_sync_status, subscription_summary
from tests.support import stripe_factory as sf
from tests.support.api import SUMMARY, SYNC_STATUS, bearer
from tests.support.bursts import burst
from tests.support.cluster import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LISTENER_HEADER = "X-Finance-Listener"  # set by deploy/haproxy.cfg
ACTIVE = ["active", "trialing", "past_due"]  # ACTIVE_SUBSCRIPTION_STATUSES' default


@pytest.fixture
def scale_out_env() -> dict[str, str]:
    """The listeners' settings here: the SPEC's default limit, spelled out for the limit test."""
    return {"FINANCE_API_RATE_LIMIT": "100/minute"}


def stripe_like_burst(count: int, *, seed: int) -> list[dict[str, Any]]:
    """`count` deliveries over 300 subscriptions and their invoices: 5% duplicates, and
    arrivals out of order within windows of 50 (`created` no longer rises)."""
    rng = random.Random(seed)
    distinct = canceled_stays_canceled(
        paid_stays_paid(burst(count - count // 20, seed=seed, subscriptions_n=300))
    )
    deliveries = list(distinct)
    for _ in range(count // 20):
        deliveries.insert(rng.randrange(len(deliveries) + 1), rng.choice(distinct))
    for start in range(0, len(deliveries), 50):
        window = deliveries[start : start + 50]
        rng.shuffle(window)
        deliveries[start : start + 50] = window
    return deliveries


def paid_stays_paid(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`events` (in `created` order), where an invoice once paid stays paid, as in Stripe.

    `burst` draws invoice events freely; in Stripe paid is final, so every failure of a
    failing invoice belongs to one run and its "failing since" is the earliest of them,
    whatever order they arrive in.
    """
    paid: set[str] = set()
    settled = []
    for event in events:
        obj = event["data"]["object"]
        if obj["object"] == "invoice" and obj["id"] in paid and event["type"] != "invoice.paid":
            again = {**obj, "status": "paid", "amount_paid": obj["amount_due"]}
            event = {**event, "type": "invoice.paid", "data": {"object": again}}
        if event["type"] == "invoice.paid":
            paid.add(obj["id"])
        settled.append(event)
    return settled


def canceled_stays_canceled(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`events` (in `created` order), where a subscription once canceled stays canceled, as in
    Stripe: every event saying canceled tells of one cancellation, so the earliest dates it
    (the burst's payloads carry no cancel dates), whatever order they arrive in."""
    canceled: set[str] = set()
    settled = []
    for event in events:
        obj = event["data"]["object"]
        if obj["object"] == "subscription":
            if obj["id"] in canceled and obj["status"] != "canceled":
                event = {**event, "data": {"object": {**obj, "status": "canceled"}}}
            if event["data"]["object"]["status"] == "canceled":
                canceled.add(obj["id"])
        settled.append(event)
    return settled


@dataclass
class Redelivery:
    """What a Stripe-like sender saw: every delivery retried until it got a 2xx."""

    acknowledged: set[str] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)  # status code or transport error
    served_after_crash: Counter[str] = field(default_factory=Counter)


def deliver_until_acknowledged(
    url: str,
    events: list[dict[str, Any]],
    *,
    connections: int,
    crash_after_acks: int,
    crash: Any,
) -> Redelivery:
    """POST every event over `connections` keep-alive connections, each retried (as Stripe
    does, if faster) until a 2xx; `crash()` runs once `crash_after_acks` have been answered."""
    seen = Redelivery()
    lock = threading.Lock()
    crashed = threading.Event()
    acks = 0
    deadline = time.monotonic() + 120

    def send(chunk: list[dict[str, Any]]) -> None:
        nonlocal acks
        with httpx.Client(base_url=url, timeout=10) as client:
            for event in chunk:
                body, headers = sf.signed(event)
                while True:
                    assert time.monotonic() < deadline, "deliveries still not acknowledged"
                    after_crash = crashed.is_set()
                    try:
                        response = client.post("/webhooks/stripe", content=body, headers=headers)
                    except httpx.TransportError as exc:
                        with lock:
                            seen.failures[type(exc).__name__] += 1
                        time.sleep(0.05)
                        continue
                    if not response.is_success:
                        with lock:
                            seen.failures[str(response.status_code)] += 1
                        time.sleep(0.05)
                        continue
                    with lock:
                        seen.acknowledged.add(event["id"])
                        if after_crash:
                            seen.served_after_crash[response.headers[LISTENER_HEADER]] += 1
                        acks += 1
                        crash_now = acks == crash_after_acks
                    if crash_now:
                        crash()
                        crashed.set()
                    break

    with ThreadPoolExecutor(max_workers=connections) as pool:
        list(pool.map(send, [events[i::connections] for i in range(connections)]))
    return seen


def object_tables(engine: Engine) -> dict[str, list[Any]]:
    """Every object table, row by row, without the arrival times a different run changes."""
    dump: dict[str, list[Any]] = {}
    with read_transaction(engine) as conn:
        for table in (products, prices, subscriptions, invoices, subscription_counts):
            columns = [column for column in table.c if column.name != "updated_at"]
            dump[table.name] = sorted(conn.execute(select(*columns)).all())
        dump["webhook_events"] = sorted(
            conn.execute(
                select(webhook_events.c.id, webhook_events.c.type, webhook_events.c.status)
            ).all()
        )
    return dump


def finance_numbers(summary: dict[str, Any], sync_status: dict[str, Any]) -> dict[str, Any]:
    """The Finance API's figures that do not depend on when or in which order events came."""
    return {
        "active_subscriptions": summary["active_subscriptions"],
        "plan_distribution": sorted(
            (plan["plan_id"], plan["plan_name"], plan["count"])
            for plan in summary["plan_distribution"]
        ),
        "failed_payments_count": sync_status["failed_payments_count"],
        "webhook_health": sync_status["webhook_health"],
    }


def clean_run(tmp_path: Any, events: list[dict[str, Any]]) -> Engine:
    """The same events into a fresh store, one by one, in process."""
    engine = make_engine(f"sqlite:///{tmp_path}/clean.db")
    migrate.upgrade(engine)
    for event in events:
        ingest_event(
            engine=engine, event=StripeEvent.from_payload(event), received_at=datetime.now(UTC)
        )
    return engine


def test_a_listener_killed_mid_burst_loses_nothing_and_the_store_equals_a_clean_run(
    scale_out: Cluster, tmp_path
):
    events = stripe_like_burst(5000, seed=16)
    crashed, survivor = scale_out.listeners
    redelivery = deliver_until_acknowledged(
        scale_out.url,
        events,
        connections=16,
        crash_after_acks=1500,
        crash=crashed.kill_with_writer,
    )
    assert redelivery.acknowledged == {event["id"] for event in events}, redelivery.failures
    # HAProxy routed around the dead listener: everything sent after the crash went to the
    # other one, and its health checks took the dead one out of rotation.
    assert set(redelivery.served_after_crash) == {survivor.name}
    scale_out.wait_states({crashed.name: "DOWN", survivor.name: "UP"})

    store = make_engine(scale_out.database_url)
    token = create_token(
        engine=store, name="scale-out", roles=["finance"], actor="tests", now=datetime.now(UTC)
    )
    with httpx.Client(base_url=scale_out.url, headers=bearer(token), timeout=10) as http:
        served = finance_numbers(
            http.get(SUMMARY).json()["data"], http.get(SYNC_STATUS).json()["data"]
        )
    distinct = list({event["id"]: event for event in events}.values())
    clean = clean_run(tmp_path, distinct)
    try:
        with read_transaction(store) as conn:
            stored = set(conn.execute(select(webhook_events.c.id)).scalars())
        assert redelivery.acknowledged <= stored  # no acknowledged event is missing
        assert object_tables(store) == object_tables(clean)
        with read_transaction(clean) as conn:
            now = datetime.now(UTC)
            summary = subscription_summary(conn=conn, active_statuses=ACTIVE, now=now)
            status = stripe_sync_status(conn=conn, delayed_after=600, now=now)
        expected = {
            "active_subscriptions": summary.active_subscriptions,
            "plan_distribution": sorted(
                (str(plan.plan_id), plan.plan_name, plan.count)
                for plan in summary.plan_distribution
            ),
            "failed_payments_count": status.failed_payments_count,
            "webhook_health": status.webhook_health,
        }
        assert served == expected
    finally:
        store.dispose()
        clean.dispose()


def test_one_finance_api_limit_per_token_across_both_listeners(scale_out: Cluster):
    """100 requests a minute per token in all, through HAProxy or straight to a listener."""
    store = make_engine(scale_out.database_url)
    token = create_token(
        engine=store, name="shared", roles=["finance"], actor="tests", now=datetime.now(UTC)
    )
    store.dispose()
    answered_by: Counter[str] = Counter()
    with httpx.Client(base_url=scale_out.url, headers=bearer(token), timeout=10) as http:
        for n in range(100):
            response = http.get(SUMMARY if n % 2 else SYNC_STATUS)
            assert response.status_code == 200, response.text
            assert response.headers["X-RateLimit-Remaining"] == str(99 - n)
            answered_by[response.headers[LISTENER_HEADER]] += 1
        over = http.get(SUMMARY)
    assert set(answered_by) == {listener.name for listener in scale_out.listeners}
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited"
    for listener in scale_out.listeners:  # whichever listener answers
        direct = httpx.get(f"{listener.url}{SUMMARY}", headers=bearer(token), timeout=10)
        assert direct.status_code == 429
        assert direct.headers["X-RateLimit-Remaining"] == "0"


def test_listeners_whose_database_is_unreachable_leave_rotation_and_come_back(
    scale_out: Cluster, postgres_server
):
    """/healthz is 503 without the database: HAProxy stops routing, then routes again."""
    names = [listener.name for listener in scale_out.listeners]
    event = sf.event("customer.subscription.created", sf.subscription("sub_x", "active", "p_x"))
    body, headers = sf.signed(event)
    postgres_server.pause()
    try:
        scale_out.wait_states(dict.fromkeys(names, "DOWN"))
        during = httpx.post(f"{scale_out.url}/webhooks/stripe", content=body, headers=headers)
        assert during.status_code == 503  # HAProxy's own: no listener in rotation
    finally:
        postgres_server.resume()
    scale_out.wait_states(dict.fromkeys(names, "UP"))
    after = httpx.post(f"{scale_out.url}/webhooks/stripe", content=body, headers=headers)
    assert after.json() == {"received": True, "outcome": "processed"}
