"""The demo: a store filled through the real ingest path opens healthy on a believable year
(start dates over 12+ months, 2-5% monthly churn, failing invoices with attempts and next
retries, recovered and voided ones), and the admins' broken-event button on the Webhooks page
works in demo mode only."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from finance_core import demo
from finance_core.access import audit
from finance_core.feed.events import Outcome
from finance_core.store.db import read_transaction
from finance_core.store.models import subscription_history
from finance_core.views import changes
from finance_core.views.payments import failing_invoice_page, failing_totals
from finance_core.views.queries import stripe_sync_status, subscription_summary
from finance_core.views.trends import active_per_plan_per_day
from tests.support import apptest
from tests.support import stripe_factory as sf
from tests.support.apptest import feed, forget, signed_in, texts

ACTIVE = ["active", "trialing", "past_due"]
WEBHOOKS_PAGE = "pages/webhooks.py"

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def year():
    made = demo.world()
    return made, demo.backfill(made)


def objects(events, kind):
    """The last state of each object of `kind` the events carry, by id (as the store keeps)."""
    last = {}
    for event in sorted(events, key=lambda event: event["created"]):
        obj = event["data"]["object"]
        if obj["object"] == kind:
            last[obj["id"]] = (event["type"], obj)
    return last


def test_start_dates_spread_over_more_than_a_year_growing(year):
    _, events = year
    starts = [obj["start_date"] for _, obj in objects(events, "subscription").values()]
    first, last = datetime.fromtimestamp(min(starts), UTC), datetime.fromtimestamp(max(starts), UTC)
    assert last - first >= timedelta(days=365)
    half = first + (last - first) / 2
    older = sum(datetime.fromtimestamp(s, UTC) < half for s in starts)
    assert older < len(starts) - older  # more sign-ups lately: a business that grows
    for _, obj in objects(events, "subscription").values():
        assert obj["created"] == obj["start_date"]
        if obj["status"] == "canceled":
            assert obj["canceled_at"] and obj["ended_at"] >= obj["start_date"]
        assert "demo" in obj["id"] and "demo" in obj["customer"]


def test_failing_invoices_carry_customer_attempts_next_retry_and_their_plan(year):
    _, events = year
    plans = {
        sub_id: obj["items"]["data"][0]["price"]["product"]
        for sub_id, (_, obj) in objects(events, "subscription").items()
    }
    invoices = objects(events, "invoice")
    failing = [obj for kind, obj in invoices.values() if kind == "invoice.payment_failed"]
    assert len(failing) >= 10
    for obj in failing:
        assert obj["status"] == "open" and obj["customer"].startswith("cus_demo_")
        assert 1 <= obj["attempt_count"] <= 4
        sub_id = obj["parent"]["subscription_details"]["subscription"]
        assert obj["lines"]["data"][0]["price"]["product"] == plans[sub_id]
    retries = [obj["next_payment_attempt"] for obj in failing]
    assert None in retries and any(retries)  # some retried later, some given up on
    assert all(obj["attempt_count"] == 4 for obj in failing if obj["next_payment_attempt"] is None)
    kinds = [kind for kind, _ in invoices.values()]
    assert kinds.count("invoice.paid") >= 5  # failed, then paid on a retry: recovered
    assert kinds.count("invoice.voided") >= 3
    for kind, obj in invoices.values():
        if kind == "invoice.paid":
            assert obj["attempt_count"] >= 2 and obj["next_payment_attempt"] is None


def test_the_demo_store_opens_healthy_on_a_year_with_believable_churn(engine):
    outcomes = demo.fill_store(engine=engine, now=now)
    assert outcomes[Outcome.FAILED] == 0
    today = now().date()
    with read_transaction(engine) as conn:
        status = stripe_sync_status(conn=conn, delayed_after=600, now=now())
        summary = subscription_summary(conn=conn, active_statuses=ACTIVE, now=now())
        failing = failing_invoice_page(conn=conn, limit=500).rows
        failed_changes = changes.failed_payment_changes(
            conn=conn, failed_now=status.failed_payments_count, now=now()
        )
        totals = failing_totals(conn=conn)
        start = today - timedelta(days=390)
        series = active_per_plan_per_day(
            conn=conn, active_statuses=ACTIVE, start=start, end=today + timedelta(days=1)
        )
        canceled = dict(
            conn.execute(
                select(
                    subscription_history.c.day, func.sum(subscription_history.c.cancellations)
                ).group_by(subscription_history.c.day)
            ).all()
        )
    assert status.webhook_health == "healthy" and status.unresolved_failed_events == 0
    assert len(summary.plan_distribution) == 4 and summary.active_subscriptions > 150
    assert sum(plan.counts[-1] or 0 for plan in series) == summary.active_subscriptions
    assert {len(totals) >= 2, all(1 <= row.attempts <= 4 for row in failing)} == {True}
    assert sum(total.invoices for total in totals) == status.failed_payments_count >= 10
    # The Overview shows how failed payments moved from the first run on.
    assert failed_changes.since_yesterday is not None
    assert failed_changes.since_last_week is not None
    # Each of the last 12 months: cancellations over the active at its start; 2-5% on average.
    active_on = {
        day: sum(plan.counts[n] or 0 for plan in series) for n, day in enumerate(series[0].days)
    }
    rates = []
    for month in range(12, 0, -1):
        first = today - timedelta(days=30 * month)
        days = [first + timedelta(days=n) for n in range(30)]
        left = sum(int(canceled.get(day, canceled.get(day.isoformat(), 0)) or 0) for day in days)
        rates.append(left / active_on[first])
    assert active_on[today - timedelta(days=360)] > 0
    assert active_on[today - timedelta(days=360)] * 3 < summary.active_subscriptions
    assert 0.02 <= sum(rates) / len(rates) <= 0.05, rates


def webhooks_page(username="ada"):
    return signed_in(username).switch_page(WEBHOOKS_PAGE).run()


def button(at, label):
    return next((b for b in at.button if b.label == label), None)


def test_an_admin_of_a_demo_store_sends_a_broken_event_audited(dashboard):
    demo.fill_store(engine=dashboard, now=now, subscriptions=20)
    forget()
    assert button(webhooks_page("fiona"), "Send a broken event") is None  # finance only
    at = webhooks_page()
    assert "No failed events" in texts(at)
    button(at, "Send a broken event").click().run()
    assert not at.exception
    assert "it failed to apply, as meant" in texts(at)
    at = webhooks_page()
    assert "Failed events" in [header.value for header in at.subheader]
    assert len(at.dataframe) >= 1 and button(at, "Replay") is not None
    with read_transaction(dashboard) as conn:
        status = stripe_sync_status(conn=conn, delayed_after=600, now=now())
    assert status.webhook_health == "error" and status.unresolved_failed_events == 1
    entries = audit.entries(
        engine=dashboard, filters=audit.AuditFilter(action="demo_broken_event_sent")
    )
    assert [entry.actor for entry in entries] == ["ada"]


def test_no_broken_event_button_outside_demo_mode(dashboard):
    feed(dashboard, "product.created", sf.product("prod_real", "Real"))
    forget()
    at = webhooks_page()
    assert not at.exception
    assert button(at, "Send a broken event") is None
    with pytest.raises(demo.NotADemoStore):
        demo.send_broken_event(engine=dashboard, actor="ada", now=now())


def test_the_trickle_keeps_the_years_rates():
    made = demo.world(subscriptions=600)
    live = ("active", "trialing", "past_due")
    active_before = sum(sub.status in live for sub in made.subscriptions)
    before = len(made.subscriptions)
    clock, events = made.now, []
    for _ in range(30 * 24):  # a month, an hour at a time
        clock += 3600
        happened = made.tick(clock, 3600)
        assert happened  # never a quiet hour: health stays live
        events += happened
    canceled = sum(event["type"] == "customer.subscription.deleted" for event in events)
    assert 0.02 <= canceled / active_before <= 0.05
    assert len(made.subscriptions) - before > canceled  # still growing
    assert any(event["type"] == "invoice.payment_failed" for event in events)
