"""What one listener guarantees, held across the production layout: HAProxy (deploy/haproxy.cfg)
in front of two listener processes (deploy/finance-listener@.service) on one PostgreSQL and one
Redis sends each alert once and resolves each thin event once, and two dashboard processes
(deploy/finance-dashboard.service) share their sign-in throttling through that Redis."""

import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from finance_core.store.db import make_engine, read_transaction
from finance_core.store.models import subscriptions, webhook_events
from tests.conftest import deliver
from tests.support import stripe_factory as sf
from tests.support.accounts import add_users
from tests.support.alerts import assert_rejections_alert
from tests.support.browser import (
    COOKIE_KEY,
    LOCKED,
    PASSWORD,
    new_page,
    sign_in,
    wait_for_attempts,
    wait_until_idle,
)
from tests.support.browser import (
    browser as browser,  # the module's one Chromium
)
from tests.support.cluster import Cluster, running_dashboard_unit
from tests.support.receivers import JsonReceiver, json_receiver
from tests.support.servers import wait_for_rounds
from tests.support.stripe_api import API_KEY, StripeStandIn
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

LISTENER_HEADER = "X-Finance-Listener"  # set by deploy/haproxy.cfg
WRONG_SECRET = "whsec_rotated_away_0123456789abcdef"
OBJECTS = 40


@pytest.fixture
def hook() -> Iterator[JsonReceiver]:
    with json_receiver() as receiver:
        yield receiver


@pytest.fixture
def scale_out_env(hook: JsonReceiver, stripe_api: StripeStandIn) -> dict[str, str]:
    """Both listeners alert to `hook` every second and resolve thin events from the stand-in."""
    return {
        "ALERT_URLS": hook.url(),
        "ALERT_CHECK_SECONDS": "1",
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe_api.url,
    }


def statuses(database_url: str) -> Counter[str]:
    engine = make_engine(database_url)
    try:
        with read_transaction(engine) as conn:
            return Counter(conn.execute(select(webhook_events.c.status)).scalars())
    finally:
        engine.dispose()


def test_each_alert_is_sent_once_and_each_thin_event_resolved_once(
    scale_out: Cluster, hook: JsonReceiver, stripe_api: StripeStandIn
):
    for n in range(OBJECTS):
        stripe_api.put("subscriptions", sf.subscription(f"sub_ha{n}", "active", "prod_ha"))
    assert len(hook.wait_for(1)) == 1  # an empty store: no webhook yet, delayed

    with httpx.Client(base_url=scale_out.url, timeout=30) as http:
        for n in range(24):  # a rotated secret: every delivery refused, by either listener
            event = sf.event("product.created", sf.product(f"prod_{n}", "P"))
            assert deliver(http, event, secret=WRONG_SECRET).json()["error"] == "bad_signature"
        assert len(hook.wait_for(2)) == 2

        thin = [
            sf.thin_event(
                "v1.customer.subscription.updated",
                "subscription",
                f"sub_ha{n % OBJECTS}",
                created=time.time() - 30,
            )
            for n in range(3 * OBJECTS)
        ]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda event: deliver(http, event), thin))
    assert {answer.json()["outcome"] for answer in answers} == {"queued"}
    served = Counter(answer.headers[LISTENER_HEADER] for answer in answers)
    assert set(served) == {listener.name for listener in scale_out.listeners}

    wait_until(lambda: statuses(scale_out.database_url)["processed"] == len(thin))
    assert len(hook.wait_for(3)) == 3  # events arrive again: healthy
    urls = [listener.url for listener in scale_out.listeners]
    wait_for_rounds(urls, "alerts", 3)  # three more evaluations each: nothing new to send
    delayed, rejections, healthy = hook.messages()
    assert delayed.startswith("PenguinMails Finance: Webhook health is delayed")
    assert_rejections_alert(rejections, sent=24)
    assert healthy.startswith("PenguinMails Finance: Webhook health is healthy")

    # Every event settled by one resolver: each object read from Stripe once, or twice when
    # both listeners claimed events about it in the same instant; none still claimed.
    fetched = Counter(stripe_api.retrieves("subscriptions"))
    assert set(fetched) == {f"sub_ha{n}" for n in range(OBJECTS)}
    assert max(fetched.values()) <= 2
    engine = make_engine(scale_out.database_url)
    try:
        with read_transaction(engine) as conn:
            claimed = conn.execute(select(webhook_events.c.claimed_by)).scalars().all()
            kept = Counter(conn.execute(select(subscriptions.c.status)).scalars())
    finally:
        engine.dispose()
    assert set(claimed) == {None} and kept == {"active": OBJECTS}


def test_two_dashboards_share_one_sign_in_lock_through_redis(scale_out: Cluster, browser, tmp_path):
    engine = make_engine(scale_out.database_url)
    add_users(engine, [("lee", ["finance"])], PASSWORD)
    engine.dispose()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")},
        "DATABASE_URL": scale_out.database_url,
        "RATE_LIMIT_STORAGE_URI": scale_out.redis_url,
        "DASHBOARD_COOKIE_KEY": COOKIE_KEY,
    }
    with (
        running_dashboard_unit("dashboard1", env, tmp_path) as first,
        running_dashboard_unit("dashboard2", env, tmp_path) as second,
    ):
        pages = [new_page(browser, first), new_page(browser, second)]
        for n in range(5):  # three wrong passwords on one, two on the other
            sign_in(pages[n % 2], "lee", f"guess number {n}")
            wait_for_attempts(scale_out.database_url, "lee", n + 1)
        # The second saw two failures itself; locked all the same, the right password too.
        for page in reversed(pages):
            sign_in(page, "lee", PASSWORD)
            wait_until_idle(page)
            assert page.get_by_test_id("stAlertContentError").inner_text().strip() == LOCKED
            assert page.get_by_test_id("stMetric").count() == 0
        for page in pages:
            page.context.close()
