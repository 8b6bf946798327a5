"""The dashboard and thin events: what waits for Stripe, API versions, pause reasons (AppTest)."""

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from finance_core.access import audit
from finance_core.feed.events import parse_payload
from finance_core.feed.ingest import ingest_event
from finance_core.feed.resolver import Resolver
from finance_core.feed.stripe_api import make_client
from finance_core.feed.sync import run_sync
from finance_core.store.db import read_transaction
from finance_core.store.models import webhook_events
from finance_core.views.queries import status_breakdown
from tests.conftest import make_settings
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import feed, signed_in, texts
from tests.support.stripe_api import API_KEY

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def queue_thin(engine, payload, *, minutes_ago: float = 0):
    received = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return ingest_event(
        engine=engine,
        event=parse_payload(payload, received_at=received),
        received_at=received,
        raw_payload=json.dumps(payload),
    )


def waiting_without_a_key(engine, count: int) -> None:
    """Thin events that have waited 20 minutes, seen by a listener that has no key."""
    for n in range(count):
        payload = sf.thin_event("v1.invoice.paid", "invoice", f"in_wait{n}")
        assert queue_thin(engine, payload, minutes_ago=20).outcome.value == "queued"
    settings = make_settings(engine.url.render_as_string(hide_password=False))
    resolver = Resolver(engine=engine, settings=settings)
    try:
        resolver.run_once()
    finally:
        resolver.close()


def metric_values(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def test_webhooks_page_shows_waiting_thin_events_and_why(dashboard):
    waiting_without_a_key(dashboard, 3)
    at = signed_in("fiona").switch_page("pages/webhooks.py").run()
    assert not at.exception
    values = metric_values(at)
    assert values["Thin events waiting for Stripe"] == "3"
    assert values["Waiting since"] == "20 min ago"
    assert values["Webhook health"] == "Error"
    assert "STRIPE_API_KEY is not set on the listener" in texts(at)
    assert not [button for button in at.button if button.label == "Resolve now"]


def test_an_admin_makes_waiting_thin_events_due_at_once(dashboard):
    waiting_without_a_key(dashboard, 2)
    with read_transaction(dashboard) as conn:
        due = conn.execute(select(webhook_events.c.next_attempt_at)).scalars().all()
    assert all(moment is not None for moment in due)  # backing off until a key is set

    at = signed_in("ada").switch_page("pages/webhooks.py").run()
    next(button for button in at.button if button.label == "Resolve now").click().run()
    assert not at.exception
    assert "2 thin events are due now" in texts(at)
    with read_transaction(dashboard) as conn:
        due = conn.execute(select(webhook_events.c.next_attempt_at)).scalars().all()
    assert due == [None, None]
    wanted = audit.AuditFilter(action="thin_events_retried")
    entries = list(audit.entries(engine=dashboard, filters=wanted))
    assert [(e.actor, e.action, e.detail) for e in entries] == [
        ("ada", "thin_events_retried", "2 made due at once")
    ]


def test_webhooks_page_lists_the_api_versions_of_the_last_week(dashboard):
    for version, count in [("2025-03-31.basil", 3), ("2020-08-27", 1)]:
        for n in range(count):
            event = sf.event(
                "product.updated", sf.product(f"prod_v{version[:4]}{n}", "P"), api_version=version
            )
            ingest_event(
                engine=dashboard,
                event=parse_payload(event, received_at=datetime.now(UTC)),
                received_at=datetime.now(UTC),
            )
    queue_thin(dashboard, sf.thin_event("v1.product.updated", "product", "prod_thin"))
    # Eight days ago: outside the week.
    old = sf.event("product.updated", sf.product("prod_old", "Old"), api_version="2019-12-03")
    ingest_event(
        engine=dashboard,
        event=parse_payload(old, received_at=datetime.now(UTC)),
        received_at=datetime.now(UTC) - timedelta(days=8),
    )

    at = signed_in("fiona").switch_page("pages/webhooks.py").run()
    assert not at.exception
    versions = next(frame.value for frame in at.dataframe if "API version" in frame.value)
    assert list(
        zip(versions["Kind"], versions["API version"], versions["Events"], strict=True)
    ) == [
        ("snapshot", "2025-03-31.basil", 3),
        ("snapshot", "2020-08-27", 1),
        ("thin", "none (thin events)", 1),
    ]


def test_a_generation_failure_warns_until_a_sync_has_run_since(dashboard, monkeypatch, stripe_api):
    failure = sf.thin_event("v2.core.health.event_generation_failure.resolved", None, None)
    queue_thin(dashboard, failure)

    at = signed_in("fiona").switch_page("pages/webhooks.py").run()
    assert "failed to generate some events" in texts(at)
    assert "An admin can run a sync" in texts(at)

    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", stripe_api.url)
    apptest.forget()
    at = signed_in("ada").switch_page("pages/webhooks.py").run()
    assert [button.label for button in at.button if button.label == "Sync now"] == ["Sync now"]

    settings = make_settings(
        dashboard.url.render_as_string(hide_password=False),
        stripe_api_key=API_KEY,
        stripe_api_base=stripe_api.url,
    )
    run_sync(engine=dashboard, client=make_client(settings), actor="cli:test")
    apptest.forget()
    at = signed_in("ada").switch_page("pages/webhooks.py").run()
    assert not at.exception
    assert "failed to generate some events" not in texts(at)


def test_plans_page_splits_paused_subscriptions_by_reason(dashboard):
    reasons = ["first_payment_failure", "first_payment_failure", "final_payment_failure", None]
    for n, reason in enumerate(reasons):
        sub = sf.subscription(f"sub_pz{n}", "paused", "prod_pz")
        if reason:
            sub["status_details"] = {"paused": {"subscription": {"type": reason}}}
        feed(dashboard, "customer.subscription.paused", sub)
    feed(
        dashboard, "customer.subscription.created", sf.subscription("sub_act", "active", "prod_pz")
    )

    at = signed_in("fiona").switch_page("pages/plans.py").run()
    assert not at.exception
    table = at.dataframe[-1].value
    shown = dict(zip(table["Status"], table["Subscriptions"], strict=True))
    assert shown == {
        "paused: first payment failed": 2,
        "active": 1,
        "paused: final payment failed": 1,
        "paused: no reason given": 1,
    }
    with read_transaction(dashboard) as conn:
        assert sum(shown.values()) == sum(status_breakdown(conn=conn).values())


def test_events_page_filters_pending_thin_events(dashboard):
    payload = sf.thin_event("v1.price.updated", "price", "price_pending")
    queue_thin(dashboard, payload)
    feed(dashboard, "product.created", sf.product("prod_done", "Done"))

    at = signed_in("fiona").switch_page("pages/events.py").run()
    at.selectbox(key="events_status").set_value("pending").run()
    assert not at.exception
    events = at.dataframe[0].value
    assert list(events["Type"]) == ["v1.price.updated"]
    assert list(events["Status"]) == ["pending"]
