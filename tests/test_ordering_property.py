"""Whatever order Stripe delivers in, the store ends where the newest event per object says."""

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from finance_core.feed.ingest import StripeEvent, ingest_event
from finance_core.store.db import read_transaction
from finance_core.store.models import invoices, subscriptions
from tests.support import stripe_factory as sf
from tests.support.reads import failed_payments_count, maintained_and_recounted

SUB_STATUSES = ["incomplete", "trialing", "active", "past_due", "unpaid", "paused", "canceled"]
INVOICE_EVENTS = {
    "invoice.payment_failed": "open",
    "invoice.paid": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}
_runs = itertools.count()

sub_change = st.tuples(
    st.sampled_from(SUB_STATUSES), st.sampled_from(["prod_a", "prod_b", "prod_c"])
)
invoice_change = st.sampled_from(sorted(INVOICE_EVENTS))


@st.composite
def histories(draw):
    """Per object, a few changes with distinct `created` times, then all shuffled together."""
    events, expected_subs, expected_invoices = [], {}, {}
    run = next(_runs)
    for n in range(draw(st.integers(1, 4))):
        sub_id = f"sub_p{run}_{n}"
        changes = draw(st.lists(sub_change, min_size=1, max_size=5))
        times = draw(
            st.lists(
                st.integers(0, 10_000), min_size=len(changes), max_size=len(changes), unique=True
            )
        )
        for (status, product), created in zip(changes, times, strict=True):
            events.append(
                sf.event(
                    "customer.subscription.updated",
                    sf.subscription(sub_id, status, product),
                    created=created,
                )
            )
        newest = max(zip(times, changes, strict=True))[1]
        expected_subs[sub_id] = newest
    for n in range(draw(st.integers(0, 3))):
        invoice_id = f"in_p{run}_{n}"
        kinds = draw(st.lists(invoice_change, min_size=1, max_size=4))
        times = draw(
            st.lists(st.integers(0, 10_000), min_size=len(kinds), max_size=len(kinds), unique=True)
        )
        for kind, created in zip(kinds, times, strict=True):
            events.append(
                sf.event(kind, sf.invoice(invoice_id, INVOICE_EVENTS[kind]), created=created)
            )
        newest_kind = max(zip(times, kinds, strict=True))[1]
        expected_invoices[invoice_id] = newest_kind == "invoice.payment_failed"
    order = draw(st.permutations(range(len(events))))
    return [events[i] for i in order], expected_subs, expected_invoices


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_final_state_is_the_newest_event_in_any_delivery_order(engine, history):
    events, expected_subs, expected_invoices = history
    now = datetime.now(UTC)
    for event in events:
        result = ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=now)
        assert result.outcome == "processed"

    with read_transaction(engine) as conn:
        for sub_id, (status, product) in expected_subs.items():
            row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id)).one()
            assert (row.status, row.product_id) == (status, product)
        for invoice_id, failing in expected_invoices.items():
            row = conn.execute(select(invoices).where(invoices.c.id == invoice_id)).one()
            assert row.payment_failing is failing

        # The maintained counts always equal a count of the subscriptions themselves.
        maintained, counted = maintained_and_recounted(conn)
        assert maintained == counted
        failing_rows = conn.execute(
            select(func.count()).select_from(invoices).where(invoices.c.payment_failing.is_(True))
        ).scalar_one()
        assert failed_payments_count(conn) == failing_rows
