"""`sync`: the real `stripe` library against a local stand-in of Stripe's API, over HTTP.

The store afterwards is checked through the same queries the API and dashboard use.
"""

import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from finance_core.feed.stripe_api import Backoff, Pager, make_client
from finance_core.feed.sync import SyncError, SyncReport, latest_runs, run_sync
from finance_core.store.db import read_transaction
from finance_core.store.models import subscriptions, sync_runs, webhook_events
from finance_core.views import queries, trends
from finance_core.views.payments import failing_invoice_page
from finance_core.views.recovery import RecoveredTotal, recovered
from tests.conftest import deliver, make_settings
from tests.support import stripe_factory as sf
from tests.support.invoices import invoice as collections_invoice
from tests.support.reads import latest_event
from tests.support.stripe_api import API_KEY, StripeStandIn

ACTIVE = ["active", "trialing", "past_due"]
PLANS = [("prod_sync_basic", "Basic"), ("prod_sync_pro", "Pro"), ("prod_sync_team", "Team")]
STATUSES = ["active"] * 6 + ["trialing", "past_due", "canceled", "canceled", "unpaid", "paused"]


def sync(engine: Engine, stand_in: StripeStandIn, **kwargs: Any) -> SyncReport:
    settings = make_settings(
        str(engine.url.render_as_string(hide_password=False)),
        stripe_api_key=API_KEY,
        stripe_api_base=stand_in.url,
    )
    kwargs.setdefault("pager", Pager(Backoff(first_delay=0.01, max_delay=0.05)))
    return run_sync(engine=engine, client=make_client(settings), actor="tests", **kwargs)


def numbers(engine: Engine) -> dict[str, Any]:
    """Everything a finance user sees, from the shared queries."""
    now = datetime.now(UTC)
    with read_transaction(engine) as conn:
        summary = queries.subscription_summary(conn=conn, active_statuses=ACTIVE, now=now)
        status = queries.stripe_sync_status(conn=conn, delayed_after=600, now=now)
        rows = conn.execute(
            select(subscriptions.c.id, subscriptions.c.status, subscriptions.c.product_id)
        ).all()
        return {
            "active": summary.active_subscriptions,
            "plans": [(p.plan_id, p.plan_name, p.count) for p in summary.plan_distribution],
            "statuses": queries.status_breakdown(conn=conn),
            "failed_payments": status.failed_payments_count,
            "subscriptions": sorted(tuple(row) for row in rows),
        }


def build_world(stand_in: StripeStandIn, subscription_count: int) -> list[dict[str, Any]]:
    """Stripe's current objects in the stand-in, and the webhook history that led there."""
    rng = random.Random(5)
    t = int(time.time()) - 20 * 86400
    history: list[dict[str, Any]] = []
    for product_id, name in PLANS:
        product = sf.product(product_id, name)
        stand_in.put("products", product)
        history.append(sf.event("product.created", product, created=t))
        price = sf.price(f"price_for_{product_id}", product_id)
        stand_in.put("prices", price)
        history.append(sf.event("price.created", price, created=t))
    for n in range(subscription_count):
        sub_id = f"sub_sync_{n:04d}"
        t += 60
        first = sf.subscription(sub_id, "incomplete", rng.choice(PLANS)[0])
        history.append(sf.event("customer.subscription.created", first, created=t))
        final = sf.subscription(sub_id, rng.choice(STATUSES), rng.choice(PLANS)[0])
        final["created"] = t
        history.append(sf.event("customer.subscription.updated", final, created=t + 30))
        stand_in.put("subscriptions", final)
        if n % 7 == 0:  # a failed payment, recovered for every other one
            invoice_id = f"in_sync_{n:04d}"
            failing = sf.invoice(invoice_id, "open", subscription_id=sub_id)
            history.append(sf.event("invoice.payment_failed", failing, created=t + 40))
            if n % 14 == 0:
                paid = sf.invoice(invoice_id, "paid", subscription_id=sub_id)
                history.append(sf.event("invoice.paid", paid, created=t + 50))
                stand_in.put("invoices", paid)
            else:
                stand_in.put("invoices", failing)
    return history


@pytest.mark.slow
def test_sync_brings_an_empty_store_to_the_numbers_webhooks_give(
    engine, http, stripe_api, second_engine
):
    history = build_world(stripe_api, subscription_count=230)
    for event in history:  # the webhook-fed store: the listener's own store
        assert deliver(http, event).status_code == 200
    empty = second_engine

    report = sync(empty, stripe_api)

    synced = numbers(empty)
    assert synced == numbers(engine)
    assert synced["failed_payments"] == sum(1 for n in range(230) if n % 7 == 0 and n % 14)
    assert synced["active"] > 0 and len(synced["plans"]) == 3
    subs = report.objects["subscriptions"]
    assert (subs.fetched, subs.created, subs.failed) == (230, 230, 0)
    assert report.objects["products"].created == 3
    # Auto-pagination: three pages of 100, each after the last id of the one before.
    pages = stripe_api.pages_requested("subscriptions")
    assert [q.get("status") for q in pages] == [["all"]] * 3
    assert "starting_after" not in pages[0]
    assert pages[1]["starting_after"] == ["sub_sync_0130"]
    # Sync is no webhook: the synced store has no delivery, so no "last webhook received".
    with read_transaction(empty) as conn:
        assert latest_event(conn) is None


def test_an_api_answer_never_overwrites_a_newer_webhook_state(engine, http, stripe_api):
    now = int(time.time())
    for product_id, name in PLANS:
        stripe_api.put("products", sf.product(product_id, name))
    # Changed at Stripe after the sync started: the webhook's state is newer than any answer.
    newer = sf.subscription("sub_newer", "canceled", "prod_sync_pro")
    deliver(http, sf.event("customer.subscription.deleted", newer, created=now + 120))
    stripe_api.put("subscriptions", sf.subscription("sub_newer", "active", "prod_sync_pro"))
    # Missed webhook: the store's state is older than the run, Stripe's answer replaces it.
    stale = sf.subscription("sub_stale", "active", "prod_sync_basic")
    deliver(http, sf.event("customer.subscription.updated", stale, created=now - 3600))
    stripe_api.put("subscriptions", sf.subscription("sub_stale", "past_due", "prod_sync_team"))
    # Already right: nothing to change.
    same = sf.subscription("sub_same", "active", "prod_sync_basic")
    deliver(http, sf.event("customer.subscription.created", same, created=now - 7200))
    stripe_api.put("subscriptions", same)

    report = sync(engine, stripe_api)

    tally = report.objects["subscriptions"]
    assert (tally.kept_newer, tally.updated, tally.unchanged) == (1, 1, 1)
    state = dict(numbers(engine)["statuses"])
    assert state == {"canceled": 1, "past_due": 1, "active": 1}
    plans = {name: count for _, name, count in numbers(engine)["plans"]}
    assert plans == {"Team": 1, "Basic": 1}
    # A webhook older than the run, delivered late, no longer moves what sync read.
    late = sf.subscription("sub_stale", "unpaid", "prod_sync_basic")
    deliver(http, sf.event("customer.subscription.updated", late, created=now - 60))
    assert numbers(engine)["statuses"]["past_due"] == 1


def test_sync_waits_out_rate_limits_and_resumes_where_it_stopped(engine, stripe_api):
    build_world(stripe_api, subscription_count=230)
    stripe_api.fail("/v1/subscriptions", 429, times=2, after_pages=1)
    waits: list[float] = []
    pager = Pager(Backoff(first_delay=0.2, max_delay=1.0, sleep=waits.append))

    report = sync(engine, stripe_api, pager=pager)

    assert report.rate_limit_waits == 2 and len(waits) == 2
    assert 0.1 <= waits[0] <= 0.2 and 0.2 <= waits[1] <= 0.4  # exponential, with jitter
    tally = report.objects["subscriptions"]
    assert (tally.fetched, tally.created) == (230, 230)  # none skipped, none read twice
    pages = stripe_api.pages_requested("subscriptions")
    assert [q.get("starting_after") for q in pages] == [
        None,
        ["sub_sync_0130"],
        ["sub_sync_0130"],
        ["sub_sync_0130"],
        ["sub_sync_0030"],
    ]


def test_endless_rate_limiting_stops_with_a_clear_error_and_a_rerun_finishes(engine, stripe_api):
    build_world(stripe_api, subscription_count=150)
    stripe_api.fail("/v1/subscriptions", 429, times=1000, after_pages=1)
    with pytest.raises(SyncError, match="429"):
        sync(engine, stripe_api, pager=Pager(Backoff(max_waits_in_a_row=3, sleep=lambda _: None)))
    # What was read is kept: the products and the first page of subscriptions.
    partial = numbers(engine)
    assert len(partial["subscriptions"]) == 100 and len(partial["plans"]) == 3
    with read_transaction(engine) as conn:
        (run,) = latest_runs(conn=conn)
    assert run.status == "failed" and "429" in (run.error or "")
    assert run.report is not None and run.report.objects["subscriptions"].created == 100

    stripe_api.faults.clear()
    report = sync(engine, stripe_api)
    assert len(numbers(engine)["subscriptions"]) == 150
    assert report.objects["subscriptions"].unchanged == 100
    with read_transaction(engine) as conn:
        assert [r.status for r in latest_runs(conn=conn)] == ["succeeded", "failed"]


def test_a_stripe_server_error_is_retried_by_the_library(engine, stripe_api):
    build_world(stripe_api, subscription_count=20)
    stripe_api.fail("/v1/prices", 500, times=1)
    report = sync(engine, stripe_api)
    assert report.objects["prices"].created == 3
    assert len(stripe_api.pages_requested("prices")) == 2


def test_an_interrupted_sync_keeps_its_pages_and_runs_again_safely(engine, stripe_api):
    build_world(stripe_api, subscription_count=230)

    def interrupt_after_first_page(line: str) -> None:
        if line.startswith("subscriptions"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(engine, stripe_api, progress=interrupt_after_first_page)
    assert len(numbers(engine)["subscriptions"]) == 100
    with read_transaction(engine) as conn:
        assert latest_runs(conn=conn)[0].status == "interrupted"

    sync(engine, stripe_api)
    assert len(numbers(engine)["subscriptions"]) == 230


def test_missed_events_are_recovered_but_are_not_webhook_deliveries(engine, http, stripe_api):
    now = int(time.time())
    delivered = sf.event(
        "product.created", sf.product("prod_sync_basic", "Basic"), created=now - 500
    )
    deliver(http, delivered)
    missed = sf.event(
        "invoice.payment_failed",
        sf.invoice("in_missed", "open", subscription_id="sub_x"),
        created=now - 400,
    )
    too_old = sf.event("product.created", sf.product("prod_old", "Old"), created=now - 40 * 86400)
    for event in (delivered, missed, too_old):
        stripe_api.put("events", {**event, "_delivery_success": False})
    stripe_api.put("events", sf.event("product.updated", sf.product("prod_ok", "Ok")))
    with read_transaction(engine) as conn:
        before = latest_event(conn)

    report = sync(engine, stripe_api)

    events = report.missed_events
    assert (events.fetched, events.recovered, events.already_stored) == (2, 1, 1)
    (query,) = stripe_api.pages_requested("events")
    assert query["delivery_success"] == ["false"]
    assert int(query["created[gte]"][0]) == pytest.approx(now - 30 * 86400, abs=5)
    with read_transaction(engine) as conn:
        row = conn.execute(
            select(webhook_events.c.status, webhook_events.c.deliveries).where(
                webhook_events.c.id == missed["id"]
            )
        ).one()
        assert tuple(row) == ("processed", 0)
        assert latest_event(conn) == before  # still the webhook, not the recovery
    assert numbers(engine)["failed_payments"] == 1


def test_failing_invoices_settled_at_stripe_are_rechecked(engine, http, stripe_api):
    for invoice_id in ("in_paid_meanwhile", "in_unknown", "in_still_failing"):
        failing = sf.invoice(invoice_id, "open", subscription_id="sub_x")
        deliver(http, sf.event("invoice.payment_failed", failing, created=int(time.time()) - 900))
    stripe_api.put("invoices", sf.invoice("in_paid_meanwhile", "paid", subscription_id="sub_x"))
    stripe_api.put("invoices", sf.invoice("in_still_failing", "open", subscription_id="sub_x"))
    assert numbers(engine)["failed_payments"] == 3

    report = sync(engine, stripe_api)

    assert report.failing_invoices_rechecked == 1
    assert report.failing_invoices_missing_at_stripe == 1
    assert any("in_unknown" in error for error in report.errors)
    # Paid meanwhile leaves the count; the one Stripe does not know is left as it was.
    assert numbers(engine)["failed_payments"] == 2


def test_one_malformed_object_is_reported_and_the_rest_applied(engine, stripe_api):
    build_world(stripe_api, subscription_count=10)
    broken = sf.subscription("sub_broken", "active", "prod_sync_pro")
    del broken["items"]
    stripe_api.put("subscriptions", broken)

    report = sync(engine, stripe_api)

    tally = report.objects["subscriptions"]
    assert (tally.fetched, tally.created, tally.failed) == (11, 10, 1)
    assert any("sub_broken" in e and "items" in e for e in report.errors)
    assert "sub_broken" not in {row[0] for row in numbers(engine)["subscriptions"]}
    with read_transaction(engine) as conn:
        stored = latest_runs(conn=conn)[0]
    assert stored.status == "succeeded" and stored.report == report


def test_a_run_left_running_by_a_killed_process_is_marked_interrupted(engine, stripe_api):
    with engine.begin() as conn:
        conn.execute(
            sync_runs.insert().values(
                started_at=datetime(2026, 1, 1, tzinfo=UTC), status="running", triggered_by="cli"
            )
        )
    sync(engine, stripe_api)
    with read_transaction(engine) as conn:
        assert [r.status for r in latest_runs(conn=conn)] == ["succeeded", "interrupted"]


def test_sync_report_survives_its_json(engine, stripe_api):
    build_world(stripe_api, subscription_count=3)
    report = sync(engine, stripe_api)
    assert SyncReport.from_json(report.to_json()) == report
    assert json.loads(report.to_json())["objects"]["subscriptions"]["created"] == 3
    assert report.lines()[1].startswith("products: 3 fetched, 3 new")


def test_synced_objects_keep_no_personal_data(engine, stripe_api):
    build_world(stripe_api, subscription_count=5)
    stripe_api.put(
        "invoices", sf.invoice("in_pii", "open", subscription_id="sub_sync_0001")
    )  # carries the customer's email, name, phone and address
    sync(engine, stripe_api)
    with engine.connect() as conn:
        dump = json.dumps(
            [
                [str(v) for v in row]
                for table in ("invoices", "subscriptions", "sync_runs")
                for row in conn.exec_driver_sql(f"SELECT * FROM {table}")
            ]
        )
    assert "in_pii" in dump
    for personal in ("jane.doe@example.com", "Jane Doe", "+15555550123", "Penguin Way"):
        assert personal not in dump


def test_sync_stores_what_collections_needs_and_sees_a_recovery(engine, http, stripe_api):
    now = int(time.time())
    for invoice_id in ("in_collect", "in_paid_meanwhile"):
        # As a bare webhook may carry them: no lines, customer or next retry.
        failing = sf.invoice(invoice_id, "open", subscription_id="sub_x")
        del failing["customer"]
        deliver(http, sf.event("invoice.payment_failed", failing, created=now - 900))
    stripe_api.put(
        "invoices",
        collections_invoice(
            "in_collect",
            "open",
            product="prod_team",
            shape="pricing",
            customer="cus_7",
            next_attempt=None,
            subscription_id="sub_x",
            attempt_count=4,
        ),
    )
    paid = collections_invoice(
        "in_paid_meanwhile", "paid", subscription_id="sub_x", transitions={"paid_at": now - 60}
    )
    stripe_api.put("invoices", paid)

    sync(engine, stripe_api)

    with read_transaction(engine) as conn:
        [row] = failing_invoice_page(conn=conn).rows
        recovered_this_week = recovered(conn, days=7, now=datetime.now(UTC))
    assert (row.id, row.customer_id, row.product_id) == ("in_collect", "cus_7", "prod_team")
    assert (row.attempts, row.next_retry) == (4, None)
    assert recovered_this_week.totals == [RecoveredTotal("usd", 1, 2900)]
    assert recovered_this_week.recovery_rate == 1.0


def test_sync_reconstructs_a_year_of_trends_from_stripes_own_dates(engine, stripe_api):
    """A fresh store that runs sync shows each day and week as Stripe's dates say, the days
    before the store existed flagged reconstructed."""
    now = datetime.now(UTC)
    today = now.date()
    rng = random.Random(20)
    for product_id, name in PLANS:
        stand_in_product = sf.product(product_id, name)
        stripe_api.put("products", stand_in_product)
    expected: list[tuple[str, str, Any, Any]] = []  # plan, status, start day, end day
    for n in range(150):
        product_id = rng.choice(PLANS)[0]
        status = rng.choice(["active", "trialing", "past_due", "canceled", "incomplete_expired"])
        start = now - timedelta(seconds=rng.randrange(400 * 86_400))
        obj = sf.subscription(f"sub_year_{n:03d}", status, product_id)
        obj.update(created=int(start.timestamp()), start_date=int(start.timestamp()))
        end = None
        if status == "canceled":
            end = start + (now - start) * rng.random()
            obj.update(canceled_at=int(end.timestamp()), ended_at=int(end.timestamp()))
        stripe_api.put("subscriptions", obj)
        expected.append((product_id, status, start.date(), end.date() if end else None))
    sync(engine, stripe_api)

    with read_transaction(engine) as conn:
        answer = trends.subscription_trends(conn=conn, active_statuses=ACTIVE, days=365, now=now)
    assert answer.observed_since == today
    assert [answer.reconstructed(day) for day in answer.window] == [True] * 364 + [False]

    def active_on(plan: str, day: Any) -> int:
        return sum(
            1
            for product_id, status, start, end in expected
            if product_id == plan
            and status != "incomplete_expired"
            and start <= day
            and (end is None or day < end)
        )

    drawn = {plan.product_id: plan.counts for plan in answer.per_plan}
    for product_id, _ in PLANS:
        counts = [active_on(product_id, day) for day in answer.window]
        first = next(n for n, count in enumerate(counts) if count)  # nothing drawn before
        assert drawn[product_id] == (None,) * first + tuple(counts[first:]), product_id

    def monday(day: Any) -> Any:
        return day - timedelta(days=day.weekday())

    weeks = {week.week: (week.new_subscriptions, week.cancellations) for week in answer.weekly}
    assert list(weeks) == sorted(weeks) and set(map(monday, weeks)) == set(weeks)
    for week_of, (new, canceled) in weeks.items():
        assert new == sum(
            1
            for _, s, start, _ in expected
            if s != "incomplete_expired" and monday(start) == week_of
        ), week_of
        assert canceled == sum(1 for *_, end in expected if end and monday(end) == week_of)
    # The last day is today's counts.
    assert sum(counts[-1] or 0 for counts in drawn.values()) == numbers(engine)["active"]
