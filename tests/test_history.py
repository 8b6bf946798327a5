"""The daily subscription history the count triggers keep, and the trends read from it."""

import itertools
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from finance_core import demo
from finance_core.demo_history import spread
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.store.models import (
    invoices,
    subscription_history,
)
from finance_core.views.trends import active_per_plan_per_day, last_days, new_and_canceled_per_week
from tests.support import reads
from tests.support import stripe_factory as sf

DAY = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)  # a Monday, late in the UTC day
ACTIVE = ["active", "trialing", "past_due"]
_created = itertools.count(1_790_000_000)


def feed(engine, event_type, obj, *, at, created=None):
    event = sf.event(event_type, obj, created=created or next(_created))
    return ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=at)


def subscription(engine, sub_id, status, product="prod_a", *, at, created=None):
    return feed(
        engine,
        "customer.subscription.updated",
        sf.subscription(sub_id, status, product),
        at=at,
        created=created,
    )


def history(engine):
    with read_transaction(engine) as conn:
        return {
            (row.day, row.product_id, row.status): (
                row.subscription_change,
                row.new_subscriptions,
                row.cancellations,
            )
            for row in conn.execute(select(subscription_history))
        }


def cumulative(engine):
    """The history added up per (plan, status), zeros left out."""
    totals = {}
    for (_, product, status), (change, _, _) in history(engine).items():
        totals[(product, status)] = totals.get((product, status), 0) + change
    return {key: total for key, total in totals.items() if total}


def maintained_and_recounted(engine):
    with read_transaction(engine) as conn:
        return reads.maintained_and_recounted(conn)


def test_each_change_lands_on_the_utc_day_the_store_saw_it(engine):
    day, next_day = DAY.date(), DAY.date() + timedelta(days=1)
    subscription(engine, "sub_1", "trialing", at=DAY)
    subscription(engine, "sub_2", "active", at=DAY)
    # 23:30 UTC plus an hour is the next UTC day, whatever the server's time zone.
    later = DAY + timedelta(hours=1)
    subscription(engine, "sub_1", "active", at=later)
    subscription(engine, "sub_2", "active", at=later)  # no change of plan or status
    subscription(engine, "sub_2", "active", "prod_b", at=later)  # a plan change
    subscription(engine, "sub_1", "canceled", at=later)
    assert history(engine) == {
        (day, "prod_a", "trialing"): (1, 1, 0),
        (day, "prod_a", "active"): (1, 1, 0),
        (next_day, "prod_a", "trialing"): (-1, 0, 0),
        (next_day, "prod_a", "active"): (-1, 0, 0),  # +1 sub_1, -1 sub_2, -1 sub_1
        (next_day, "prod_b", "active"): (1, 0, 0),
        (next_day, "prod_a", "canceled"): (1, 0, 1),
    }
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount


def test_a_subscription_first_seen_canceled_is_new_and_canceled_that_day(engine):
    """A backfill shows on its day: the store had never seen these subscriptions before."""
    subscription(engine, "sub_old", "canceled", at=DAY)
    assert history(engine) == {(DAY.date(), "prod_a", "canceled"): (1, 1, 1)}


def test_an_older_event_arriving_late_writes_no_history(engine):
    subscription(engine, "sub_1", "active", at=DAY, created=1_790_000_100)
    subscription(engine, "sub_1", "past_due", at=DAY + timedelta(days=2), created=1_790_000_050)
    assert history(engine) == {(DAY.date(), "prod_a", "active"): (1, 1, 0)}


def test_active_per_plan_per_day_is_todays_counts_less_the_changes_since(engine):
    feed(engine, "product.created", sf.product("prod_a", "Alpha"), at=DAY)
    for n in range(3):  # days 0, 1, 2
        subscription(engine, f"sub_{n}", "active", at=DAY + timedelta(days=n))
    subscription(engine, "sub_b", "trialing", "prod_b", at=DAY + timedelta(days=1))
    subscription(engine, "sub_0", "canceled", at=DAY + timedelta(days=3))
    subscription(engine, "sub_x", "canceled", "prod_c", at=DAY)  # never active: left out
    start, end = DAY.date() - timedelta(days=1), DAY.date() + timedelta(days=5)
    with read_transaction(engine) as conn:
        days = active_per_plan_per_day(conn=conn, active_statuses=ACTIVE, start=start, end=end)
        later = active_per_plan_per_day(
            conn=conn, active_statuses=ACTIVE, start=start, end=start + timedelta(days=3)
        )
    alpha, plan_b = days  # by name; prod_c was never active
    assert alpha.days == tuple(start + timedelta(days=n) for n in range(6))
    assert (alpha.plan_name, alpha.counts) == ("Alpha", (0, 1, 2, 3, 2, 2))
    assert (plan_b.plan_name, plan_b.counts) == ("prod_b", (0, 0, 1, 1, 1, 1))
    # A window that ends before today reads the same days the same way.
    assert [(plan.plan_name, plan.counts) for plan in later] == [
        ("Alpha", (0, 1, 2)),
        ("prod_b", (0, 0, 1)),
    ]


def test_new_and_canceled_per_week_count_the_days_in_range(engine):
    monday = DAY.date()
    for n in range(9):  # one new subscription a day for nine days
        subscription(engine, f"sub_{n}", "active", at=DAY + timedelta(days=n))
    subscription(engine, "sub_0", "canceled", at=DAY + timedelta(days=8))
    with read_transaction(engine) as conn:
        weeks = new_and_canceled_per_week(
            conn=conn, start=monday + timedelta(days=2), end=monday + timedelta(days=9)
        )
    assert [(w.week, w.new_subscriptions, w.cancellations, w.net) for w in weeks] == [
        (monday, 5, 0, 5),  # Wednesday to Sunday of the first week
        (monday + timedelta(days=7), 2, 1, 1),
    ]


def test_windows_and_ranges_refuse_bad_input(engine):
    now = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    assert last_days(days=30, now=now) == (date(2026, 11, 1), date(2026, 12, 1))
    with pytest.raises(ValueError, match="naive"):
        last_days(days=30, now=datetime(2026, 11, 30))
    with pytest.raises(ValueError, match="1 to"):
        last_days(days=0, now=now)
    with read_transaction(engine) as conn, pytest.raises(ValueError, match="start < end"):
        new_and_canceled_per_week(conn=conn, start=date(2026, 11, 2), end=date(2026, 11, 2))


# --- under any delivery order --------------------------------------------------------

SUB_STATUSES = ["incomplete", "trialing", "active", "past_due", "canceled"]
_runs = itertools.count()


@st.composite
def deliveries(draw):
    """A few subscriptions' changes, each received on one of five days, in any order."""
    run = next(_runs)
    events = []
    for n in range(draw(st.integers(1, 4))):
        changes = draw(
            st.lists(
                st.tuples(st.sampled_from(SUB_STATUSES), st.sampled_from(["prod_a", "prod_b"])),
                min_size=1,
                max_size=4,
            )
        )
        times = draw(st.lists(st.integers(0, 1_000), min_size=len(changes), max_size=len(changes)))
        for (status, product), created in zip(changes, times, strict=True):
            event = sf.event(
                "customer.subscription.updated",
                sf.subscription(f"sub_h{run}_{n}", status, product),
                created=1_790_000_000 + created,
            )
            events.append((event, draw(st.integers(0, 4))))
    order = draw(st.permutations(range(len(events))))
    return [events[i] for i in order]


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivered=deliveries())
def test_the_history_adds_up_to_the_counts_in_any_delivery_order(engine, delivered):
    for event, day in delivered:
        ingest_event(
            engine=engine,
            event=StripeEvent.from_payload(event),
            received_at=DAY + timedelta(days=day),
        )
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount
    # The last day of the trends is the counts themselves.
    with read_transaction(engine) as conn:
        start, end = last_days(days=10, now=DAY + timedelta(days=5))
        days = active_per_plan_per_day(conn=conn, active_statuses=ACTIVE, start=start, end=end)
    last = {plan.product_id: plan.counts[-1] for plan in days}
    active = {}
    for (product, status), count in recount.items():
        if status in ACTIVE:
            active[product] = active.get(product, 0) + count
    assert {k: v for k, v in last.items() if v} == active


# --- the migration and the demo --------------------------------------------------------


def test_the_migration_starts_the_history_at_the_counts_of_its_day(database_url):
    engine = make_engine(database_url)
    config = migrate._config()
    with engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, "0008_admin_audit")
    for n, status in enumerate(["active", "active", "canceled"]):
        subscription(engine, f"sub_{n}", status, at=DAY)
    with write_transaction(engine) as conn:  # a failing invoice of before failing_since
        row = {"id": "in_1", "status": "open", "payment_failing": True, "livemode": False}
        conn.execute(
            insert(invoices).values(**row, state_created=1, state_event_id="evt_1", updated_at=DAY)
        )
    migrate.upgrade(engine)
    today = datetime.now(UTC).date()
    assert history(engine) == {
        (today, "prod_a", "active"): (2, 0, 0),
        (today, "prod_a", "canceled"): (1, 0, 0),
    }
    with read_transaction(engine) as conn:
        assert conn.execute(select(invoices.c.failing_since)).scalar_one() == DAY
    subscription(engine, "sub_0", "past_due", at=DAY)
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount

    with engine.connect() as conn, conn.begin():  # and back, and up again
        config.attributes["connection"] = conn
        command.downgrade(config, "0008_admin_audit")
    subscription(engine, "sub_1", "past_due", at=DAY)
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    engine.dispose()


def test_spread_history_ends_at_the_counts_it_was_given():
    counts = {("prod_a", "active"): 40, ("prod_a", "canceled"): 9, ("prod_b", "trialing"): 5}
    rows = spread(counts, days=90, today=DAY.date(), rng=random.Random(1))
    totals = {}
    for row in rows:
        key = (row["product_id"], row["status"])
        totals[key] = totals.get(key, 0) + row["subscription_change"]
        assert DAY.date() - timedelta(days=90) <= row["day"] <= DAY.date()
    assert {key: total for key, total in totals.items() if total} == counts
    assert sum(row["cancellations"] for row in rows) == 9
    assert sum(row["new_subscriptions"] for row in rows) == 54


def test_the_demo_backdates_only_a_demo_store(engine):
    feed(engine, "customer.subscription.created", sf.subscription("sub_1", "active", "p"), at=DAY)
    with pytest.raises(demo.NotADemoStore):
        demo.backdate_history(engine=engine, now=DAY)
    assert history(engine) == {(DAY.date(), "p", "active"): (1, 1, 0)}
