"""The event log the dashboard pages through: filters, keyset pages, hourly counts, CSV export."""

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from finance_core.feed.ingest import StripeEvent, dismiss_event, ingest_event
from finance_core.store.db import read_transaction
from finance_core.store.models import EVENT_STATUSES
from finance_core.views.event_log import (
    Cursor,
    EventFilter,
    count_events,
    csv_pages,
    event_page,
    event_types,
    events_per_hour,
    failed_events,
    latest_generation_failure,
    stripe_event_url,
)
from tests.support import stripe_factory as sf
from tests.support.query_plans import (
    sqlite_query_plans,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_created = itertools.count(1_790_000_000)


def feed(engine, event_type, obj, *, at, livemode=False, event_id=None):
    event = sf.event(event_type, obj, event_id=event_id, created=next(_created), livemode=livemode)
    return ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=at)


def build_log(engine):
    """12 events over 3 hours: products, subscriptions, an ignored type and two failures."""
    at = T0
    for n in range(4):
        feed(engine, "product.created", sf.product(f"prod_{n}", f"Plan {n}"), at=at)
        at += timedelta(minutes=10)
    for n in range(4):
        feed(
            engine,
            "customer.subscription.created",
            sf.subscription(f"sub_{n}", "active", "prod_0"),
            at=at,
        )
        at += timedelta(minutes=10)
    feed(engine, "customer.created", {"id": "cus_1", "object": "customer"}, at=at)
    at += timedelta(minutes=10)
    broken = sf.subscription("sub_broken", "active", "prod_0")
    del broken["status"]
    feed(engine, "customer.subscription.updated", broken, at=at, event_id="evt_broken_1")
    at += timedelta(minutes=10)
    feed(engine, "customer.subscription.updated", broken, at=at, event_id="evt_broken_2")
    at += timedelta(minutes=10)
    feed(
        engine,
        "invoice.paid",
        sf.invoice("in_1", "paid", subscription_id="sub_0"),
        at=at,
        livemode=True,
        event_id="evt_live",
    )


def page(engine, filters=None, **kwargs):
    with read_transaction(engine) as conn:
        return event_page(conn=conn, filters=filters or EventFilter(), **kwargs)


def test_pages_cover_the_log_newest_first_without_gaps_or_repeats(engine):
    build_log(engine)
    seen, after = [], None
    while True:
        result = page(engine, limit=5, after=after)
        seen.extend(result.rows)
        if result.next_cursor is None:
            break
        after = result.next_cursor
    assert len(seen) == 12
    assert len({row.id for row in seen}) == 12
    received = [row.first_received_at for row in seen]
    assert received == sorted(received, reverse=True)
    assert seen[0].id == "evt_live"


def test_keyset_breaks_ties_on_the_event_id(engine):
    for n in range(5):
        feed(
            engine,
            "product.created",
            sf.product(f"prod_{n}", "Same"),
            at=T0,
            event_id=f"evt_tie_{n}",
        )
    first = page(engine, limit=2)
    assert [row.id for row in first.rows] == ["evt_tie_4", "evt_tie_3"]
    assert first.next_cursor == Cursor(T0, "evt_tie_3")
    rest = page(engine, limit=10, after=first.next_cursor)
    assert [row.id for row in rest.rows] == ["evt_tie_2", "evt_tie_1", "evt_tie_0"]
    assert rest.next_cursor is None


def test_filters_by_type_status_and_half_open_time_range(engine):
    build_log(engine)
    by_type = page(engine, EventFilter(event_type="product.created"), limit=50).rows
    assert {row.type for row in by_type} == {"product.created"} and len(by_type) == 4

    failed = page(engine, EventFilter(status="failed")).rows
    assert [row.id for row in failed] == ["evt_broken_2", "evt_broken_1"]
    assert all("status" in (row.error or "") for row in failed)

    ignored = page(engine, EventFilter(status="ignored")).rows
    assert [row.type for row in ignored] == ["customer.created"]

    # [T0+10min, T0+30min): the events at 10 and 20 minutes, not the one at 30.
    window = EventFilter(start=T0 + timedelta(minutes=10), end=T0 + timedelta(minutes=30))
    assert [row.first_received_at for row in page(engine, window).rows] == [
        T0 + timedelta(minutes=20),
        T0 + timedelta(minutes=10),
    ]
    both = EventFilter(
        event_type="customer.subscription.created",
        status="processed",
        start=T0 + timedelta(minutes=45),
    )
    assert len(page(engine, both).rows) == 3  # at 50, 60 and 70 minutes


def test_counts_are_capped(engine):
    build_log(engine)
    with read_transaction(engine) as conn:
        assert count_events(conn=conn, filters=EventFilter()) == 12
        assert count_events(conn=conn, filters=EventFilter(status="failed")) == 2
        assert count_events(conn=conn, filters=EventFilter(), cap=5) == 6


def test_failed_events_leave_out_dismissed_ones(engine):
    build_log(engine)
    dismiss_event(engine=engine, event_id="evt_broken_1", actor="admin", now=T0)
    with read_transaction(engine) as conn:
        rows = failed_events(conn=conn)
    assert [row.id for row in rows] == ["evt_broken_2"]
    assert rows[0].error and rows[0].attempts == 1


def test_event_types_are_distinct_and_sorted(engine):
    with read_transaction(engine) as conn:
        assert event_types(conn=conn) == []
    build_log(engine)
    with read_transaction(engine) as conn:
        assert event_types(conn=conn) == [
            "customer.created",
            "customer.subscription.created",
            "customer.subscription.updated",
            "invoice.paid",
            "product.created",
        ]


def test_events_per_hour_by_status(engine):
    build_log(engine)
    with read_transaction(engine) as conn:
        hourly = events_per_hour(conn=conn, start=T0, end=T0 + timedelta(hours=3))
        later = events_per_hour(
            conn=conn, start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=3)
        )
    counts = {(item.hour, item.status): item.count for item in hourly}
    # Minutes 0..50 in the first hour, 60..110 in the second.
    assert counts == {
        (T0, "processed"): 6,
        (T0 + timedelta(hours=1), "processed"): 3,
        (T0 + timedelta(hours=1), "ignored"): 1,
        (T0 + timedelta(hours=1), "failed"): 2,
    }
    assert all(item.hour.tzinfo is not None for item in hourly)
    assert sum(item.count for item in later) == 6


def test_stripe_links_follow_the_event_mode(engine):
    build_log(engine)
    rows = page(engine, limit=2).rows
    assert rows[0].stripe_url == "https://dashboard.stripe.com/events/evt_live"
    assert rows[1].stripe_url == "https://dashboard.stripe.com/test/events/evt_broken_2"
    assert stripe_event_url("evt_x", livemode=False).endswith("/test/events/evt_x")


def test_csv_export_streams_every_filtered_row_in_pages(engine):
    build_log(engine)
    chunks = list(csv_pages(engine=engine, filters=EventFilter(), page_size=5))
    assert len(chunks) == 1 + 3  # header, then pages of 5, 5 and 2
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert len(rows) == 12
    assert rows[0]["id"] == "evt_live" and rows[0]["livemode"] == "true"
    assert rows[0]["first_received_at"].endswith("Z")
    assert rows[0]["stripe_url"] == "https://dashboard.stripe.com/events/evt_live"

    failed = "".join(csv_pages(engine=engine, filters=EventFilter(status="failed")))
    failed_rows = list(csv.DictReader(io.StringIO(failed)))
    assert [row["id"] for row in failed_rows] == ["evt_broken_2", "evt_broken_1"]
    assert "status" in failed_rows[0]["error"]


def test_csv_cells_never_start_a_formula(engine):
    feed(engine, "=cmd|' /C calc'!A0", {"id": "x_1"}, at=T0, event_id="evt_formula")
    rows = list(
        csv.DictReader(io.StringIO("".join(csv_pages(engine=engine, filters=EventFilter()))))
    )
    assert rows[0]["type"].startswith("'=")


def test_filters_reject_bad_input():
    with pytest.raises(ValueError, match="status"):
        EventFilter(status="exploded")
    with pytest.raises(ValueError, match="naive"):
        EventFilter(start=datetime(2026, 1, 1))


def test_sqlite_plans_read_index_ranges(tmp_path):
    """The statements the log runs use an index on SQLite, never a scan of the whole table."""
    window = EventFilter(start=T0, end=T0 + timedelta(hours=1))

    def read(conn):
        event_page(conn=conn, filters=window, after=Cursor(T0, "evt_1"))
        event_page(conn=conn, filters=EventFilter(status="failed", start=T0))
        event_page(conn=conn, filters=EventFilter(event_type="invoice.paid"))
        count_events(conn=conn, filters=window)
        events_per_hour(conn=conn, start=T0, end=T0 + timedelta(days=1))
        event_types(conn=conn)
        latest_generation_failure(conn=conn)

    plans = sqlite_query_plans(tmp_path, "webhook_events", read)
    assert len(plans) == 6 + len(EVENT_STATUSES)  # events_per_hour: one query per status
    for statement, details in plans:
        scans = [d for d in details if d.startswith("SCAN") and "INDEX" not in d]
        assert not [d for d in scans if "webhook_events" in d], (statement, details)


def test_failed_payments_count_reads_the_kept_totals_not_the_invoices_on_sqlite(tmp_path):
    """Inside the Finance API's one-statement answer the count is the totals the invoice
    triggers keep, a row per currency, whatever the number of failing invoices."""
    from finance_core.views.queries import stripe_sync_status

    def read(conn):
        assert stripe_sync_status(conn=conn, delayed_after=3600, now=T0).failed_payments_count == 0

    plans = sqlite_query_plans(tmp_path, "failing_invoice_totals", read)
    assert len(plans) == 1
    for statement, details in plans:
        assert "SCAN failing_invoice_totals" in details, (statement, details)
        assert not any("invoices " in detail for detail in details), (statement, details)


def test_the_api_answers_read_events_through_indexes_on_sqlite(tmp_path):
    """The latest delivery and the failed count never scan every event."""
    from finance_core.views.queries import stripe_sync_status, subscription_summary

    def read(conn):
        subscription_summary(conn=conn, active_statuses=["active"], now=T0)
        stripe_sync_status(conn=conn, delayed_after=3600, now=T0)

    plans = sqlite_query_plans(tmp_path, "webhook_events", read)
    assert len(plans) == 2
    for statement, details in plans:
        scans = [d for d in details if d.startswith("SCAN") and "INDEX" not in d]
        assert not [d for d in scans if "webhook_events" in d], (statement, details)
