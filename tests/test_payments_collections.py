"""Payments for collections: each failing invoice's customer, own plan, attempts and next
retry from every payload shape, and Recovered with its recovery rate over windows."""

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.feed.stripe_shapes import timestamp
from finance_core.store.db import read_transaction, statement_reads
from finance_core.views.payments import (
    NO_MORE_RETRIES,
    BadCursor,
    csv_pages,
    cursor_token,
    failed_payments,
    failing_invoice_page,
    parse_cursor_token,
)
from finance_core.views.queries import plan_id_for
from finance_core.views.recovery import RecoveredTotal, recovered
from tests.support import stripe_factory as sf
from tests.support.invoices import invoice
from tests.support.query_plans import sqlite_query_plans

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DAY = 86_400
_created = itertools.count(1_790_000_000, 60)


def at(days_ago: float) -> int:
    """A Stripe `created` that many days before NOW."""
    return int(NOW.timestamp() - days_ago * DAY)


def feed(engine, event_type: str, obj: dict[str, Any], *, created: int | None = None) -> None:
    event = sf.event(event_type, obj, created=created or next(_created))
    ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=T0)


def fail(engine, invoice_id: str, *, created: int, **fields: Any) -> None:
    feed(engine, "invoice.payment_failed", invoice(invoice_id, "open", **fields), created=created)


def close(engine, invoice_id: str, how: str, *, created: int, **fields: Any) -> None:
    event_type, status = {
        "paid": ("invoice.paid", "paid"),
        "void": ("invoice.voided", "void"),
        "uncollectible": ("invoice.marked_uncollectible", "uncollectible"),
        "deleted": ("invoice.deleted", "deleted"),
    }[how]
    feed(engine, event_type, invoice(invoice_id, status, **fields), created=created)


def rows(engine) -> dict[str, Any]:
    with read_transaction(engine) as conn:
        return {row.id: row for row in failing_invoice_page(conn=conn, limit=500).rows}


def window(engine, days: int, now: datetime = NOW):
    with read_transaction(engine) as conn:
        return recovered(conn, days=days, now=now)


@pytest.mark.parametrize("shape", ["price", "plan", "expanded", "pricing"])
def test_every_payload_shape_gives_customer_plan_attempts_and_next_retry(engine, shape):
    feed(engine, "product.created", sf.product("prod_team", "Team"))
    retry = at(-2)
    fail(
        engine,
        "in_1",
        created=at(3),
        product="prod_team",
        shape=shape,
        customer={"id": "cus_9", "object": "customer", "email": "jane.doe@example.com"},
        next_attempt=retry,
        attempt_count=2,
    )
    [row] = rows(engine).values()
    assert (row.customer_id, row.product_id, row.plan_name) == ("cus_9", "prod_team", "Team")
    assert row.plan_id == str(plan_id_for("prod_team"))
    assert (row.attempts, row.next_retry) == (2, timestamp(retry))
    assert row.next_retry_text == timestamp(retry).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row.customer_url == "https://dashboard.stripe.com/test/customers/cus_9"


def test_no_retry_planned_reads_no_more_retries_and_a_partial_payload_keeps_it(engine):
    fail(engine, "in_1", created=at(3), next_attempt=at(-1), attempt_count=1)
    fail(engine, "in_1", created=at(2), next_attempt=None, attempt_count=4)
    [row] = rows(engine).values()
    assert (row.next_retry, row.next_retry_text, row.attempts) == (None, NO_MORE_RETRIES, 4)

    fail(engine, "in_2", created=at(3), next_attempt=at(-1), attempt_count=1)
    partial = {"id": "in_2", "object": "invoice", "status": "open", "attempted": True}
    feed(engine, "invoice.updated", partial, created=at(2))
    row = rows(engine)["in_2"]
    assert (row.next_retry, row.attempts, row.customer_id) == (timestamp(at(-1)), 1, "cus_1")


def test_the_invoice_keeps_its_own_plan_when_the_subscription_changes_plan(engine):
    feed(engine, "product.created", sf.product("prod_basic", "Basic"))
    feed(engine, "product.created", sf.product("prod_pro", "Pro"))
    feed(engine, "customer.subscription.created", sf.subscription("sub_1", "active", "prod_basic"))
    fail(engine, "in_old", created=at(5), product="prod_basic", subscription_id="sub_1")
    fail(engine, "in_none", created=at(4), subscription_id="sub_1")  # names no product
    feed(engine, "customer.subscription.updated", sf.subscription("sub_1", "active", "prod_pro"))
    by_id = rows(engine)
    assert by_id["in_old"].plan_name == "Basic"
    assert by_id["in_old"].plan_id == str(plan_id_for("prod_basic"))
    # Only an invoice that names no product takes its subscription's.
    assert by_id["in_none"].plan_name == "Pro"


def test_ids_in_links_are_url_encoded(engine):
    fail(engine, "in_a/b", created=at(1), customer="cus_x?y")
    [row] = rows(engine).values()
    assert row.stripe_url == "https://dashboard.stripe.com/test/invoices/in_a%2Fb"
    assert row.customer_url == "https://dashboard.stripe.com/test/customers/cus_x%3Fy"


def test_recovered_counts_failing_invoices_paid_in_the_window_per_currency(engine):
    fail(engine, "in_usd_1", created=at(20), amount_due=2900)
    close(engine, "in_usd_1", "paid", created=at(2), amount_due=2900)
    fail(engine, "in_usd_2", created=at(40), amount_due=1000)
    close(engine, "in_usd_2", "paid", created=at(10), amount_due=1000)
    fail(engine, "in_jpy", created=at(3), currency="jpy", amount_due=4500)
    close(engine, "in_jpy", "paid", created=at(1), currency="jpy", amount_due=4500)
    fail(engine, "in_old", created=at(100))
    close(engine, "in_old", "paid", created=at(95))  # paid before every window
    close(engine, "in_never_failed", "paid", created=at(1))  # paid at once: not a recovery
    fail(engine, "in_void", created=at(5))
    close(engine, "in_void", "void", created=at(1))

    assert window(engine, 7).totals == [
        RecoveredTotal("jpy", 1, 4500),
        RecoveredTotal("usd", 1, 2900),
    ]
    assert window(engine, 30).totals == [
        RecoveredTotal("usd", 2, 3900),
        RecoveredTotal("jpy", 1, 4500),
    ]
    assert window(engine, 90).totals == window(engine, 30).totals
    # Half-open: paid exactly `days` ago is in, paid at `now` is not.
    assert window(engine, 2, now=timestamp(at(2)) + timedelta(days=2)).totals == [
        RecoveredTotal("jpy", 1, 4500),
        RecoveredTotal("usd", 1, 2900),
    ]
    assert window(engine, 1, now=timestamp(at(2))).totals == []


def test_recovery_rate_is_the_share_of_closures_that_were_payments(engine):
    assert window(engine, 30).recovery_rate is None
    for n, how in enumerate(["paid", "paid", "paid", "void", "uncollectible", "deleted"]):
        fail(engine, f"in_{n}", created=at(20))
        close(engine, f"in_{n}", how, created=at(10))
    fail(engine, "in_open", created=at(20))  # still failing: not closed, not counted
    fail(engine, "in_early", created=at(60))  # started failing before the window
    close(engine, "in_early", "void", created=at(10))
    close(engine, "in_never_failed", "void", created=at(10))

    result = window(engine, 30)
    assert result.recovery_rate == pytest.approx(3 / 6)
    assert result.recovery_rate_text.startswith("Recovery rate 50%: ")
    assert window(engine, 90).recovery_rate == pytest.approx(3 / 7)
    assert window(engine, 7).recovery_rate is None
    assert "No invoice" in window(engine, 7).recovery_rate_text


def test_late_and_out_of_order_events_give_the_same_recovery(engine):
    # The payment arrives before the failure it ended: it still was failing, then paid.
    close(engine, "in_1", "paid", created=at(3))
    fail(engine, "in_1", created=at(6))
    # The closing event arrives after a newer update of the same state: paid when first paid.
    fail(engine, "in_2", created=at(40))
    feed(engine, "invoice.updated", invoice("in_2", "paid"), created=at(5))
    close(engine, "in_2", "paid", created=at(9))
    # Stripe's own transition time wins over the event's.
    fail(engine, "in_3", created=at(40))
    close(engine, "in_3", "paid", created=at(1), transitions={"paid_at": at(8)})
    # Marked uncollectible, then paid after all: a recovery when paid.
    fail(engine, "in_4", created=at(12))
    close(engine, "in_4", "uncollectible", created=at(11))
    close(engine, "in_4", "paid", created=at(2))
    # A late, older failure of a voided invoice does not reopen it, nor make it paid.
    fail(engine, "in_5", created=at(12))
    close(engine, "in_5", "void", created=at(4))
    fail(engine, "in_5", created=at(13))

    assert rows(engine) == {}
    assert window(engine, 7).totals == [RecoveredTotal("usd", 2, 5800)]  # in_1, in_4
    assert window(engine, 10).totals == [RecoveredTotal("usd", 4, 11600)]  # + in_2, in_3
    # Started failing in the last 14 days: in_1 and in_4 paid, in_5 voided.
    assert window(engine, 14).recovery_rate == pytest.approx(2 / 3)


def test_cursor_tokens_walk_the_pages_and_refuse_anything_else(engine):
    for n in range(5):
        fail(engine, f"in_{n}", created=at(10 - n))
    seen, after = [], None
    with statement_reads(engine) as conn:
        while True:
            answer = failed_payments(conn, limit=2, after=after, recovered_days=30, now=NOW)
            seen.extend(row.id for row in answer.page.rows)
            if answer.page.next_cursor is None:
                break
            token = cursor_token(answer.page.next_cursor)
            assert token.isascii() and "=" not in token
            after = parse_cursor_token(token)
    assert seen == [f"in_{n}" for n in reversed(range(5))]
    assert [(t.currency, t.invoices) for t in answer.totals] == [("usd", 5)]
    not_a_cursor = "bm90LWEtY3Vyc29y"  # base64 of "not-a-cursor"
    for bad in ["", "abc", "!!!", not_a_cursor, cursor_token(after) + "@@"]:
        with pytest.raises(BadCursor):
            parse_cursor_token(bad)


def test_csv_has_the_collections_columns_and_no_formulas(engine):
    feed(engine, "product.created", sf.product("prod_f", "-2+3"))
    fail(
        engine,
        "in_1",
        created=at(2),
        product="prod_f",
        customer="cus_1",
        next_attempt=at(-1),
        attempt_count=2,
    )
    fail(engine, "in_2", created=at(1), next_attempt=None)
    text = "".join(csv_pages(engine=engine))
    table = {row["invoice"]: row for row in csv.DictReader(io.StringIO(text))}
    first = table["in_1"]
    assert first["customer"] == "cus_1"
    assert first["plan"] == "'-2+3"
    assert first["attempts"] == "2"
    assert first["next_retry"] == timestamp(at(-1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first["customer_url"] == "https://dashboard.stripe.com/test/customers/cus_1"
    assert table["in_2"]["next_retry"] == NO_MORE_RETRIES
    assert "jane.doe@example.com" not in text


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_neutralises_every_formula_prefix_in_every_text_column(engine, prefix):
    feed(engine, "product.created", sf.product("prod_f", f"{prefix}cmd"))
    fail(engine, f"{prefix}in", created=at(1), product="prod_f", customer=f"{prefix}cus")
    text = "".join(csv_pages(engine=engine))
    [row] = list(csv.DictReader(io.StringIO(text)))
    for column in ("invoice", "customer", "plan"):
        assert row[column].startswith("'" + prefix), (column, row[column])


def test_sqlite_plans_read_recovered_through_the_partial_indexes(tmp_path):
    plans = sqlite_query_plans(tmp_path, "invoices", lambda c: recovered(c, days=30, now=NOW))
    assert len(plans) == 2
    (_, paid), (_, failed) = plans
    assert any("ix_invoices_closed_after_failing" in step for step in paid), paid
    assert any("ix_invoices_failed_then_closed" in step for step in failed), failed
