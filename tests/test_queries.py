"""The numbers of SPEC section 5 for a non-trivial store, and health over time."""

import itertools
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from finance_core.feed.ingest import StripeEvent, dismiss_event, ingest_event, replay_event
from finance_core.store import migrate, statements
from finance_core.store.db import make_engine, read_transaction, statement_reads
from finance_core.store.models import subscriptions, webhook_events
from finance_core.views.queries import (
    plan_id_for,
    status_breakdown,
    stripe_sync_status,
    subscription_summary,
)
from tests.support import stripe_factory as sf

ACTIVE = ["active", "trialing", "past_due"]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_created = itertools.count(1_790_000_000)


def feed(engine, event_type, obj, *, at=T0, livemode=False, created=None):
    event = sf.event(
        event_type,
        obj,
        livemode=livemode,
        created=created if created is not None else next(_created),
    )
    return ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=at)


def summary(engine, now=T0):
    with read_transaction(engine) as conn:
        return subscription_summary(conn=conn, active_statuses=ACTIVE, now=now)


def sync_status(engine, now):
    with read_transaction(engine) as conn:
        return stripe_sync_status(conn=conn, delayed_after=600, now=now)


def build_scenario(engine):
    """3 named plans, one unnamed; 11 subscriptions in 6 statuses; 3 failing invoices."""
    for product_id, name in [
        ("prod_starter", "Starter"),
        ("prod_pro", "Pro"),
        ("prod_biz", "Business"),
    ]:
        feed(engine, "product.created", sf.product(product_id, name))
    plan_of = {
        "active": ["prod_pro"] * 3 + ["prod_starter"] * 2,
        "trialing": ["prod_starter", "prod_biz"],
        "past_due": ["prod_pro", "prod_mystery"],
        "canceled": ["prod_pro"],
        "incomplete_expired": ["prod_biz"],
        "unpaid": ["prod_biz"],
    }
    n = 0
    for status, plans in plan_of.items():
        for product_id in plans:
            n += 1
            feed(
                engine,
                "customer.subscription.created",
                sf.subscription(f"sub_s{n}", "incomplete", product_id),
            )
            feed(
                engine,
                "customer.subscription.updated",
                sf.subscription(f"sub_s{n}", status, product_id),
            )
    # One subscription moved from Starter to Pro: it counts once, under Pro.
    feed(engine, "customer.subscription.updated", sf.subscription("sub_s4", "active", "prod_pro"))
    for number in range(1, 6):
        feed(
            engine,
            "invoice.payment_failed",
            sf.invoice(f"in_{number}", "open", subscription_id=f"sub_s{number}"),
        )
    feed(engine, "invoice.paid", sf.invoice("in_1", "paid"))
    feed(engine, "invoice.voided", sf.invoice("in_2", "void"))
    # A second failed attempt on the same invoice is still one failed payment.
    feed(engine, "invoice.payment_failed", sf.invoice("in_3", "open", attempt_count=2))


def test_summary_counts_each_active_subscription_once_by_plan(engine):
    build_scenario(engine)
    result = summary(engine)
    assert result.active_subscriptions == 9
    assert [(p.plan_name, p.count) for p in result.plan_distribution] == [
        ("Pro", 5),
        ("Starter", 2),
        ("Business", 1),
        ("prod_mystery", 1),
    ]
    assert sum(p.count for p in result.plan_distribution) == result.active_subscriptions
    assert result.plan_distribution[0].plan_id == plan_id_for("prod_pro")
    assert result.as_of == T0
    assert result.stripe_dashboard_url == "https://dashboard.stripe.com/test/revenue"


def test_status_breakdown_covers_every_subscription(engine):
    build_scenario(engine)
    with read_transaction(engine) as conn:
        breakdown = status_breakdown(conn=conn)
    assert breakdown == {
        "active": 5,
        "trialing": 2,
        "past_due": 2,
        "canceled": 1,
        "incomplete_expired": 1,
        "unpaid": 1,
    }


def test_active_statuses_are_configurable(engine):
    build_scenario(engine)
    with read_transaction(engine) as conn:
        only_active = subscription_summary(conn=conn, active_statuses=["active"], now=T0)
    assert only_active.active_subscriptions == 5


def test_a_status_with_a_quote_is_a_value_not_sql(engine):
    """The statuses go into the statement's text (see statements._compiled): quoted."""
    build_scenario(engine)
    with read_transaction(engine) as conn:
        odd = subscription_summary(conn=conn, active_statuses=["active'); --", "trialing"], now=T0)
        assert odd.active_subscriptions == summary_of(conn, ["trialing"]).active_subscriptions


def summary_of(conn, statuses):
    return subscription_summary(conn=conn, active_statuses=statuses, now=T0)


def test_a_statement_with_its_values_in_its_text_refuses_parameters(engine):
    with read_transaction(engine) as conn, pytest.raises(TypeError, match="no parameters"):
        statements.run(conn, select(subscriptions.c.id).limit(1), {"id": "sub_1"})


def test_the_answers_are_planned_once_on_postgresql(postgres_server):
    """Prepared without parameters, PostgreSQL keeps one plan: planning each run cost 150 us."""
    engine = make_engine(postgres_server.create_database("planned_once"))
    migrate.upgrade(engine)
    build_scenario(engine)
    engine.dispose()  # a new connection, with none of the ingest's statements prepared
    with statement_reads(engine) as conn:
        for _ in range(10):
            summary_of(conn, ACTIVE)
            stripe_sync_status(conn=conn, delayed_after=3600, now=T0)
        plans = conn.exec_driver_sql(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
        ).all()
    engine.dispose()
    assert len(plans) == 2  # psycopg prepares a statement from its fifth run on
    assert all(custom == 0 and generic > 0 for generic, custom in plans), plans


def test_plan_ids_never_change_between_releases():
    # Other services store plan_id: this value must survive every rebuild and release.
    assert str(plan_id_for("prod_pro")) == "16210c68-9500-569e-81d1-ad50804a0687"
    assert plan_id_for("prod_pro") != plan_id_for("prod_starter")


def test_failed_payments_count_distinct_open_failing_invoices(engine):
    build_scenario(engine)
    assert sync_status(engine, T0).failed_payments_count == 3


def test_health_moves_from_delayed_to_healthy_to_delayed_to_error(engine):
    first = sync_status(engine, T0)
    assert (first.webhook_health, first.last_event, first.last_webhook_received) == (
        "delayed",
        None,
        None,
    )
    assert first.health_reason == "no webhook has been received yet"

    feed(engine, "product.created", sf.product("prod_h", "Health"), at=T0, created=1_790_000_500)
    healthy = sync_status(engine, T0 + timedelta(seconds=599))
    assert healthy.webhook_health == "healthy"
    assert healthy.last_webhook_received == T0
    assert healthy.last_event.type == "product.created"
    assert healthy.last_event.created == datetime.fromtimestamp(1_790_000_500, UTC)

    quiet = sync_status(engine, T0 + timedelta(seconds=601))
    assert quiet.webhook_health == "delayed"
    assert quiet.health_reason == "no webhook for more than 10 minutes"

    later = T0 + timedelta(seconds=700)
    result = feed(
        engine,
        "customer.subscription.updated",
        {"id": "sub_bad", "object": "subscription"},
        at=later,
    )
    assert result.outcome == "failed"
    broken = sync_status(engine, later)
    assert broken.webhook_health == "error"
    assert "1 event failed" in broken.health_reason

    dismiss_event(engine=engine, event_id=result.event_id, actor="alice", now=T0)
    assert sync_status(engine, later).webhook_health == "healthy"


def test_a_duplicate_delivery_is_the_latest_webhook(engine):
    event = sf.event("product.created", sf.product("prod_dup", "Dup"), created=1_790_000_000)
    parsed = StripeEvent.from_payload(event)
    ingest_event(engine=engine, event=parsed, received_at=T0)
    feed(engine, "product.created", sf.product("prod_other", "Other"), at=T0 + timedelta(seconds=5))
    ingest_event(engine=engine, event=parsed, received_at=T0 + timedelta(seconds=10))
    status = sync_status(engine, T0 + timedelta(seconds=11))
    assert status.last_event.id == event["id"]
    assert status.last_webhook_received == T0 + timedelta(seconds=10)


def test_test_mode_follows_the_latest_event(engine):
    assert summary(engine).stripe_dashboard_url == "https://dashboard.stripe.com/revenue"
    feed(engine, "product.created", sf.product("prod_t", "T"), at=T0, livemode=False)
    assert (
        sync_status(engine, T0).stripe_dashboard_url == "https://dashboard.stripe.com/test/payments"
    )
    feed(
        engine,
        "product.created",
        sf.product("prod_l", "L"),
        at=T0 + timedelta(seconds=1),
        livemode=True,
    )
    assert sync_status(engine, T0).stripe_dashboard_url == "https://dashboard.stripe.com/payments"
    assert summary(engine).stripe_dashboard_url == "https://dashboard.stripe.com/revenue"


def test_replay_heals_a_failed_event_without_counting_as_a_delivery(engine):
    broken = sf.subscription("sub_rp", "active", "prod_rp")
    broken["items"] = "not a list"
    event = sf.event("customer.subscription.created", broken)
    parsed = StripeEvent.from_payload(event)
    assert ingest_event(engine=engine, event=parsed, received_at=T0).outcome == "failed"

    import json

    event["data"]["object"] = sf.subscription("sub_rp", "active", "prod_rp")
    later = T0 + timedelta(hours=1)
    result = replay_event(engine=engine, event_id=event["id"], now=later, payload=json.dumps(event))
    assert result.outcome == "processed"
    status = sync_status(engine, later)
    assert status.webhook_health == "delayed"  # the replay is no delivery: last one was at T0
    assert status.last_webhook_received == T0
    assert summary(engine).active_subscriptions == 1


def test_a_batch_with_one_failing_event_fails_only_that_event(engine):
    from finance_core.feed.ingest import Delivery, ingest_batch

    good = sf.event("customer.subscription.created", sf.subscription("sub_b1", "active", "prod_b"))
    bad = sf.event("customer.subscription.updated", {"id": "sub_b2", "object": "subscription"})
    twin = dict(good)  # the same delivery twice in one batch: applied once
    results = ingest_batch(
        engine=engine,
        deliveries=[Delivery(StripeEvent.from_payload(e), T0) for e in (good, bad, twin)],
    )
    assert [r.outcome for r in results] == ["processed", "failed", "duplicate"]
    assert summary(engine).active_subscriptions == 1
    assert sync_status(engine, T0).webhook_health == "error"

    clean = [sf.event("product.created", sf.product(f"prod_c{n}", f"C{n}")) for n in range(3)]
    results = ingest_batch(
        engine=engine, deliveries=[Delivery(StripeEvent.from_payload(e), T0) for e in clean]
    )
    assert [r.outcome for r in results] == ["processed"] * 3


def test_a_batch_claims_an_id_given_twice_once(engine):
    from finance_core.feed.ingest import Delivery, ingest_batch

    created = sf.event(
        "customer.subscription.created", sf.subscription("sub_t1", "active", "prod_t")
    )
    other = sf.event("product.created", sf.product("prod_t", "Team"))
    deliveries = [Delivery(StripeEvent.from_payload(e), T0) for e in (created, other, created)]
    results = ingest_batch(engine=engine, deliveries=deliveries)
    assert [r.outcome for r in results] == ["processed", "processed", "duplicate"]
    with read_transaction(engine) as conn:
        rows = conn.execute(select(webhook_events.c.id, webhook_events.c.deliveries))
        deliveries_of = {row.id: row.deliveries for row in rows}
    assert deliveries_of == {created["id"]: 2, other["id"]: 1}
    assert summary(engine).active_subscriptions == 1


@pytest.mark.postgres
def test_a_database_error_in_a_pipelined_batch_fails_only_its_event(postgres_server):
    """PostgreSQL reports a statement's error only when the batch is sent; the rest still land."""
    from finance_core.feed.ingest import Delivery, ingest_batch
    from finance_core.store import migrate
    from finance_core.store.db import make_engine

    engine = make_engine(postgres_server.create_database("finance_pipeline_error"))
    migrate.upgrade(engine)
    # An attempt count beyond the column's integer range: no check in Python catches it, the
    # server refuses it.
    out_of_range = sf.invoice("in_p2", "open", attempt_count=2**40)
    events = [
        sf.event("customer.subscription.created", sf.subscription("sub_p1", "active", "prod_p")),
        sf.event("invoice.payment_failed", out_of_range),
        sf.event("customer.subscription.created", sf.subscription("sub_p3", "active", "prod_p")),
    ]
    try:
        results = ingest_batch(
            engine=engine, deliveries=[Delivery(StripeEvent.from_payload(e), T0) for e in events]
        )
        # The error may surface at a later statement of the batch or at its end: either way
        # the batch is applied again one delivery at a time, and the error lands on its event.
        assert [r.outcome for r in results] == ["processed", "failed", "processed"]
        assert "out of range" in (results[1].error or "")
        assert summary(engine).active_subscriptions == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_two_batches_reaching_for_rows_in_opposite_orders_take_turns(
    postgres_server, monkeypatch, caplog
):
    """Two listener processes' batches, each holding a subscription row the other needs next,
    deadlocked on PostgreSQL before the writers' advisory lock (SPEC 20). Now the second waits
    for the whole of the first, before any row, and both land without a deadlock or a retry."""
    import threading

    from sqlalchemy import text

    from finance_core.feed import handlers
    from finance_core.feed.ingest import Delivery, ingest_batch
    from finance_core.store import migrate
    from finance_core.store.db import make_engine
    from tests.support.postgres import deadlocks
    from tests.support.waiting import wait_until

    caplog.set_level(logging.INFO, logger="finance_core.feed.ingest")
    url = postgres_server.create_database("finance_deadlock")
    engine = make_engine(url)
    migrate.upgrade(engine)

    for sub in ("sub_d1", "sub_d2"):
        feed(engine, "customer.subscription.created", sf.subscription(sub, "active", "prod_d"))
    first_of_batch = threading.local()
    first_holds = threading.Event()
    other_waited = threading.Event()  # for the writers' lock, while this batch held a row
    real = handlers.HANDLERS["customer.subscription.updated"]

    def waiting_writers() -> int:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar_one()

    def holding(conn, event, received_at):
        change = real(conn, event, received_at)
        if not getattr(first_of_batch, "done", False):
            first_of_batch.done = True
            # Read the row back: in a pipeline this waits until the upsert has run, so the
            # batch does hold its lock; then hold it until the other batch is waiting.
            statements.fetch_one(
                conn, statements.lock(subscriptions), {"object_id": event.object["id"]}
            )
            if event.object["id"] == "sub_d1":
                first_holds.set()
                wait_until(lambda: waiting_writers() == 1, timeout=10, what="the other batch")
                other_waited.set()
        return change

    monkeypatch.setitem(handlers.HANDLERS, "customer.subscription.updated", holding)

    def batch(order, cancel_at_period_end):
        # Same plan and status: only the subscription rows are locked, not their counts.
        objects = [sf.subscription(sub, "active", "prod_d") for sub in order]
        for obj in objects:
            obj["cancel_at_period_end"] = cancel_at_period_end
        events = [sf.event("customer.subscription.updated", obj) for obj in objects]
        return ingest_batch(
            engine=engine, deliveries=[Delivery(StripeEvent.from_payload(e), T0) for e in events]
        )

    results: dict[str, list] = {}
    first = threading.Thread(target=lambda: results.update(a=batch(["sub_d1", "sub_d2"], True)))
    second = threading.Thread(target=lambda: results.update(b=batch(["sub_d2", "sub_d1"], False)))
    try:
        first.start()
        assert first_holds.wait(timeout=30)
        second.start()
        first.join(timeout=60)
        second.join(timeout=60)
        assert other_waited.is_set()
        assert [r.outcome for r in results["a"] + results["b"]] == ["processed"] * 4
        assert "applying them one by one" not in caplog.text  # no victim, no retry
        with engine.connect() as conn:
            assert deadlocks(conn) == 0
        with read_transaction(engine) as conn:
            assert status_breakdown(conn=conn) == {"active": 2}
    finally:
        engine.dispose()
