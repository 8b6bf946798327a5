"""Thin events through real listener processes: their background worker resolves what they queue.

Without a key the events wait and health says why; with one they are resolved; a listener
killed with events in hand leaves nothing behind; two listeners share the work.
"""

import os
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine, select

from finance_core.access.tokens import create_token
from finance_core.store.db import read_transaction
from finance_core.store.models import subscriptions, webhook_events
from tests.conftest import skip_or_fail
from tests.support import stripe_factory as sf
from tests.support.bursts import ALERTS_EVERY_SECOND, alerts_recovered_without_flapping
from tests.support.redis_server import RedisServer
from tests.support.servers import ListenerProcess, wait_gone
from tests.support.stripe_api import API_KEY, StripeStandIn
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def post(listener: ListenerProcess, event: dict) -> httpx.Response:
    body, headers = sf.signed(event)
    return httpx.post(f"{listener.url}/webhooks/stripe", content=body, headers=headers, timeout=30)


def thin_about(sub_id: str, *, age: float = 30) -> dict:
    return sf.thin_event(
        "v1.customer.subscription.updated", "subscription", sub_id, created=time.time() - age
    )


def statuses(engine: Engine) -> Counter[str]:
    with read_transaction(engine) as conn:
        return Counter(conn.execute(select(webhook_events.c.status)).scalars())


def sync_status(listener: ListenerProcess, token: str) -> dict:
    response = httpx.get(
        f"{listener.url}/api/v1/platform/finance/stripe-sync-status",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def summary(listener: ListenerProcess, token: str) -> dict:
    response = httpx.get(
        f"{listener.url}/api/v1/platform/finance/subscription-summary",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def with_key(stand_in: StripeStandIn) -> dict[str, str]:
    return {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": stand_in.url}


def test_without_a_key_events_wait_then_the_key_resolves_them(engine, database_url, stripe_api):
    for n in range(5):
        stripe_api.put("subscriptions", sf.subscription(f"sub_nk{n}", "active", "prod_nk"))
    token = create_token(
        engine=engine, name="reader", roles=["finance"], actor="cli:test", now=datetime.now(UTC)
    )
    quick = {"WEBHOOK_DELAYED_AFTER": "2", "FINANCE_API_RATE_LIMIT": "10000/minute"}
    listener = ListenerProcess(database_url, **quick).start()
    try:
        for n in range(5):
            response = post(listener, thin_about(f"sub_nk{n}"))
            assert response.json() == {"received": True, "outcome": "queued"}
        # Stored and acknowledged, nothing lost: health turns error once they wait too long.
        data = wait_until(
            lambda: (d := sync_status(listener, token))["webhook_health"] == "error" and d
        )
        assert data["last_webhook_event"]["type"] == "v1.customer.subscription.updated"
        assert summary(listener, token)["active_subscriptions"] == 0
        assert statuses(engine) == {"pending": 5}
        assert stripe_api.log == []
    finally:
        listener.stop()

    listener = ListenerProcess(database_url, **quick, **with_key(stripe_api))
    listener.start()
    try:
        wait_until(lambda: summary(listener, token)["active_subscriptions"] == 5, timeout=30)
        assert statuses(engine) == {"processed": 5}
        # A fresh event is reflected within a few seconds while Stripe answers.
        stripe_api.put("subscriptions", sf.subscription("sub_nk0", "canceled", "prod_nk"))
        queued_at = time.monotonic()
        post(listener, thin_about("sub_nk0", age=0))
        wait_until(lambda: summary(listener, token)["active_subscriptions"] == 4, timeout=15)
        assert time.monotonic() - queued_at < 10
    finally:
        listener.stop()


def test_a_listener_killed_with_events_in_hand_leaves_them_to_the_next(
    engine, database_url, stripe_api
):
    objects = 30
    for n in range(objects):
        stripe_api.put("subscriptions", sf.subscription(f"sub_k9{n}", "trialing", "prod_k9"))
    # Every answer takes a while, so the kill comes with fetches in flight.
    stripe_api.fail("/v1/subscriptions/", 200, times=objects, delay_s=1.5)
    listener = ListenerProcess(database_url, **with_key(stripe_api)).start()
    writer, worker = listener.writer_pid(), listener.worker_pid()
    assert writer and worker
    for n in range(objects):
        assert post(listener, thin_about(f"sub_k9{n}")).status_code == 200
    wait_until(lambda: stripe_api.log, timeout=20)  # the worker has claimed and is fetching

    for pid in (listener.process.pid, writer, worker):
        os.kill(pid, signal.SIGKILL)
    listener.process.wait(timeout=30)
    assert wait_gone(writer) and wait_gone(worker)
    assert statuses(engine)["pending"] > 0  # in flight when it died: still pending

    listener.start()  # the same store; the dead worker's claims expire and are taken again
    try:
        wait_until(lambda: statuses(engine) == {"processed": objects}, timeout=90)
    finally:
        listener.stop()
    with read_transaction(engine) as conn:
        states = set(conn.execute(select(subscriptions.c.status)).scalars())
    assert states == {"trialing"}


def test_two_listeners_on_one_store_resolve_each_event_once(engine, database_url, stripe_api):
    objects = 40
    for n in range(objects):
        stripe_api.put("subscriptions", sf.subscription(f"sub_two{n}", "active", "prod_two"))
    first = ListenerProcess(database_url, **with_key(stripe_api)).start()
    second = ListenerProcess(database_url, **with_key(stripe_api)).start()
    try:
        events = [thin_about(f"sub_two{n % objects}") for n in range(3 * objects)]
        with ThreadPoolExecutor(8) as pool:
            answers = pool.map(
                lambda n: post(first if n % 2 else second, events[n]), range(len(events))
            )
            assert {answer.json()["outcome"] for answer in answers} == {"queued"}
        wait_until(lambda: statuses(engine) == {"processed": len(events)}, timeout=60)
    finally:
        first.stop()
        second.stop()
    fetched = Counter(stripe_api.retrieves("subscriptions"))
    assert set(fetched) == {f"sub_two{n}" for n in range(objects)}
    # Each event settled by one resolver; an object claimed by both at once is read twice.
    assert max(fetched.values()) <= 2
    with read_transaction(engine) as conn:
        rows = conn.execute(
            select(webhook_events.c.processed_at, webhook_events.c.claimed_by)
        ).all()
    assert all(processed is not None and holder is None for processed, holder in rows)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dead_worker_is_replaced_and_its_work_goes_on(engine, database_url, stripe_api):
    stripe_api.put("subscriptions", sf.subscription("sub_w", "active", "prod_w"))
    listener = ListenerProcess(database_url, **with_key(stripe_api)).start()
    try:
        worker = listener.worker_pid()
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        assert wait_gone(worker)
        replacement = wait_until(lambda: (pid := listener.worker_pid()) != worker and pid)
        assert post(listener, thin_about("sub_w")).json()["outcome"] == "queued"
        wait_until(lambda: statuses(engine) == {"processed": 1}, timeout=30)
    finally:
        listener.stop()
    assert wait_gone(replacement)  # the listener ends its worker when it stops


def test_redis_away_for_ten_seconds_mid_burst_fails_no_thin_event(engine, database_url, stripe_api):
    """The pacer's shared window lives in Redis: while it is away the events wait, none is
    marked failed, and once it is back they are all resolved without anyone acting."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("no redis-server binary", package="redis-server")
    objects = 30
    for n in range(objects):
        stripe_api.put("subscriptions", sf.subscription(f"sub_rd{n}", "active", "prod_rd"))
    with RedisServer(binary) as redis:
        listener = ListenerProcess(
            database_url,
            **with_key(stripe_api),
            RATE_LIMIT_STORAGE_URI=redis.url,
            STRIPE_API_MAX_RPS="5",  # the burst takes several seconds to fetch
            **ALERTS_EVERY_SECOND,
        ).start()
        try:
            for n in range(objects):
                assert post(listener, thin_about(f"sub_rd{n}")).status_code == 200
            wait_until(lambda: len(stripe_api.log) >= 3, timeout=30)
            redis.stop()
            outage_ends = time.monotonic() + 10
            seen: Counter[str] = Counter()
            while time.monotonic() < outage_ends:
                seen |= statuses(engine)
                time.sleep(0.2)
            assert seen["failed"] == 0, seen
            assert statuses(engine)["pending"] > 0  # the outage did hold the burst up
            redis.start()
            back = time.monotonic()
            wait_until(lambda: statuses(engine) == {"processed": objects}, timeout=120)
            # Waited out, not backed off for minutes: a few cycles at the paced rate.
            assert time.monotonic() - back < 60, statuses(engine)
            with read_transaction(engine) as conn:
                stored = conn.execute(select(subscriptions.c.id)).scalars().all()
            assert len(stored) == objects
            alerts_recovered_without_flapping(database_url)
        finally:
            listener.stop()
