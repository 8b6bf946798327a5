"""Signed deliveries through real HTTP: what lands in the store, in old and new payload shapes."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine, select

from finance_core.store.db import read_transaction
from finance_core.store.models import invoices, prices, products, subscriptions, webhook_events
from finance_core.views.queries import stripe_sync_status
from tests.conftest import deliver
from tests.support import stripe_factory as sf
from tests.support.reads import failed_payments_count, plan_counts

SHAPES = ["old", "new", "legacy"]


def row(engine: Engine, table, object_id: str):
    with read_transaction(engine) as conn:
        return conn.execute(select(table).where(table.c.id == object_id)).first()


def event_row(engine: Engine, event_id: str):
    return row(engine, webhook_events, event_id)


def counts(engine: Engine, *statuses: str) -> dict[str, int]:
    with read_transaction(engine) as conn:
        return {p.product_id: p.count for p in plan_counts(conn, statuses)}


def ok(response: httpx.Response, outcome: str = "processed") -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "outcome": outcome}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "event_type",
    [f"customer.subscription.{name}" for name in ("created", "updated", "paused", "resumed")],
)
def test_subscription_events_store_status_plan_and_period(http, engine, shape, event_type):
    status = {"customer.subscription.paused": "paused"}.get(event_type, "active")
    sub = sf.subscription("sub_shape1", status, "prod_pro", shape=shape, price_id="price_pro_m")
    api_version = sf.NEW_API if shape == "new" else sf.OLD_API
    ok(deliver(http, sf.event(event_type, sub, api_version=api_version)))

    stored = row(engine, subscriptions, "sub_shape1")
    assert (stored.status, stored.product_id, stored.price_id) == (
        status,
        "prod_pro",
        "price_pro_m",
    )
    assert stored.customer_id == "cus_suite0001"
    assert stored.current_period_start == datetime(2025, 12, 1, tzinfo=UTC)
    assert stored.current_period_end == datetime(2026, 1, 1, tzinfo=UTC)
    assert counts(engine, status) == {"prod_pro": 1}


def test_expanded_product_object_is_read_by_its_id(http, engine):
    sub = sf.subscription("sub_exp", "active", "prod_x")
    sub["items"]["data"][0]["price"]["product"] = sf.product("prod_x", "Expanded")
    ok(deliver(http, sf.event("customer.subscription.created", sub)))
    assert row(engine, subscriptions, "sub_exp").product_id == "prod_x"


def test_deleted_subscription_leaves_the_active_count(http, engine):
    created = int(time.time()) - 100
    sub = sf.subscription("sub_del", "active", "prod_a")
    ok(deliver(http, sf.event("customer.subscription.created", sub, created=created)))
    assert counts(engine, "active") == {"prod_a": 1}

    ended = sf.subscription("sub_del", "canceled", "prod_a")
    ok(deliver(http, sf.event("customer.subscription.deleted", ended, created=created + 10)))
    assert counts(engine, "active") == {}
    assert counts(engine, "canceled") == {"prod_a": 1}


def test_plan_change_moves_the_subscription_between_plans(http, engine):
    created = int(time.time()) - 100
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.created",
                sf.subscription("sub_move", "active", "prod_a"),
                created=created,
            ),
        )
    )
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.updated",
                sf.subscription("sub_move", "active", "prod_b"),
                created=created + 1,
            ),
        )
    )
    assert counts(engine, "active") == {"prod_b": 1}


def test_subscription_without_items_counts_under_no_plan(http, engine):
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.created", sf.subscription("sub_bare", "incomplete", None)
            ),
        )
    )
    with read_transaction(engine) as conn:
        (plan,) = plan_counts(conn, ["incomplete"])
    assert (plan.product_id, plan.plan_name, plan.count) == ("", "No plan", 1)


@pytest.mark.parametrize("shape", ["old", "new"])
def test_failed_invoice_counts_until_paid(http, engine, shape):
    created = int(time.time()) - 100
    failing = sf.invoice("in_f1", "open", subscription_id="sub_1", shape=shape)
    ok(deliver(http, sf.event("invoice.payment_failed", failing, created=created)))
    stored = row(engine, invoices, "in_f1")
    assert (stored.payment_failing, stored.subscription_id) == (True, "sub_1")
    assert (stored.amount_due, stored.currency) == (2900, "usd")

    paid = sf.invoice("in_f1", "paid", subscription_id="sub_1", shape=shape)
    ok(deliver(http, sf.event("invoice.paid", paid, created=created + 5)))
    assert row(engine, invoices, "in_f1").payment_failing is False


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("invoice.paid", "paid"),
        ("invoice.payment_succeeded", "paid"),
        ("invoice.voided", "void"),
        ("invoice.marked_uncollectible", "uncollectible"),
        ("invoice.deleted", "deleted"),
        ("invoice.updated", "paid"),
        ("invoice.updated", "void"),
    ],
)
def test_every_closing_invoice_event_takes_it_out_of_failed_payments(
    http, engine, event_type, status
):
    created = int(time.time()) - 100
    ok(
        deliver(
            http, sf.event("invoice.payment_failed", sf.invoice("in_c", "open"), created=created)
        )
    )
    with read_transaction(engine) as conn:
        assert failed_payments_count(conn) == 1
    ok(deliver(http, sf.event(event_type, sf.invoice("in_c", status), created=created + 1)))
    with read_transaction(engine) as conn:
        assert failed_payments_count(conn) == 0
    assert row(engine, invoices, "in_c").status == status


def test_invoice_updated_open_and_attempted_counts_as_failing(http, engine):
    ok(deliver(http, sf.event("invoice.updated", sf.invoice("in_u", "open", attempted=True))))
    ok(deliver(http, sf.event("invoice.updated", sf.invoice("in_d", "draft", attempted=False))))
    assert row(engine, invoices, "in_u").payment_failing is True
    assert row(engine, invoices, "in_d").payment_failing is False


def test_one_off_invoice_without_subscription_still_counts(http, engine):
    ok(deliver(http, sf.event("invoice.payment_failed", sf.invoice("in_one", "open"))))
    assert row(engine, invoices, "in_one").subscription_id is None
    with read_transaction(engine) as conn:
        assert failed_payments_count(conn) == 1


def test_products_and_prices_keep_names_and_amounts(http, engine):
    created = int(time.time()) - 100
    ok(deliver(http, sf.event("product.created", sf.product("prod_n", "Pro"), created=created)))
    ok(
        deliver(
            http, sf.event("product.updated", sf.product("prod_n", "Pro 2026"), created=created + 1)
        )
    )
    ok(
        deliver(
            http,
            sf.event(
                "price.created", sf.price("price_n", "prod_n", unit_amount=4900), created=created
            ),
        )
    )
    ok(
        deliver(
            http,
            sf.event("customer.subscription.created", sf.subscription("sub_n", "active", "prod_n")),
        )
    )
    with read_transaction(engine) as conn:
        (plan,) = plan_counts(conn, ["active"])
    assert plan.plan_name == "Pro 2026"
    stored_price = row(engine, prices, "price_n")
    assert (stored_price.product_id, stored_price.unit_amount, stored_price.currency) == (
        "prod_n",
        4900,
        "usd",
    )
    assert stored_price.recurring_interval == "month"

    # A deleted product's object carries only its id: the plan keeps its name.
    gone = {"id": "prod_n", "object": "product", "deleted": True}
    ok(deliver(http, sf.event("product.deleted", gone, created=created + 2)))
    stored = row(engine, products, "prod_n")
    assert (stored.deleted, stored.name) == (True, "Pro 2026")
    ok(
        deliver(
            http,
            sf.event(
                "price.deleted",
                {"id": "price_n", "object": "price", "deleted": True},
                created=created + 2,
            ),
        )
    )
    assert row(engine, prices, "price_n").deleted is True
    assert row(engine, prices, "price_n").unit_amount == 4900


def test_plan_name_is_the_product_id_until_the_name_is_known(http, engine):
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.created", sf.subscription("sub_un", "active", "prod_unnamed")
            ),
        )
    )
    with read_transaction(engine) as conn:
        (plan,) = plan_counts(conn, ["active"])
    assert plan.plan_name == "prod_unnamed"


# --- idempotency -----------------------------------------------------------------------


def test_sequential_duplicate_changes_nothing_but_the_delivery_count(http, engine):
    created = int(time.time()) - 100
    first = sf.event(
        "customer.subscription.created",
        sf.subscription("sub_d", "active", "prod_a"),
        created=created,
    )
    ok(deliver(http, first))
    # Between the two deliveries a newer event changes the subscription...
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.updated",
                sf.subscription("sub_d", "past_due", "prod_a"),
                created=created + 5,
            ),
        )
    )
    # ...and the redelivered old event must not bring the old state back.
    ok(deliver(http, first), "duplicate")
    assert row(engine, subscriptions, "sub_d").status == "past_due"
    assert counts(engine, "active", "past_due", "trialing") == {"prod_a": 1}
    recorded = event_row(engine, first["id"])
    assert (recorded.deliveries, recorded.attempts, recorded.status) == (2, 1, "processed")


def test_concurrent_duplicates_never_error_and_apply_once(http, engine):
    event = sf.event("customer.subscription.created", sf.subscription("sub_cc", "active", "prod_a"))
    body, headers = sf.signed(event)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(
            pool.map(
                lambda _: http.post("/webhooks/stripe", content=body, headers=headers), range(16)
            )
        )
    assert [r.status_code for r in responses] == [200] * 16
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["duplicate"] * 15 + ["processed"]
    assert counts(engine, "active") == {"prod_a": 1}
    assert event_row(engine, event["id"]).deliveries == 16


# --- ordering --------------------------------------------------------------------------


def test_late_older_event_changes_nothing(http, engine):
    now = int(time.time())
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.updated",
                sf.subscription("sub_late", "canceled", "prod_a"),
                created=now,
            ),
        )
    )
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.created",
                sf.subscription("sub_late", "active", "prod_a"),
                created=now - 60,
            ),
        )
    )
    assert row(engine, subscriptions, "sub_late").status == "canceled"
    assert counts(engine, "active") == {}
    assert counts(engine, "canceled") == {"prod_a": 1}


def test_late_older_payment_failure_does_not_bring_a_paid_invoice_back(http, engine):
    now = int(time.time())
    ok(deliver(http, sf.event("invoice.paid", sf.invoice("in_late", "paid"), created=now)))
    ok(
        deliver(
            http,
            sf.event("invoice.payment_failed", sf.invoice("in_late", "open"), created=now - 30),
        )
    )
    with read_transaction(engine) as conn:
        assert failed_payments_count(conn) == 0


def test_same_second_later_arrival_wins(http, engine):
    now = int(time.time())
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.updated",
                sf.subscription("sub_tie", "trialing", "prod_a"),
                created=now,
            ),
        )
    )
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.updated",
                sf.subscription("sub_tie", "active", "prod_a"),
                created=now,
            ),
        )
    )
    assert row(engine, subscriptions, "sub_tie").status == "active"


def test_same_second_never_replaces_a_terminal_state(http, engine):
    now = int(time.time())
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.deleted",
                sf.subscription("sub_term", "canceled", "prod_a"),
                created=now,
            ),
        )
    )
    ok(
        deliver(
            http,
            sf.event(
                "customer.subscription.updated",
                sf.subscription("sub_term", "active", "prod_a"),
                created=now,
            ),
        )
    )
    assert row(engine, subscriptions, "sub_term").status == "canceled"

    ok(deliver(http, sf.event("invoice.paid", sf.invoice("in_term", "paid"), created=now)))
    ok(
        deliver(
            http, sf.event("invoice.payment_failed", sf.invoice("in_term", "open"), created=now)
        )
    )
    assert row(engine, invoices, "in_term").status == "paid"
    with read_transaction(engine) as conn:
        assert failed_payments_count(conn) == 0


def test_same_second_terminal_replaces_non_terminal(http, engine):
    now = int(time.time())
    ok(deliver(http, sf.event("invoice.payment_failed", sf.invoice("in_tt", "open"), created=now)))
    ok(deliver(http, sf.event("invoice.voided", sf.invoice("in_tt", "void"), created=now)))
    assert row(engine, invoices, "in_tt").payment_failing is False


# --- failures and unused types ---------------------------------------------------------


def test_unused_event_types_are_ignored_with_200(http, engine):
    event = sf.event(
        "customer.created", {"id": "cus_x", "object": "customer", "email": "someone@example.com"}
    )
    ok(deliver(http, event), "ignored")
    assert event_row(engine, event["id"]).status == "ignored"
    ok(deliver(http, event), "duplicate")


def test_failed_apply_names_an_event_id_beyond_ascii_exactly(http, engine):
    """The writer's reply carries the id and the error as UTF-8; neither comes back garbled."""
    broken = sf.subscription("sub_brökén", "active", "prod_a")
    del broken["items"]
    event = sf.event("customer.subscription.updated", broken, event_id="evt_ünïcödé_€")
    response = deliver(http, event)
    assert response.status_code == 500
    assert response.json()["event_id"] == "evt_ünïcödé_€"
    assert event_row(engine, "evt_ünïcödé_€").status == "failed"


def test_failed_apply_answers_500_keeps_the_event_and_heals_on_redelivery(http, engine):
    now = int(time.time())
    broken = sf.subscription("sub_broken", "active", "prod_a")
    del broken["items"]
    event = sf.event("customer.subscription.updated", broken, created=now)
    response = deliver(http, event)
    assert response.status_code == 500
    assert response.json()["error"] == "apply_failed"

    kept = event_row(engine, event["id"])
    assert kept.status == "failed"
    assert "items" in kept.error
    assert json.loads(kept.payload)["id"] == event["id"]
    assert row(engine, subscriptions, "sub_broken") is None
    with read_transaction(engine) as conn:
        status = stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))
    assert status.webhook_health == "error"

    # Stripe redelivers the same id; this time the payload is whole (e.g. after a fix).
    event["data"]["object"] = sf.subscription("sub_broken", "active", "prod_a")
    ok(deliver(http, event))
    healed = event_row(engine, event["id"])
    assert (healed.status, healed.error, healed.payload) == ("processed", None, None)
    assert (healed.attempts, healed.deliveries) == (2, 2)
    with read_transaction(engine) as conn:
        status = stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))
    assert status.webhook_health == "healthy"
    assert counts(engine, "active") == {"prod_a": 1}


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        (
            "customer.subscription.updated",
            {"object": "subscription", "status": "active", "items": {"data": []}},
        ),
        (
            "customer.subscription.updated",
            {"id": "sub_ns", "object": "subscription", "items": {"data": []}},
        ),
        ("customer.subscription.updated", {"id": "sub_ni", "status": "active", "items": "nope"}),
        ("invoice.payment_failed", {"object": "invoice", "status": "open"}),
        ("invoice.updated", {"id": "in_nostatus", "object": "invoice"}),
        ("product.updated", {"object": "product", "name": "No id"}),
    ],
)
def test_objects_missing_what_their_type_needs_fail_without_effects(http, engine, event_type, obj):
    event = sf.event(event_type, obj)
    assert deliver(http, event).status_code == 500
    assert event_row(engine, event["id"]).status == "failed"
    with read_transaction(engine) as conn:
        for table in (subscriptions, invoices, products):
            assert conn.execute(select(table)).first() is None


def test_a_failed_event_that_fails_again_stays_failed(http, engine):
    broken = sf.event("customer.subscription.updated", {"id": "sub_x", "object": "subscription"})
    assert deliver(http, broken).status_code == 500
    assert deliver(http, broken).status_code == 500
    kept = event_row(engine, broken["id"])
    assert (kept.status, kept.attempts, kept.deliveries) == ("failed", 2, 2)
