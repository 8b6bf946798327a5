"""The failing invoices behind "Failed payments": pages, totals, failing since, amounts, CSV."""

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.feed.stripe_shapes import timestamp
from finance_core.store.db import read_transaction
from finance_core.views.money import format_amount, major_units
from finance_core.views.payments import (
    Cursor,
    csv_pages,
    failing_invoice_page,
    failing_totals,
)
from tests.support import stripe_factory as sf
from tests.support.query_plans import sqlite_query_plans
from tests.support.reads import failed_payments_count

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_created = itertools.count(1_790_000_000, 60)


def feed(engine, event_type, obj, *, created=None, livemode=False):
    event = sf.event(event_type, obj, created=created or next(_created), livemode=livemode)
    return ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=T0)


def fail(engine, invoice_id, *, currency="usd", amount=2900, created=None, **fields):
    invoice = sf.invoice(invoice_id, "open", amount_due=amount, **fields)
    return feed(
        engine, "invoice.payment_failed", {**invoice, "currency": currency}, created=created
    )


def read(engine, **kwargs):
    with read_transaction(engine) as conn:
        return failing_invoice_page(conn=conn, **kwargs), failing_totals(conn=conn)


def test_the_pages_hold_exactly_the_invoices_the_api_counts(engine):
    feed(engine, "product.created", sf.product("prod_pro", "Pro"))
    feed(engine, "customer.subscription.created", sf.subscription("sub_1", "active", "prod_pro"))
    for n in range(7):
        fail(engine, f"in_usd_{n}", subscription_id="sub_1")
    fail(engine, "in_eur", currency="eur", amount=1999)
    fail(engine, "in_jpy", currency="jpy", amount=4500)
    fail(engine, "in_paid")
    feed(engine, "invoice.paid", sf.invoice("in_paid", "paid"))
    feed(engine, "invoice.voided", sf.invoice("in_void", "void"))
    feed(engine, "invoice.updated", sf.invoice("in_draft", "draft", attempted=False))

    seen, after = [], None
    while True:
        page, totals = read(engine, limit=4, after=after)
        seen.extend(page.rows)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    with read_transaction(engine) as conn:
        counted = failed_payments_count(conn)
    assert len(seen) == len({row.id for row in seen}) == counted == 9
    assert sum(total.invoices for total in totals) == counted
    assert {row.id for row in seen} == {f"in_usd_{n}" for n in range(7)} | {"in_eur", "in_jpy"}
    # Newest failure first.
    assert [row.failing_since for row in seen] == sorted(
        (row.failing_since for row in seen), reverse=True
    )
    assert [(t.currency, t.invoices, t.amount) for t in totals] == [
        ("usd", 7, "203.00 USD"),
        ("eur", 1, "19.99 EUR"),
        ("jpy", 1, "4,500 JPY"),
    ]
    by_id = {row.id: row for row in seen}
    assert (by_id["in_usd_0"].plan_name, by_id["in_usd_0"].subscription_id) == ("Pro", "sub_1")
    assert by_id["in_usd_0"].plan_id is not None
    assert by_id["in_eur"].plan_name is None and by_id["in_eur"].amount == "19.99 EUR"


def test_failing_since_is_when_the_run_of_failures_began(engine):
    first, second, paid, late = 1_790_000_000, 1_790_003_600, 1_790_007_200, 1_790_001_000
    fail(engine, "in_1", created=first, attempt_count=1)
    fail(engine, "in_1", created=second, attempt_count=2)
    [row] = read(engine)[0].rows
    assert row.failing_since == timestamp(first) and row.attempts == 2

    feed(engine, "invoice.paid", sf.invoice("in_1", "paid"), created=paid)
    assert read(engine)[0].rows == []
    # An older failure delivered late neither brings it back nor starts a new run.
    fail(engine, "in_1", created=late)
    assert read(engine)[0].rows == []

    fail(engine, "in_2", created=first)
    feed(engine, "invoice.updated", sf.invoice("in_2", "open", attempted=False), created=second)
    assert read(engine)[0].rows == []
    fail(engine, "in_2", created=paid)  # failing again: a new run, from its own time
    assert [row.failing_since for row in read(engine)[0].rows] == [timestamp(paid)]


def test_failing_since_is_the_earliest_failure_whatever_order_they_arrive_in(engine):
    first, second, third = 1_790_000_000, 1_790_003_600, 1_790_007_200
    fail(engine, "in_1", created=third, attempt_count=3)
    fail(engine, "in_1", created=first, attempt_count=1)  # older: changes no state but its start
    fail(engine, "in_1", created=second, attempt_count=2)
    [row] = read(engine)[0].rows
    assert (row.failing_since, row.attempts) == (timestamp(first), 3)


def test_a_recovered_invoice_leaves_the_page_and_the_totals(engine):
    fail(engine, "in_1")
    fail(engine, "in_2", currency="eur")
    feed(engine, "invoice.payment_succeeded", sf.invoice("in_2", "paid"))
    page, totals = read(engine)
    assert [row.id for row in page.rows] == ["in_1"]
    assert [(t.currency, t.invoices) for t in totals] == [("usd", 1)]


def test_links_follow_the_invoice_mode(engine):
    fail(engine, "in_test")
    live = {**sf.invoice("in_live", "open"), "livemode": True}
    feed(engine, "invoice.payment_failed", live, livemode=True)
    urls = {row.id: row.stripe_url for row in read(engine)[0].rows}
    assert urls == {
        "in_test": "https://dashboard.stripe.com/test/invoices/in_test",
        "in_live": "https://dashboard.stripe.com/invoices/in_live",
    }


def test_keyset_breaks_ties_on_the_invoice_id(engine):
    for n in range(5):
        fail(engine, f"in_tie_{n}", created=1_790_000_000)
    first = read(engine, limit=2)[0]
    assert [row.id for row in first.rows] == ["in_tie_4", "in_tie_3"]
    assert first.next_cursor == Cursor(timestamp(1_790_000_000), "in_tie_3")
    rest = read(engine, limit=10, after=first.next_cursor)[0]
    assert [row.id for row in rest.rows] == ["in_tie_2", "in_tie_1", "in_tie_0"]
    assert rest.next_cursor is None


@pytest.mark.parametrize(
    ("amount", "currency", "shown", "major"),
    [
        (2900, "usd", "29.00 USD", Decimal("29.00")),
        (123456789, "eur", "1,234,567.89 EUR", Decimal("1234567.89")),
        (4500, "jpy", "4,500 JPY", Decimal("4500")),
        (50000, "KRW", "50,000 KRW", Decimal("50000")),
        (5125, "kwd", "5.125 KWD", Decimal("5.125")),
        (1000, "bhd", "1.000 BHD", Decimal("1.000")),
        (100, "isk", "1.00 ISK", Decimal("1.00")),  # two-decimal in Stripe's API
        (5, "gbp", "0.05 GBP", Decimal("0.05")),
    ],
)
def test_amounts_are_shown_in_major_units(amount, currency, shown, major):
    assert format_amount(amount, currency) == shown
    assert major_units(amount, currency) == major


def test_an_invoice_without_amount_or_currency_says_unknown(engine):
    assert format_amount(None, "usd") == format_amount(2900, None) == "unknown"
    invoice = sf.invoice("in_bare", "open")
    del invoice["amount_due"], invoice["currency"]
    feed(engine, "invoice.payment_failed", invoice)
    page, totals = read(engine)
    assert page.rows[0].amount == "unknown"
    assert [(t.currency, t.invoices, t.amount_due) for t in totals] == [(None, 1, 0)]


def test_csv_has_every_failing_invoice_in_major_units_and_no_formulas(engine):
    feed(engine, "product.created", sf.product("prod_f", "=HYPERLINK(1)"))
    feed(engine, "customer.subscription.created", sf.subscription("sub_f", "active", "prod_f"))
    fail(engine, "in_1", subscription_id="sub_f")
    fail(engine, "in_2", currency="jpy", amount=4500)
    fail(engine, "in_3", currency="kwd", amount=5125)
    chunks = list(csv_pages(engine=engine, page_size=2))
    assert len(chunks) == 1 + 2  # the header, then pages of 2 and 1
    rows = {row["invoice"]: row for row in csv.DictReader(io.StringIO("".join(chunks)))}
    assert set(rows) == {"in_1", "in_2", "in_3"}
    assert (rows["in_1"]["amount_due"], rows["in_1"]["currency"]) == ("29.00", "USD")
    assert (rows["in_2"]["amount_due"], rows["in_3"]["amount_due"]) == ("4500", "5.125")
    assert rows["in_1"]["plan"] == "'=HYPERLINK(1)"
    assert rows["in_1"]["stripe_url"] == "https://dashboard.stripe.com/test/invoices/in_1"
    assert rows["in_1"]["failing_since"].endswith("Z")
    assert "jane.doe@example.com" not in "".join(chunks)


def test_page_size_is_bounded(engine):
    with read_transaction(engine) as conn, pytest.raises(ValueError, match="page size"):
        failing_invoice_page(conn=conn, limit=0)


def test_sqlite_plans_read_the_failing_index(tmp_path):
    """The pages read the failing few through their partial index; the totals read the
    totals the triggers keep, not the invoices."""

    def read_page(conn):
        failing_invoice_page(conn=conn, after=Cursor(T0 - timedelta(days=1), "in_1"))
        failing_invoice_page(conn=conn)
        failing_totals(conn=conn)

    plans = sqlite_query_plans(tmp_path, "invoices", read_page)
    assert len(plans) == 3
    *pages, (totals, totals_steps) = plans
    for statement, details in pages:
        invoice_steps = [d for d in details if "invoices" in d]
        assert invoice_steps and all("ix_invoices_failing" in d for d in invoice_steps), (
            statement,
            details,
        )
    assert totals_steps == ["SCAN failing_invoice_totals"], (totals, totals_steps)
