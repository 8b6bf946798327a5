"""Compatibility: real payloads written by other projects (../shared/fixtures/stripe/).

Every event is delivered signed over HTTP, in `created` order, and must be accepted with 200
and land as SPEC section 4 says. Fixture event ids are reused across files (stripe-ruby-mock
gives them all one id), so each delivery gets its file name appended to stay distinct.
"""

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from finance_core.feed.ingest import (
    HANDLERS,
    TERMINAL_INVOICE_STATUSES,
    TERMINAL_SUBSCRIPTION_STATUSES,
)
from finance_core.feed.stripe_shapes import (
    invoice_subscription,
    item_product_and_price,
    subscription_dates,
    timestamp,
)
from finance_core.store.db import read_transaction
from finance_core.store.models import (
    invoices,
    prices,
    products,
    subscriptions,
    webhook_events,
)
from tests.conftest import deliver, skip_or_fail
from tests.support import stripe_factory as sf
from tests.support.reads import cumulative_history, maintained_and_recounted
from tests.support.store_dump import store_text

# ../shared from the repository; STRIPE_FIXTURES elsewhere (a git worktree, for one).
FIXTURES = Path(
    os.environ.get("STRIPE_FIXTURES")
    or Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe"
)
# Where a payload without an envelope comes from a file name, the event type it stands for.
BARE_TYPES = {
    "subscription.created": "customer.subscription.created",
    "subscription.updated": "customer.subscription.updated",
    "subscription.deleted": "customer.subscription.deleted",
    "subscription.trial_ended": "customer.subscription.updated",
    "subscription.trial_will_end": "customer.subscription.trial_will_end",
    "invoice": "invoice.updated",
    "invoice.updated": "invoice.updated",
    "invoice.payment_failed": "invoice.payment_failed",
    "invoice.payment_action_required": "invoice.payment_action_required",
}
OPENAPI_TYPES = {
    "subscription": "customer.subscription.updated",
    "invoice": "invoice.updated",
    "product": "product.updated",
    "price": "price.updated",
    "plan": "plan.updated",
    "deleted_product": "product.deleted",
    "deleted_invoice": "invoice.deleted",
    "customer": "customer.updated",
}


def fixture_events() -> list[dict[str, Any]]:
    """Every fixture as a full event, with a distinct id, sorted by `created`."""
    events = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        data = json.loads(path.read_text())
        tag = f"{path.parent.name}_{path.stem}".replace(".", "_")
        if path.parent.name == "stripe-openapi":
            for resource, event_type in OPENAPI_TYPES.items():
                obj = data["resources"][resource]
                events.append(
                    sf.event(
                        event_type,
                        obj,
                        event_id=f"evt_openapi_{resource}",
                        created=1785000000,
                        api_version="2026-07-29.dahlia",
                    )
                )
            continue
        if "data" in data:  # a full event
            event = dict(data)
            event["id"] = f"{data['id']}__{tag}"
        else:  # pay-rails: the event's data only, or the bare object
            obj = data["object"] if isinstance(data.get("object"), dict) else data
            event = sf.event(
                BARE_TYPES[path.stem],
                obj,
                event_id=f"evt_{tag}",
                created=obj.get("created") or 1743465600,
                api_version="2025-03-31.basil",
            )
        events.append(event)
    return sorted(events, key=lambda e: e["created"])


def personal_data_in_fixtures() -> set[str]:
    """Customer emails, names, phones and address lines the fixtures carry."""
    found: set[str] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            is_person = value.get("object") == "customer" or "email" in value
            for k, v in value.items():
                if (
                    isinstance(v, str)
                    and len(v) > 3
                    and (
                        k
                        in {
                            "email",
                            "customer_email",
                            "customer_name",
                            "phone",
                            "customer_phone",
                            "line1",
                            "line2",
                            "receipt_email",
                        }
                        or (is_person and k == "name")
                    )
                ):
                    found.add(v)
                walk(v, k)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)

    for event in fixture_events():
        walk(event)
    return found


@pytest.fixture(scope="module", autouse=True)
def fixtures_present() -> None:
    if not FIXTURES.is_dir():
        skip_or_fail(f"no fixtures at {FIXTURES}")


def expected_product(subscription: dict[str, Any]) -> str:
    items = subscription["items"]["data"]
    return (item_product_and_price(items[0])[0] or "") if items else ""


def stored(engine: Engine, table, object_id: str):
    with read_transaction(engine) as conn:
        return conn.execute(select(table).where(table.c.id == object_id)).first()


def test_every_fixture_is_accepted_and_lands_as_the_rules_say(http, engine):
    events = fixture_events()
    assert len(events) > 50
    for event in events:
        response = deliver(http, event)
        assert response.status_code == 200, (event["id"], response.text)
        outcome = response.json()["outcome"]
        obj, event_type = event["data"]["object"], event["type"]
        handler = HANDLERS.get(event_type)
        assert outcome == ("processed" if handler else "ignored"), event["id"]
        if handler is None:
            assert stored(engine, webhook_events, event["id"]).status == "ignored"
            continue
        kind = event_type.rsplit(".", 1)[0]
        if kind == "customer.subscription":
            row = stored(engine, subscriptions, obj["id"])
            if row.state_event_id != event["id"]:  # an equal-`created` terminal state stays
                assert row.status in TERMINAL_SUBSCRIPTION_STATUSES
                assert row.state_created == event["created"]
                continue
            assert row.status == obj["status"]
            assert row.product_id == expected_product(obj)
            # Stripe's own dates, which date the history, in every version's shape.
            started, canceled, ended = subscription_dates(obj, obj["status"])
            # Without them (a trimmed payload), a start the store knew, else the event's time.
            assert row.started_at == (started or row.started_at) is not None, event["id"]
            if obj["status"] == "canceled":
                assert (row.canceled_at, row.ended_at) == (canceled, ended), event["id"]
                assert canceled is not None and ended is not None
            else:
                assert row.canceled_at is None and row.ended_at is None
        elif kind == "invoice":
            row = stored(engine, invoices, obj["id"])
            if row.state_event_id != event["id"]:
                assert row.status in TERMINAL_INVOICE_STATUSES
                assert row.state_created == event["created"]
                continue
            if invoice_subscription(obj) is not None:  # a deleted invoice keeps its link
                assert row.subscription_id == invoice_subscription(obj)
            if event_type == "invoice.payment_failed":
                assert row.payment_failing is True
            if row.status in TERMINAL_INVOICE_STATUSES:
                assert row.payment_failing is False
        elif kind == "product":
            row = stored(engine, products, obj["id"])
            assert row.state_event_id == event["id"]
            assert row.deleted is event_type.endswith("deleted")
            if obj.get("name"):
                assert row.name == obj["name"]
        elif kind in ("price", "plan"):
            row = stored(engine, prices, obj["id"])
            assert row.state_event_id == event["id"]
            assert row.product_id == (
                obj["product"] if isinstance(obj["product"], str) else obj["product"]["id"]
            )


def test_fixtures_history_adds_up_to_the_counts(http, engine):
    for event in fixture_events():
        assert deliver(http, event).status_code == 200
    with read_transaction(engine) as conn:
        maintained, recount = maintained_and_recounted(conn)
        changes = cumulative_history(conn)
    assert changes == maintained == recount


def test_basil_invoice_links_its_subscription_through_parent(http, engine):
    (event,) = [e for e in fixture_events() if e["id"] == "evt_pay-rails_invoice_payment_failed"]
    assert deliver(http, event).status_code == 200
    row = stored(engine, invoices, event["data"]["object"]["id"])
    assert (row.subscription_id, row.payment_failing) == ("sub_1234", True)


# What collections needs from each shape of invoice (SPEC 16): the customer, the product of the
# first line (price.product, plan.product, or 2025+ pricing.price_details.product), the
# attempts, the next retry (None: Stripe plans none) and, once paid, the amount and when.
COLLECTIONS = {
    "evt_pay-rails_invoice_payment_failed": ("cus_1234", "prod_1234", 1, 1745552783, None),
    "evt_pay-rails_invoice": ("cus_S9YwWMaQEgeJYO", "prod_IxQQWtyij0rvGp", 1, None, 1744986363),
    "stripe-ruby-mock_invoice_payment_failed": (
        "cus_00000000000000",
        "prod_00000000000000",
        1,
        None,
        None,
    ),
    "stripe-sync-engine_invoice_updated": (
        "cus_JVhbiWW9p3F6wq",
        "prod_Ip4vqwv3EJ7Mi0",
        0,
        1642653020,
        None,
    ),
    "stripe-sync-engine_invoice_paid": (
        "cus_JsuO3bmrj0QlAw",
        "prod_Ip4vqwv3EJ7Mi0",
        0,
        None,
        1642649110,
    ),
    "evt_openapi_invoice": ("cus_QXg1o8vcGmoR32", None, 0, 1234567890, None),
}


def test_every_invoice_shape_gives_what_collections_needs(http, engine):
    events = {event["id"]: event for event in fixture_events()}
    for key, (customer, product, attempts, next_attempt, paid_at) in COLLECTIONS.items():
        [event] = [event for event_id, event in events.items() if event_id.endswith(key)]
        assert deliver(http, event).status_code == 200
        row = stored(engine, invoices, event["data"]["object"]["id"])
        assert row.state_event_id == event["id"], key
        assert (row.customer_id, row.product_id, row.attempt_count) == (
            customer,
            product,
            attempts,
        ), key
        assert row.next_payment_attempt == timestamp(next_attempt), key
        if paid_at is None:
            assert row.closed_at is None, key
        else:
            assert (row.status, row.closed_at) == ("paid", timestamp(paid_at)), key
            assert row.amount_paid == event["data"]["object"]["amount_paid"], key


def test_store_keeps_no_customer_personal_data(http, engine):
    personal = personal_data_in_fixtures()
    assert {"billing@supabase.io", "Example Customer", "+6587498462"} <= personal
    for event in fixture_events():
        assert deliver(http, event).status_code == 200

    dump = store_text(engine)
    leaked = sorted(value for value in personal if value in dump)
    assert leaked == []
