"""The Payments page's totals the invoice triggers keep (migration 0012) against a recount."""

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, insert, select, update

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction, write_transaction
from finance_core.store.models import (
    failing_invoice_totals,
    invoices,
    recovery_closings_daily,
    recovery_paid_daily,
)
from finance_core.views.payments import CurrencyTotal, failing_totals
from finance_core.views.recovery import CLOSED_STATUSES, RecoveredTotal, recovered
from tests.support import stripe_factory as sf
from tests.support.invoices import invoice

BASE = 1_790_000_000  # 2026-09-21 19:33:20 UTC: days start mid-way through the events
START = datetime.fromtimestamp(BASE, UTC)
HOUR = 3600
RECEIVED = START + timedelta(days=10)

EVENTS = {
    "failed": ("invoice.payment_failed", "open"),
    "paid": ("invoice.paid", "paid"),
    "voided": ("invoice.voided", "void"),
    "uncollectible": ("invoice.marked_uncollectible", "uncollectible"),
    "deleted": ("invoice.deleted", "deleted"),
    "updated open": ("invoice.updated", "open"),
    "updated paid": ("invoice.updated", "paid"),
}


def feed(engine, event: dict[str, Any]) -> None:
    ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=RECEIVED)


def kept(conn: Connection) -> tuple[dict[Any, tuple[int, ...]], ...]:
    """The three tables, rows at zero left out; no count is ever negative."""
    tables = (
        (failing_invoice_totals, ("currency",), ("invoices", "amount_due")),
        (recovery_paid_daily, ("day", "currency"), ("invoices", "amount_paid")),
        (recovery_closings_daily, ("day", "status"), ("invoices",)),
    )
    result = []
    for table, keys, values in tables:
        rows = {}
        for row in conn.execute(select(table)).mappings():
            counts = tuple(row[v] for v in values)
            assert row["invoices"] >= 0, (table.name, dict(row))
            if row["invoices"]:
                rows[tuple(row[k] for k in keys)] = counts
            else:
                assert counts == (0,) * len(values), (table.name, dict(row))
        result.append(rows)
    return tuple(result)


def recounted(conn: Connection) -> tuple[dict[Any, tuple[int, ...]], ...]:
    """The same three from the invoices rows themselves."""
    failing: Counter[Any] = Counter()
    failing_due: Counter[Any] = Counter()
    paid: Counter[Any] = Counter()
    paid_amount: Counter[Any] = Counter()
    closings: Counter[Any] = Counter()
    for row in conn.execute(select(invoices)):
        currency = row.currency or ""
        if row.payment_failing:
            failing[(currency,)] += 1
            failing_due[(currency,)] += row.amount_due or 0
        if row.first_failed_at is not None and row.closed_at is not None:
            closings[(row.first_failed_at.date(), row.status)] += 1
            if row.status == "paid":
                paid[(row.closed_at.date(), currency)] += 1
                paid_amount[(row.closed_at.date(), currency)] += row.amount_paid or 0
    return (
        {key: (n, failing_due[key]) for key, n in failing.items()},
        {key: (n, paid_amount[key]) for key, n in paid.items()},
        {key: (n,) for key, n in closings.items()},
    )


def defined(conn: Connection, *, days: int, now: datetime) -> tuple[list[Any], float | None]:
    """Recovered as `views/recovery.py` defines it, counted over every invoice row."""
    start = now - timedelta(days=days)
    paid: Counter[str | None] = Counter()
    amount: Counter[str | None] = Counter()
    statuses: Counter[str] = Counter()
    for row in conn.execute(select(invoices).where(invoices.c.first_failed_at.is_not(None))):
        if row.status == "paid" and row.closed_at and start <= row.closed_at < now:
            paid[row.currency] += 1
            amount[row.currency] += row.amount_paid or 0
        if row.closed_at and start <= row.first_failed_at < now:
            statuses[row.status] += 1
    totals = [RecoveredTotal(c, n, amount[c]) for c, n in paid.items()]
    totals.sort(key=lambda total: (-total.invoices, total.currency or ""))
    closed = sum(n for status, n in statuses.items() if status in CLOSED_STATUSES)
    return totals, (statuses["paid"] / closed if closed else None)


def assert_kept_equals_recount(engine) -> None:
    with read_transaction(engine) as conn:
        assert kept(conn) == recounted(conn)
        failing = recounted(conn)[0]
        expected = [CurrencyTotal(c or None, n, due) for (c,), (n, due) in failing.items()]
        expected.sort(key=lambda total: (-total.invoices, total.currency or ""))
        assert failing_totals(conn=conn) == expected
        # Windows ending mid-day, at midnight and before the events' end.
        for now, days in itertools.product(
            (START + timedelta(days=4, hours=7), datetime(2026, 9, 25, tzinfo=UTC)), (1, 2, 7)
        ):
            answer = recovered(conn, days=days, now=now)
            totals, rate = defined(conn, days=days, now=now)
            assert answer.totals == totals, (now, days)
            assert answer.recovery_rate == pytest.approx(rate), (now, days)


# --- under any order of invoice events --------------------------------------------------

_runs = itertools.count()


@st.composite
def invoice_events(draw):
    """A few invoices' events (created over four days, some with Stripe's transition times),
    delivered in any order: late, older than what is stored, repeated."""
    run = next(_runs)
    events = []
    for n in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 5))):
            kind = draw(st.sampled_from(sorted(EVENTS)))
            event_type, status = EVENTS[kind]
            created = BASE + draw(st.integers(0, 4 * 24)) * HOUR
            obj = invoice(
                f"in_t{run}_{n}",
                status,
                currency=draw(st.sampled_from(["usd", "eur"])),
                amount_due=draw(st.sampled_from([1000, 2900])),
            )
            if status == "paid" and draw(st.booleans()):
                paid_at = created - draw(st.integers(0, 48)) * HOUR
                obj["status_transitions"] = {"paid_at": paid_at}
            events.append(sf.event(event_type, obj, created=created))
    order = draw(st.permutations(range(len(events))))
    return [events[i] for i in order]


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivered=invoice_events())
def test_kept_totals_equal_a_recount_under_any_order_of_invoice_events(engine, delivered):
    for event in delivered:
        feed(engine, event)
    assert_kept_equals_recount(engine)


def test_every_change_of_a_counted_column_moves_the_totals(engine):
    """Writes the ingest path does not make today (an invoice's currency or amount changing,
    a row deleted) are followed too."""
    feed(engine, sf.event("invoice.payment_failed", invoice("in_1", "open"), created=BASE))
    feed(engine, sf.event("invoice.payment_failed", invoice("in_2", "open"), created=BASE))
    feed(engine, sf.event("invoice.paid", invoice("in_2", "paid"), created=BASE + 30 * HOUR))
    assert_kept_equals_recount(engine)
    changes = [
        {"currency": "eur"},
        {"amount_due": None},
        {"currency": None, "amount_due": 5},
        {"payment_failing": False},
        {"payment_failing": True, "currency": "usd"},
    ]
    for change in changes:
        with write_transaction(engine) as conn:
            conn.execute(update(invoices).where(invoices.c.id == "in_1").values(**change))
        assert_kept_equals_recount(engine)
    paid_changes = [
        {"closed_at": START + timedelta(days=3)},
        {"currency": "eur", "amount_paid": 7},
        {"first_failed_at": START - timedelta(days=2)},
        {"status": "void"},
        {"closed_at": None},
    ]
    for change in paid_changes:
        with write_transaction(engine) as conn:
            conn.execute(update(invoices).where(invoices.c.id == "in_2").values(**change))
        assert_kept_equals_recount(engine)
    with write_transaction(engine) as conn:
        conn.execute(delete(invoices))
    assert_kept_equals_recount(engine)
    with read_transaction(engine) as conn:
        assert failing_totals(conn=conn) == []


# --- the migration ----------------------------------------------------------------------


def test_the_migration_starts_the_totals_from_the_invoices(database_url):
    engine = make_engine(database_url)
    config = migrate._config()
    with engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        command.upgrade(config, "0013_feed_check")
    feed(engine, sf.event("invoice.payment_failed", invoice("in_1", "open"), created=BASE))
    feed(engine, sf.event("invoice.payment_failed", invoice("in_2", "open"), created=BASE))
    feed(engine, sf.event("invoice.paid", invoice("in_2", "paid"), created=BASE + 30 * HOUR))
    with write_transaction(engine) as conn:  # failing, with neither currency nor amount
        row = {"id": "in_3", "status": "open", "payment_failing": True, "livemode": False}
        conn.execute(
            insert(invoices).values(
                **row, state_created=1, state_event_id="evt_1", updated_at=START
            )
        )
    migrate.upgrade(engine)
    with read_transaction(engine) as conn:
        assert kept(conn) == recounted(conn) != ({}, {}, {})
        assert CurrencyTotal(None, 1, 0) in failing_totals(conn=conn)
    feed(engine, sf.event("invoice.voided", invoice("in_1", "void"), created=BASE + HOUR))
    assert_kept_equals_recount(engine)

    with engine.connect() as conn, conn.begin():  # and back, and up again
        config.attributes["connection"] = conn
        command.downgrade(config, "0013_feed_check")
    feed(engine, sf.event("invoice.payment_failed", invoice("in_4", "open"), created=BASE))
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    assert_kept_equals_recount(engine)
    engine.dispose()
