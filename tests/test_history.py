"""The daily subscription history the count triggers keep, and the trends read from it."""

import itertools
import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from finance_core.demo_history import spread
from finance_core.feed import handlers
from finance_core.feed.handlers import API_STATE_EVENT_TYPES
from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.store.models import (
    HISTORY_STATUSES,
    OTHER_STATUSES,
    subscription_history,
    subscription_history_observed,
    subscriptions,
    webhook_events,
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


def subscription(engine, sub_id, status, product="prod_a", *, at, created=None, started=None):
    """An update of a subscription that started at `started` (default: when this event
    happened, so it is new that day); a canceled one was canceled when the event happened."""
    created = created or next(_created)
    obj = sf.subscription(sub_id, status, product)
    obj.update(start_date=started or created, created=started or created)
    if status == "canceled":
        obj.update(canceled_at=created, ended_at=created)
    return feed(engine, "customer.subscription.updated", obj, at=at, created=created)


def history(engine):
    """Per (day, plan): each status's net change (zeros left out), new, canceled."""
    with read_transaction(engine) as conn:
        rows = conn.execute(select(subscription_history)).all()
    history = {}
    for row in rows:
        changes = {
            s: getattr(row, s) for s in (*HISTORY_STATUSES, OTHER_STATUSES) if getattr(row, s)
        }
        # An upsert that brings a row back to nothing leaves it: nothing to tell.
        if changes or row.new_subscriptions or row.cancellations:
            history[_date(row.day), row.product_id] = (
                changes,
                row.new_subscriptions,
                row.cancellations,
            )
    return history


def history_by_status(engine):
    """The history as revisions before 0015 kept it: a row per (day, plan, status)."""
    table = sa.table(
        "subscription_history",
        *(
            sa.column(name)
            for name in (
                "day",
                "product_id",
                "status",
                "subscription_change",
                "new_subscriptions",
                "cancellations",
            )
        ),
    )
    with read_transaction(engine) as conn:
        return {
            (_date(row.day), row.product_id, row.status): (
                row.subscription_change,
                row.new_subscriptions,
                row.cancellations,
            )
            for row in conn.execute(select(table))
        }


def _date(day):
    return date.fromisoformat(day) if isinstance(day, str) else day


def cumulative(engine):
    """The history added up per (plan, status), zeros left out."""
    with read_transaction(engine) as conn:
        return reads.cumulative_history(conn)


def maintained_and_recounted(engine):
    with read_transaction(engine) as conn:
        return reads.maintained_and_recounted(conn)


def epoch(moment):
    return int(moment.timestamp())


def dated(sub_id, status, product="prod_a", *, start, canceled=None, ended=None):
    """A subscription object carrying Stripe's own dates."""
    obj = sf.subscription(sub_id, status, product)
    obj.update(created=epoch(start), start_date=epoch(start))
    obj.update(canceled_at=canceled and epoch(canceled), ended_at=ended and epoch(ended))
    return obj


def test_each_change_lands_on_the_utc_day_it_happened_in_stripe(engine):
    day, next_day = DAY.date(), DAY.date() + timedelta(days=1)
    # All received a week later: the day the store saw them does not matter.
    seen = DAY + timedelta(days=7)
    subscription(engine, "sub_1", "trialing", at=seen, created=epoch(DAY))
    subscription(engine, "sub_2", "active", at=seen, created=epoch(DAY))
    # 23:30 UTC plus an hour is the next UTC day, whatever the server's time zone.
    later, started = epoch(DAY + timedelta(hours=1)), epoch(DAY)
    subscription(engine, "sub_1", "active", at=seen, created=later, started=started)
    subscription(engine, "sub_2", "active", at=seen, created=later + 1, started=started)
    # A plan change, then a cancellation.
    subscription(engine, "sub_2", "active", "prod_b", at=seen, created=later + 2, started=started)
    subscription(engine, "sub_1", "canceled", at=seen, created=later + 3, started=started)
    assert history(engine) == {
        (day, "prod_a"): ({"trialing": 1, "active": 1}, 2, 0),
        # active: +1 sub_1, -1 sub_2, -1 sub_1
        (next_day, "prod_a"): ({"trialing": -1, "active": -1, "canceled": 1}, 0, 1),
        (next_day, "prod_b"): ({"active": 1}, 0, 0),
    }
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount


def test_a_subscription_is_new_on_its_start_and_canceled_on_its_own_dates(engine):
    """A backfill or a late redelivery lands on Stripe's days, not the day the store saw it."""
    start, canceled, ended = (DAY - timedelta(days=n) for n in (30, 10, 3))
    obj = dated("sub_old", "canceled", start=start, canceled=canceled, ended=ended)
    feed(engine, "customer.subscription.deleted", obj, at=DAY, created=epoch(ended))
    assert history(engine) == {
        (start.date(), "prod_a"): ({"active": 1}, 1, 0),  # its status before is not known
        # Active until it ended.
        (ended.date(), "prod_a"): ({"active": -1, "canceled": 1}, 0, 0),
        (canceled.date(), "prod_a"): ({}, 0, 1),  # canceled on canceled_at
    }
    # Without canceled_at, ended_at dates the cancellation too; a start_date before `created`
    # (a backdated subscription) is the start.
    obj = dated("sub_2", "canceled", "prod_b", start=start, ended=ended)
    obj["created"] = epoch(DAY)
    feed(engine, "customer.subscription.deleted", obj, at=DAY, created=epoch(DAY))
    assert history(engine)[(start.date(), "prod_b")] == ({"active": 1}, 1, 0)
    assert history(engine)[(ended.date(), "prod_b")] == ({"active": -1, "canceled": 1}, 0, 1)


@pytest.mark.parametrize("arrival", ["in order", "later first"])
def test_a_cancellation_without_stripes_dates_is_dated_by_the_earliest_event(engine, arrival):
    """A trimmed payload: the earliest event saying canceled dates it, whichever arrives first
    (canceled is final in Stripe: both events tell of one cancellation)."""
    start = DAY - timedelta(days=5)
    feed(engine, "customer.subscription.created", dated("sub_1", "active", start=start), at=DAY)
    undated = dated("sub_1", "canceled", start=start)
    told = [
        ("customer.subscription.deleted", epoch(DAY)),
        ("customer.subscription.updated", epoch(DAY) + 86_400),
    ]
    for event_type, created in told if arrival == "in order" else told[::-1]:
        feed(engine, event_type, undated, at=DAY, created=created)
    assert history(engine) == {
        (start.date(), "prod_a"): ({"active": 1}, 1, 0),
        (DAY.date(), "prod_a"): ({"active": -1, "canceled": 1}, 0, 1),
    }


def test_a_scheduled_cancellation_is_not_a_cancellation_yet(engine):
    start = DAY - timedelta(days=40)
    obj = dated("sub_1", "active", start=start, canceled=DAY - timedelta(days=2))
    obj["cancel_at_period_end"] = True
    feed(engine, "customer.subscription.updated", obj, at=DAY, created=epoch(DAY))
    assert history(engine) == {(start.date(), "prod_a"): ({"active": 1}, 1, 0)}


def test_an_expired_incomplete_subscription_is_never_active_nor_new(engine):
    start = DAY - timedelta(days=2)
    obj = dated("sub_1", "incomplete", start=start)
    feed(engine, "customer.subscription.created", obj, at=DAY, created=epoch(start))
    obj = dated("sub_1", "incomplete_expired", start=start)
    feed(engine, "customer.subscription.updated", obj, at=DAY, created=epoch(DAY))
    with read_transaction(engine) as conn:
        weeks = new_and_canceled_per_week(
            conn=conn, start=start.date(), end=DAY.date() + timedelta(days=1)
        )
        days = active_per_plan_per_day(
            conn=conn, active_statuses=ACTIVE, start=start.date(), end=DAY.date()
        )
    assert sum(week.new_subscriptions for week in weeks) == 0
    assert days == []


def test_an_older_event_arriving_late_writes_no_history(engine):
    subscription(engine, "sub_1", "active", at=DAY, created=epoch(DAY))
    subscription(engine, "sub_1", "past_due", at=DAY + timedelta(days=2), created=epoch(DAY) - 50)
    assert history(engine) == {(DAY.date(), "prod_a"): ({"active": 1}, 1, 0)}


def test_active_per_plan_per_day_is_todays_counts_less_the_changes_since(engine):
    feed(engine, "product.created", sf.product("prod_a", "Alpha"), at=DAY)
    for n in range(3):  # days 0, 1, 2
        subscription(engine, f"sub_{n}", "active", at=DAY, created=epoch(DAY) + n * 86_400)
    subscription(engine, "sub_b", "trialing", "prod_b", at=DAY, created=epoch(DAY) + 86_400)
    subscription(
        engine, "sub_0", "canceled", at=DAY, created=epoch(DAY) + 3 * 86_400, started=epoch(DAY)
    )
    obj = dated("sub_x", "canceled", "prod_c", start=DAY - timedelta(days=9), ended=DAY)
    feed(engine, "customer.subscription.deleted", obj, at=DAY)  # active only before the window
    start, end = DAY.date(), DAY.date() + timedelta(days=6)
    with read_transaction(engine) as conn:
        days = active_per_plan_per_day(conn=conn, active_statuses=ACTIVE, start=start, end=end)
        later = active_per_plan_per_day(
            conn=conn, active_statuses=ACTIVE, start=start, end=start + timedelta(days=3)
        )
    alpha, plan_b = days  # by name; prod_c was not active in the window
    assert alpha.days == tuple(start + timedelta(days=n) for n in range(6))
    assert (alpha.plan_name, alpha.counts) == ("Alpha", (1, 2, 3, 2, 2, 2))
    # Nothing before the plan's first subscription, not zeros.
    assert (plan_b.plan_name, plan_b.counts) == ("prod_b", (None, 1, 1, 1, 1, 1))
    # A window that ends before today reads the same days the same way.
    assert [(plan.plan_name, plan.counts) for plan in later] == [
        ("Alpha", (1, 2, 3)),
        ("prod_b", (None, 1, 1)),
    ]


def test_new_and_canceled_per_week_count_the_days_in_range(engine):
    monday = DAY.date()
    for n in range(9):  # one new subscription a day for nine days
        subscription(engine, f"sub_{n}", "active", at=DAY, created=epoch(DAY) + n * 86_400)
    subscription(
        engine, "sub_0", "canceled", at=DAY, created=epoch(DAY) + 8 * 86_400, started=epoch(DAY)
    )
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


def test_the_migration_re_dates_a_0009_store_by_the_subscriptions_own_dates(database_url):
    engine = make_engine(database_url)
    config = migrate._config()
    with engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, "0009_history_retention")
    seen = DAY  # when the 0009 store wrote them; it dated their history then
    start, canceled = DAY - timedelta(days=200), DAY - timedelta(days=20)
    # sub_kept's state came from a failed event whose payload is still kept: its dates known.
    kept = dated("sub_kept", "canceled", start=start, canceled=canceled, ended=canceled)
    payload = sf.event("customer.subscription.deleted", kept, created=epoch(canceled))
    old_subscriptions = sa.table(
        "subscriptions",
        *(
            sa.column(name)
            for name in (
                "id",
                "status",
                "product_id",
                "livemode",
                "state_created",
                "state_event_id",
                "updated_at",
            )
        ),
    )
    with write_transaction(engine) as conn:
        for sub_id, status, event_id in [
            ("sub_0", "active", "evt_a"),
            ("sub_1", "past_due", "evt_b"),
            ("sub_kept", "canceled", payload["id"]),
        ]:
            conn.execute(
                insert(old_subscriptions).values(
                    id=sub_id,
                    status=status,
                    product_id="prod_a",
                    livemode=False,
                    state_created=epoch(seen),
                    state_event_id=event_id,
                    updated_at=seen.replace(tzinfo=None),
                )
            )
        conn.execute(
            insert(webhook_events).values(
                id=payload["id"],
                type=payload["type"],
                created=payload["created"],
                livemode=False,
                status="failed",
                attempts=1,
                deliveries=1,
                first_received_at=seen,
                last_received_at=seen,
                payload=json.dumps(payload),
            )
        )
    assert set(history_by_status(engine)) == {
        (seen.date(), "prod_a", s) for s in ("active", "past_due", "canceled")
    }

    migrate.upgrade(engine)
    today = datetime.now(UTC).date()
    assert history(engine) == {
        # No dates known: when last written.
        (seen.date(), "prod_a"): ({"active": 1, "past_due": 1}, 2, 0),
        (start.date(), "prod_a"): ({"active": 1}, 1, 0),  # sub_kept, from its event's payload
        (canceled.date(), "prod_a"): ({"active": -1, "canceled": 1}, 0, 1),
    }
    with read_transaction(engine) as conn:
        assert conn.execute(
            select(subscription_history_observed.c.observed_since)
        ).scalar_one() in (today, today.isoformat())
    # A sync that learns sub_0's start re-dates it; the history still adds up to the counts.
    obj = dated("sub_0", "active", start=start)
    feed(engine, "customer.subscription.updated", obj, at=DAY, created=epoch(DAY) + 10)
    assert history(engine)[(start.date(), "prod_a")] == ({"active": 2}, 2, 0)
    assert history(engine)[(seen.date(), "prod_a")] == ({"past_due": 1}, 1, 0)
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount

    with engine.connect() as conn, conn.begin():  # and back, and up again
        config.attributes["connection"] = conn
        command.downgrade(config, "0009_history_retention")
    # Spread back out per status, the day's new subscriptions and cancellations kept.
    down = history_by_status(engine)
    totals = {}
    for (_, plan, status), (change, _, _) in down.items():
        totals[plan, status] = totals.get((plan, status), 0) + change
    assert {key: total for key, total in totals.items() if total} == {
        ("prod_a", "active"): 1,
        ("prod_a", "past_due"): 1,
        ("prod_a", "canceled"): 1,
    }
    assert down[(start.date(), "prod_a", "active")] == (2, 2, 0)
    assert down[(canceled.date(), "prod_a", "canceled")] == (1, 0, 1)
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount
    engine.dispose()


def test_spread_history_ends_at_the_counts_it_was_given():
    counts = {("prod_a", "active"): 40, ("prod_a", "canceled"): 9, ("prod_b", "trialing"): 5}
    rows = spread(counts, days=90, today=DAY.date(), rng=random.Random(1))
    totals = {}
    for row in rows:
        for status in (*HISTORY_STATUSES, OTHER_STATUSES):
            key = (row["product_id"], status)
            totals[key] = totals.get(key, 0) + row[status]
        assert DAY.date() - timedelta(days=90) <= row["day"] <= DAY.date()
    assert len({(row["day"], row["product_id"]) for row in rows}) == len(rows)  # one per plan
    assert {key: total for key, total in totals.items() if total} == counts
    assert sum(row["cancellations"] for row in rows) == 9
    assert sum(row["new_subscriptions"] for row in rows) == 54


def test_an_undated_cancel_from_an_event_older_than_the_start_lands_on_the_start(engine):
    """A canceled payload without cancel dates is dated by its event, but never before the
    subscription began: a day with fewer active subscriptions than ever started is wrong."""
    obj = dated("sub_late", "canceled", start=DAY)  # no canceled_at, no ended_at
    feed(engine, "customer.subscription.deleted", obj, at=DAY, created=epoch(DAY) - 86_400 * 40)
    rows = history(engine)
    assert {day for day, _ in rows} == {DAY.date()}  # nothing before it began
    assert sum(new for _, new, _ in rows.values()) == 1
    assert sum(left for _, _, left in rows.values()) == 1
    assert cumulative(engine) == {("prod_a", "canceled"): 1}
    with read_transaction(engine) as conn:
        row = conn.execute(select(subscriptions.c.started_at, subscriptions.c.canceled_at)).one()
    assert row.canceled_at == row.started_at


# --- dated by Stripe, under any delivery order and any mix of webhooks and sync ---------------

ALIVE = ["active", "trialing", "past_due"]
_dated_runs = itertools.count()


@st.composite
def lives(draw):
    """A few subscriptions' lives in Stripe: a start, status changes, maybe a cancellation or
    an incomplete start that expired; each change's event delivered as a webhook or seen by a
    sync reading Stripe's state at some time; all in any order."""
    run = next(_dated_runs)
    lives, deliveries = [], []
    for n in range(draw(st.integers(1, 4))):
        # Plans of this example's own: the engine (and its store) lasts the whole test.
        sub_id, product = f"sub_d{run}_{n}", draw(st.sampled_from([f"p{run}_a", f"p{run}_b"]))
        start = draw(st.integers(0, 20))
        expired = draw(st.booleans()) and draw(st.booleans())
        statuses = (
            ["incomplete_expired"]
            if expired
            else draw(st.lists(st.sampled_from(ALIVE), min_size=1, max_size=3))
        )
        days = sorted(
            draw(st.lists(st.integers(start, 27), min_size=len(statuses), max_size=len(statuses)))
        )
        days[0] = start
        cancel = None if expired or not draw(st.booleans()) else draw(st.integers(days[-1], 28))
        states = []  # (seconds after DAY's midnight, object) as Stripe had it from then on
        midnight = epoch(DAY.replace(hour=0, minute=0))
        for k, (status, day) in enumerate(zip(statuses, days, strict=True)):
            obj = sf.subscription(sub_id, status, product)
            obj.update(
                start_date=midnight + start * 86_400 + 60, created=midnight + start * 86_400 + 60
            )
            states.append((midnight + day * 86_400 + 60 + k, obj))
        if cancel is not None:
            obj = dict(states[-1][1], status="canceled")
            at = midnight + cancel * 86_400 + 3600
            obj.update(canceled_at=at, ended_at=at)
            states.append((at, obj))
        lives.append((product, start, cancel, expired))
        for created, obj in states:
            if draw(st.booleans()):
                deliveries.append(("webhook", created, obj))
            else:  # a sync some time after the change reads Stripe's state at that time
                read_at = created + draw(st.integers(0, 5 * 86_400))
                now = max((c, o) for c, o in states if c <= read_at)[1]
                deliveries.append(("sync", read_at, now))
    order = draw(st.permutations(range(len(deliveries))))
    return lives, [deliveries[i] for i in order]


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=lives())
def test_the_history_is_a_recount_of_stripes_dates_under_any_delivery(engine, world):
    lives, deliveries = world
    start, end = DAY.date(), DAY.date() + timedelta(days=35)
    with read_transaction(engine) as conn:
        weeks_before = new_and_canceled_per_week(conn=conn, start=start, end=end)
    for how, created, obj in deliveries:
        if how == "webhook":
            feed(engine, "customer.subscription.updated", obj, at=DAY, created=created)
        else:  # as sync applies what it reads from the API
            event = StripeEvent(
                id=f"sync_{created}",
                type=API_STATE_EVENT_TYPES["subscription"],
                created=created,
                livemode=False,
                api_version=None,
                object=obj,
            )
            with write_transaction(engine) as conn:
                handlers.apply_subscription(conn, event, DAY, report_change=True)
    maintained, recount = maintained_and_recounted(engine)
    assert cumulative(engine) == maintained == recount

    with read_transaction(engine) as conn:
        drawn = active_per_plan_per_day(conn=conn, active_statuses=ACTIVE, start=start, end=end)
        weeks = new_and_canceled_per_week(conn=conn, start=start, end=end)
    products = {plan for plan, *_ in lives}
    drawn = [plan for plan in drawn if plan.product_id in products]
    window = [start + timedelta(days=n) for n in range(35)]
    expected = {}
    for product in sorted(products):
        counts = [
            sum(
                1
                for plan, first, cancel, expired in lives
                if plan == product and not expired and first <= n and (cancel is None or n < cancel)
            )
            for n in range(35)
        ]
        if any(counts):
            first = next(n for n, count in enumerate(counts) if count)
            expected[product] = (None,) * first + tuple(counts[first:])
    assert {plan.product_id: plan.counts for plan in drawn} == expected
    assert [plan.days for plan in drawn] == [tuple(window)] * len(drawn)
    flows = [
        (w.new_subscriptions - b.new_subscriptions, w.cancellations - b.cancellations)
        for w, b in zip(weeks, weeks_before, strict=True)
    ]
    assert flows == [
        (
            sum(1 for _, first, _, expired in lives if not expired and first // 7 == week),
            sum(1 for _, _, cancel, _ in lives if cancel is not None and cancel // 7 == week),
        )
        for week in range(5)
    ]
    # The last day equals subscription_counts.
    last = {plan.product_id: plan.counts[-1] for plan in drawn}
    active = {}
    for (product, status), count in recount.items():
        if status in ACTIVE and product in products:
            active[product] = active.get(product, 0) + count
    assert {k: v for k, v in last.items() if v} == active
