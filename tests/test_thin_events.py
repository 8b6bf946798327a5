"""Thin events (SPEC 11): intake over real HTTP, and resolution with the real `stripe` library.

The resolver runs in-process here against the HTTP stand-in of Stripe's API, so that each
test drives its cycles; tests/test_thin_events_processes.py runs it inside real listener
processes.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError

from finance_core.feed import resolver as resolver_module
from finance_core.feed import thin_fetching
from finance_core.feed.events import parse_payload
from finance_core.feed.ingest import Delivery, ingest_batch, ingest_event
from finance_core.feed.resolver import CycleReport, Resolver
from finance_core.feed.thin_claims import CLAIM_LEASE
from finance_core.feed.thin_fetching import Backoff
from finance_core.store import db, migrate
from finance_core.store.db import WRITE_OPTION, make_engine, read_transaction
from finance_core.store.models import invoices, prices, products, subscriptions, webhook_events
from finance_core.transient import is_transient
from finance_core.views.queries import WebhookHealth, stripe_sync_status
from tests.conftest import deliver, make_settings
from tests.support import stripe_factory as sf
from tests.support.store_dump import store_text
from tests.support.stripe_api import API_KEY, StripeStandIn

ACTIVE = ["active", "trialing", "past_due"]


def past(seconds: float = 30) -> float:
    """A thin event's creation time old enough for a fetch now to cover it."""
    return time.time() - seconds


def queue(engine: Engine, payload: dict[str, Any], at: datetime | None = None):
    """A verified thin delivery through the listener's own ingest path."""
    received = at or datetime.now(UTC)
    event = parse_payload(payload, received_at=received)
    return ingest_event(
        engine=engine, event=event, received_at=received, raw_payload=json.dumps(payload)
    )


def snapshot(engine: Engine, event_type: str, obj: dict[str, Any], created: int):
    payload = sf.event(event_type, obj, created=created)
    return ingest_event(
        engine=engine,
        event=parse_payload(payload, received_at=datetime.now(UTC)),
        received_at=datetime.now(UTC),
    ), payload


def make_resolver(engine: Engine, stand_in: StripeStandIn | None, **overrides: Any) -> Resolver:
    values: dict[str, Any] = {"stripe_api_max_rps": 200}
    if stand_in is not None:
        values |= {"stripe_api_key": API_KEY, "stripe_api_base": stand_in.url}
    values |= overrides
    settings = make_settings(engine.url.render_as_string(hide_password=False), **values)
    resolver = Resolver(engine=engine, settings=settings)
    resolver.backoff = Backoff(first_s=0.05, max_s=0.4)
    return resolver


def resolve_all(resolver: Resolver, timeout: float = 30) -> CycleReport:
    """Run cycles until nothing is pending; the cycles' reports added up."""
    total = CycleReport()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = resolver.run_once()
        for name in vars(total):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        if pending_count(resolver.engine) == 0:
            return total
        if report.claimed == 0 or report.claimed == report.waiting:
            time.sleep(0.05)
    raise AssertionError(f"thin events still pending after {timeout} s: {total}")


def pending_count(engine: Engine) -> int:
    with read_transaction(engine) as conn:
        rows = conn.execute(select(webhook_events.c.id).where(webhook_events.c.status == "pending"))
        return len(rows.all())


def event_row(engine: Engine, event_id: str):
    with read_transaction(engine) as conn:
        return conn.execute(select(webhook_events).where(webhook_events.c.id == event_id)).one()


def stored(engine: Engine, table, object_id: str):
    with read_transaction(engine) as conn:
        return conn.execute(select(table).where(table.c.id == object_id)).first()


def sync_status(engine: Engine, delayed_after: int = 600, now: datetime | None = None):
    with read_transaction(engine) as conn:
        return stripe_sync_status(
            conn=conn, delayed_after=delayed_after, now=now or datetime.now(UTC)
        )


@pytest.fixture
def resolver(engine, stripe_api):
    resolver = make_resolver(engine, stripe_api)
    yield resolver
    resolver.close()


# --- intake over HTTP ------------------------------------------------------------------


def test_a_thin_delivery_is_queued_at_once_and_counts_as_a_webhook(http, engine):
    payload = sf.thin_event(
        "v1.customer.subscription.updated", "subscription", "sub_thin_in", created=past()
    )
    response = deliver(http, payload)
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "queued"}

    row = event_row(engine, payload["id"])
    assert (row.status, row.type, row.deliveries) == ("pending", payload["type"], 1)
    assert json.loads(row.payload)["related_object"]["id"] == "sub_thin_in"
    last = sync_status(engine).last_event
    assert last is not None and last.id == payload["id"]
    assert last.created == datetime.fromtimestamp(int(payload_created(payload)), UTC)
    assert sync_status(engine).thin_events_pending == 1

    again = deliver(http, payload)
    assert again.json() == {"received": True, "outcome": "duplicate"}
    assert event_row(engine, payload["id"]).deliveries == 2


def payload_created(payload: dict[str, Any]) -> float:
    return datetime.fromisoformat(payload["created"]).timestamp()


@pytest.mark.parametrize(
    ("event_type", "related_type"),
    [
        ("v2.core.event_destination.ping", "event_destination"),
        ("v2.core.account.updated", "v2.core.account"),
        ("v1.customer.updated", "customer"),
        ("v1.charge.succeeded", "charge"),
        ("v2.core.health.event_generation_failure.resolved", None),
    ],
)
def test_thin_events_about_objects_we_do_not_keep_are_recorded_as_ignored(
    http, engine, event_type, related_type
):
    payload = sf.thin_event(event_type, related_type, "obj_other" if related_type else None)
    response = deliver(http, payload)
    assert response.json() == {"received": True, "outcome": "ignored"}
    row = event_row(engine, payload["id"])
    assert (row.status, row.payload) == ("ignored", None)


def test_a_thin_event_whose_snapshot_twin_is_applied_is_a_duplicate_and_costs_no_fetch(
    http, engine, stripe_api, resolver
):
    sub = sf.subscription("sub_twin", "active", "prod_twin")
    twin = sf.event("customer.subscription.updated", sub)
    assert deliver(http, twin).json()["outcome"] == "processed"
    thin = sf.thin_event(
        "v1.customer.subscription.updated",
        "subscription",
        "sub_twin",
        snapshot_event=twin["id"],
        created=past(),
    )
    assert deliver(http, thin).json() == {"received": True, "outcome": "duplicate"}
    assert event_row(engine, thin["id"]).status == "processed"
    assert resolver.run_once().claimed == 0
    assert stripe_api.log == []


def test_a_thin_event_naming_no_object_is_kept_as_failed_not_refused(http, engine):
    payload = sf.thin_event("v1.invoice.paid", "invoice", None)
    response = deliver(http, payload)
    assert response.status_code == 500  # Stripe retries; never a 4xx for a verified thin event
    assert response.json()["error"] == "apply_failed"
    row = event_row(engine, payload["id"])
    assert row.status == "failed" and "names no invoice id" in row.error
    assert sync_status(engine).webhook_health is WebhookHealth.ERROR


@pytest.mark.parametrize(
    "body",
    [
        {"object": "v2.core.event", "type": "v1.invoice.paid"},  # no id: not an event at all
        {"object": "v2.core.event", "id": "evt_x"},  # no type
        {"object": "balance", "id": "evt_x", "type": "v1.invoice.paid"},
    ],
)
def test_a_verified_body_that_is_no_event_at_all_stays_a_400(http, engine, body):
    response = deliver(http, body)
    assert response.status_code == 400
    assert response.json()["error"] == "not_an_event"
    with read_transaction(engine) as conn:
        assert conn.execute(select(webhook_events)).first() is None


def test_a_thin_event_with_an_unreadable_created_time_is_taken_at_its_arrival(http, engine):
    payload = sf.thin_event("v1.product.updated", "product", "prod_when")
    payload["created"] = "yesterday"
    before = int(time.time())
    assert deliver(http, payload).json()["outcome"] == "queued"
    assert before <= event_row(engine, payload["id"]).created <= int(time.time())


# --- resolution -------------------------------------------------------------------------

# For each kind: a thin type, the stand-in's resource, the object as Stripe's API holds it
# now, the object as a snapshot webhook carries it, its snapshot type, and the stored field
# that tells the two apart.
KINDS: dict[str, tuple[str, str, Callable[[], dict], Callable[[], dict], str, Any]] = {
    "subscription": (
        "v1.customer.subscription.past_due",
        "subscriptions",
        lambda: sf.subscription("sub_k", "past_due", "prod_k"),
        lambda: sf.subscription("sub_k", "active", "prod_k"),
        "customer.subscription.updated",
        (subscriptions, "sub_k", "status", "past_due", "active"),
    ),
    "invoice": (
        "v1.invoice.payment_failed",
        "invoices",
        lambda: sf.invoice("in_k", "open", subscription_id="sub_k", amount_due=1500),
        lambda: sf.invoice("in_k", "open", subscription_id="sub_k", amount_due=900),
        "invoice.updated",
        (invoices, "in_k", "amount_due", 1500, 900),
    ),
    "product": (
        "v1.product.default_price_changed",
        "products",
        lambda: sf.product("prod_k", "Name at Stripe"),
        lambda: sf.product("prod_k", "Name in the webhook"),
        "product.updated",
        (products, "prod_k", "name", "Name at Stripe", "Name in the webhook"),
    ),
    "price": (
        "v1.price.updated",
        "prices",
        lambda: sf.price("price_k", "prod_k", unit_amount=4900),
        lambda: sf.price("price_k", "prod_k", unit_amount=3900),
        "price.updated",
        (prices, "price_k", "unit_amount", 4900, 3900),
    ),
    "plan": (
        "v1.plan.updated",
        "plans",
        lambda: {**sf.price("plan_k", "prod_k", unit_amount=700), "object": "plan"},
        lambda: {**sf.price("plan_k", "prod_k", unit_amount=600), "object": "plan"},
        "plan.updated",
        (prices, "plan_k", "unit_amount", 700, 600),
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("order", ["thin first", "snapshot first"])
@pytest.mark.parametrize("snapshot_age", ["newer", "older"])
def test_each_kind_ends_at_the_newest_state_whatever_arrives_first(
    engine, stripe_api, resolver, kind, order, snapshot_age
):
    thin_type, resource, at_stripe, in_webhook, snapshot_type, check = KINDS[kind]
    table, object_id, column, api_value, webhook_value = check
    stripe_api.put(resource, at_stripe())
    # Newer: changed after the API answer was read; older: before the thin event's change.
    created = int(time.time()) + 120 if snapshot_age == "newer" else int(past(300))
    thin = sf.thin_event(thin_type, kind, object_id, created=past())

    if order == "thin first":
        assert queue(engine, thin).outcome == "queued"
        resolve_all(resolver)
        snapshot(engine, snapshot_type, in_webhook(), created)
    else:
        snapshot(engine, snapshot_type, in_webhook(), created)
        assert queue(engine, thin).outcome == "queued"
        report = resolve_all(resolver)
        # A newer stored state already holds the thin event's change: nothing to fetch.
        assert report.fetched_objects == (0 if snapshot_age == "newer" else 1)

    expected = webhook_value if snapshot_age == "newer" else api_value
    assert getattr(stored(engine, table, object_id), column) == expected
    assert event_row(engine, thin["id"]).status == "processed"
    assert event_row(engine, thin["id"]).payload is None


def test_fifty_pending_events_about_one_object_cost_one_fetch(engine, stripe_api, resolver):
    stripe_api.put("subscriptions", sf.subscription("sub_fifty", "trialing", "prod_fifty"))
    ids = []
    for n in range(50):
        payload = sf.thin_event(
            "v1.customer.subscription.updated", "subscription", "sub_fifty", created=past(60 - n)
        )
        ids.append(payload["id"])
        assert queue(engine, payload).outcome == "queued"

    report = resolve_all(resolver)

    assert stripe_api.retrieves("subscriptions") == ["sub_fifty"]
    assert (report.fetched_objects, report.settled_by_fetch) == (1, 50)
    assert {event_row(engine, event_id).status for event_id in ids} == {"processed"}
    assert stored(engine, subscriptions, "sub_fifty").status == "trialing"


def test_a_fresh_event_waits_until_a_fetch_can_cover_it(engine, stripe_api, resolver):
    stripe_api.put("products", sf.product("prod_fresh", "Fresh"))
    payload = sf.thin_event("v1.product.created", "product", "prod_fresh", created=time.time())
    queue(engine, payload)

    first = resolver.run_once()
    assert (first.claimed, first.waiting, first.fetched_objects) == (1, 1, 0)
    assert stripe_api.log == []
    resolve_all(resolver, timeout=10)  # due a second or two later
    assert stored(engine, products, "prod_fresh").name == "Fresh"
    assert len(stripe_api.log) == 1


def test_events_of_a_change_after_the_fetch_are_fetched_again(engine, stripe_api):
    later_by = timedelta(0)
    resolver = make_resolver(engine, stripe_api)
    resolver.clock = lambda: datetime.now(UTC) + later_by
    try:
        stripe_api.put("products", sf.product("prod_again", "Before"))
        queue(engine, sf.thin_event("v1.product.updated", "product", "prod_again", created=past()))
        resolve_all(resolver)
        # Changed again after that answer was read: its event is newer than the stored state.
        stripe_api.put("products", sf.product("prod_again", "After"))
        queue(
            engine,
            sf.thin_event("v1.product.updated", "product", "prod_again", created=time.time() + 5),
        )
        later_by = timedelta(seconds=10)
        resolve_all(resolver)
    finally:
        resolver.close()
    assert stored(engine, products, "prod_again").name == "After"
    assert stripe_api.retrieves("products") == ["prod_again", "prod_again"]


@pytest.mark.parametrize(
    ("kind", "thin_type", "table", "object_id"),
    [
        ("product", "v1.product.deleted", products, "prod_gone"),
        ("price", "v1.price.deleted", prices, "price_gone"),
        ("invoice", "v1.invoice.deleted", invoices, "in_gone"),
    ],
)
def test_a_404_settles_the_event_and_marks_the_object_deleted(
    engine, stripe_api, resolver, kind, thin_type, table, object_id
):
    if kind == "invoice":  # failing before it was deleted
        failing = sf.invoice(object_id, "open", subscription_id="sub_x")
        snapshot(engine, "invoice.payment_failed", failing, int(past(600)))
        assert sync_status(engine).failed_payments_count == 1
    else:
        factory = sf.product if kind == "product" else sf.price
        obj = factory(object_id, "Gone") if kind == "product" else factory(object_id, "prod_x")
        snapshot(engine, f"{kind}.created", obj, int(past(600)))
    payload = sf.thin_event(thin_type, kind, object_id, created=past())
    queue(engine, payload)

    report = resolve_all(resolver)

    assert report.not_found == 1
    row = stored(engine, table, object_id)
    if kind == "invoice":
        assert (row.status, row.payment_failing) == ("deleted", False)
        assert sync_status(engine).failed_payments_count == 0
    else:
        assert row.deleted is True
    assert event_row(engine, payload["id"]).status == "processed"


def test_a_subscription_unknown_to_stripe_settles_its_event_and_changes_nothing(
    engine, stripe_api, resolver
):
    payload = sf.thin_event(
        "v1.customer.subscription.updated", "subscription", "sub_404", created=past()
    )
    queue(engine, payload)
    assert resolve_all(resolver).not_found == 1
    assert stored(engine, subscriptions, "sub_404") is None
    assert event_row(engine, payload["id"]).status == "processed"


@pytest.mark.parametrize(
    ("status", "headers", "reason_word"),
    [
        (429, {}, "rate limiting"),
        (429, {"Stripe-Should-Retry": "true"}, "rate limiting"),
        (500, {}, "answered 500"),
        (0, {}, "cannot be reached"),  # the connection dropped without an answer
    ],
)
def test_passing_failures_back_off_and_then_resolve(
    engine, stripe_api, resolver, status, headers, reason_word
):
    stripe_api.put("subscriptions", sf.subscription("sub_flaky", "active", "prod_flaky"))
    stripe_api.fail("/v1/subscriptions/sub_flaky", status, times=2, headers=headers)
    payload = sf.thin_event(
        "v1.customer.subscription.updated", "subscription", "sub_flaky", created=past()
    )
    queue(engine, payload)

    tried_at = datetime.now(UTC)
    first = resolver.run_once()
    assert first.waiting == 1
    row = event_row(engine, payload["id"])
    assert row.status == "pending" and reason_word in row.error
    assert row.next_attempt_at > tried_at  # backing off, not hammering

    resolve_all(resolver)
    assert len(stripe_api.retrieves("subscriptions")) == 3
    assert stored(engine, subscriptions, "sub_flaky").status == "active"
    assert event_row(engine, payload["id"]).error is None


def test_a_429_that_says_not_to_retry_waits_the_longest_delay(engine, stripe_api, resolver):
    stripe_api.fail("/v1/products/", 429, times=1, headers={"Stripe-Should-Retry": "false"})
    payload = sf.thin_event("v1.product.updated", "product", "prod_nr", created=past())
    queue(engine, payload)
    now = datetime.now(UTC)
    resolver.clock = lambda: now  # the resolver's time stands still: delays are exact
    resolver.run_once()
    row = event_row(engine, payload["id"])
    # The resolver's longest delay here (max_s=0.4), not a jittered first one (at most 0.05 s).
    assert row.next_attempt_at - now == timedelta(seconds=resolver.backoff.max_s)
    assert resolver.run_once().claimed == 0


def test_a_slow_answer_does_not_hold_up_other_objects(engine, stripe_api, resolver):
    for n in range(6):
        stripe_api.put("products", sf.product(f"prod_s{n}", f"P{n}"))
        queue(engine, sf.thin_event("v1.product.updated", "product", f"prod_s{n}", created=past()))
    stripe_api.fail("/v1/products/prod_s0", 200, times=1, delay_s=2.0)
    started = time.monotonic()
    resolve_all(resolver)
    assert time.monotonic() - started < 5
    assert all(stored(engine, products, f"prod_s{n}").name == f"P{n}" for n in range(6))


def test_the_fetching_client_reads_headers_as_the_library_does():
    blocks = [
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nStripe-Should-Retry: false\r\n"
        "Content-Type: application/json\r\nRequest-Id: req_1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty:\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
        "",
    ]
    ours = thin_fetching._CurlClient(10)
    for block in blocks:
        assert ours.parse_headers(block) == stripe.PycurlClient.parse_headers(ours, block)


def test_an_answer_that_never_comes_is_given_up_after_the_fetch_timeout(
    engine, stripe_api, resolver, monkeypatch
):
    """The library's pycurl client would wait 80 s; a fetch thread waits FETCH_TIMEOUT_S."""
    monkeypatch.setattr(thin_fetching, "FETCH_TIMEOUT_S", 1.0)  # clients are made on first use
    stripe_api.put("products", sf.product("prod_stuck", "Stuck"))
    stripe_api.fail("/v1/products/prod_stuck", 200, times=1, delay_s=6.0)
    payload = sf.thin_event("v1.product.updated", "product", "prod_stuck", created=past())
    queue(engine, payload)
    started = time.monotonic()
    assert resolver.run_once().waiting == 1
    assert time.monotonic() - started < 4
    assert "cannot be reached" in event_row(engine, payload["id"]).error
    resolve_all(resolver)  # the next answer comes at once
    assert stored(engine, products, "prod_stuck").name == "Stuck"


def test_a_refused_key_keeps_the_events_pending_and_says_so(engine, stripe_api):
    resolver = make_resolver(engine, stripe_api, stripe_api_key="rk_test_wrong_key_000000000000000")
    try:
        payload = sf.thin_event("v1.price.updated", "price", "price_key", created=past())
        queue(engine, payload)
        resolver.run_once()
    finally:
        resolver.close()
    row = event_row(engine, payload["id"])
    assert row.status == "pending" and "refused STRIPE_API_KEY (401)" in row.error
    later = datetime.now(UTC) + timedelta(seconds=700)
    status = sync_status(engine, now=later)
    assert status.webhook_health is WebhookHealth.ERROR
    assert "refused STRIPE_API_KEY" in status.health_reason


def test_without_a_key_events_wait_and_health_says_to_set_it(engine):
    resolver = make_resolver(engine, None)
    try:
        payload = sf.thin_event("v1.invoice.paid", "invoice", "in_nokey", created=past())
        queue(engine, payload, at=datetime.now(UTC) - timedelta(seconds=900))
        resolver.run_once()
    finally:
        resolver.close()
    status = sync_status(engine)
    assert status.thin_events_pending == 1
    assert status.webhook_health is WebhookHealth.ERROR
    assert "STRIPE_API_KEY is not set" in status.health_reason
    waiting = "1 event waiting for details from Stripe for more than 10 minutes"
    assert waiting in status.health_reason


def test_pending_events_younger_than_the_delay_leave_health_alone(engine):
    queue(engine, sf.thin_event("v1.invoice.paid", "invoice", "in_young", created=past()))
    assert sync_status(engine).webhook_health is WebhookHealth.HEALTHY


@pytest.mark.slow
def test_a_burst_keeps_under_the_rate_and_costs_one_fetch_per_object(engine, stripe_api):
    objects = 500
    for n in range(objects):
        stripe_api.put("subscriptions", sf.subscription(f"sub_b{n:03d}", "active", "prod_b"))
    deliveries = []
    for n in range(2000):
        payload = sf.thin_event(
            "v1.customer.subscription.updated",
            "subscription",
            f"sub_b{n % objects:03d}",
            created=past(100 - n / 100),
        )
        received = datetime.now(UTC)
        deliveries.append(
            Delivery(parse_payload(payload, received_at=received), received, json.dumps(payload))
        )
    for start in range(0, len(deliveries), 64):
        results = ingest_batch(engine=engine, deliveries=deliveries[start : start + 64])
        assert {r.outcome.value for r in results} == {"queued"}

    resolver = make_resolver(engine, stripe_api, stripe_api_max_rps=100)
    try:
        resolve_all(resolver, timeout=60)
    finally:
        resolver.close()
    assert stripe_api.most_requests_in_a_second() <= 100
    assert sorted(stripe_api.retrieves("subscriptions")) == [
        f"sub_b{n:03d}" for n in range(objects)
    ]
    assert sync_status(engine).thin_events_pending == 0


def test_the_stripe_context_of_the_event_goes_with_the_fetch(engine, stripe_api, resolver):
    stripe_api.put("prices", sf.price("price_ctx", "prod_ctx"))
    payload = sf.thin_event(
        "v1.price.created", "price", "price_ctx", created=past(), context="acct_1Connected"
    )
    queue(engine, payload)
    resolve_all(resolver)
    assert [request.stripe_context for request in stripe_api.log] == ["acct_1Connected"]


def test_no_customer_personal_data_from_fetched_objects_is_at_rest(engine, stripe_api, resolver):
    sub = sf.subscription("sub_pii", "active", "prod_pii")
    sub["customer"] = {
        "id": "cus_pii",
        "object": "customer",
        "email": "maria.pinguin@example.org",
        "name": "Maria Pinguin",
        "phone": "+15555550999",
        "address": {"line1": "9 Floe Street", "city": "Cold", "country": "AQ"},
    }
    stripe_api.put("subscriptions", sub)
    stripe_api.put("invoices", sf.invoice("in_pii", "open", subscription_id="sub_pii"))
    queue(
        engine,
        sf.thin_event(
            "v1.customer.subscription.updated", "subscription", "sub_pii", created=past()
        ),
    )
    queue(engine, sf.thin_event("v1.invoice.payment_failed", "invoice", "in_pii", created=past()))
    resolve_all(resolver)
    assert stored(engine, subscriptions, "sub_pii").customer_id == "cus_pii"
    dump = store_text(engine)
    for personal in (
        "maria.pinguin@example.org",
        "Maria Pinguin",
        "+15555550999",
        "9 Floe Street",
        "jane.doe@example.com",
        "Jane Doe",
        "1 Penguin Way",
    ):
        assert personal not in dump


def test_a_paused_subscription_keeps_why_stripe_paused_it(engine, stripe_api, resolver):
    sub = sf.subscription("sub_paused", "paused", "prod_p")
    sub["status_details"] = {"paused": {"subscription": {"type": "final_payment_failure"}}}
    stripe_api.put("subscriptions", sub)
    queue(
        engine,
        sf.thin_event(
            "v1.customer.subscription.paused", "subscription", "sub_paused", created=past()
        ),
    )
    resolve_all(resolver)
    assert stored(engine, subscriptions, "sub_paused").pause_reason == "final_payment_failure"


def test_two_resolvers_never_take_the_same_event(engine, stripe_api):
    for n in range(40):
        stripe_api.put("products", sf.product(f"prod_two{n}", f"Two {n}"))
        queue(
            engine, sf.thin_event("v1.product.updated", "product", f"prod_two{n}", created=past())
        )
    first, second = make_resolver(engine, stripe_api), make_resolver(engine, stripe_api)
    first.claims.batch_size = second.claims.batch_size = 10
    try:
        now = datetime.now(UTC)
        claimed_by_first = first.claims.claim(first.claims.due(now), now)
        claimed_by_second = second.claims.claim(
            second.claims.due(now), now
        )  # what the first holds is not due
        assert len(claimed_by_first) == len(claimed_by_second) == 10
        assert not claimed_by_first & claimed_by_second
        first.claims.release_all()
        second.claims.release_all()
        resolve_all(first)
    finally:
        first.close()
        second.close()
    assert len(stripe_api.retrieves("products")) == 40


def test_fetched_objects_are_written_in_batches_and_a_bad_one_fails_only_its_events(
    engine, stripe_api, monkeypatch
):
    # Batches by size only here (not by time), so that a slow machine cannot change them.
    monkeypatch.setattr(resolver_module, "APPLY_AFTER_S", 60.0)
    ids = [f"sub_batch{n:02d}" for n in range(3 * resolver_module.APPLY_BATCH)]
    bad = ids[4]
    for object_id in ids:
        sub = sf.subscription(object_id, "past_due", "prod_batch")
        if object_id == bad:
            del sub["status"]  # an object our handler cannot read
        stripe_api.put("subscriptions", sub)
    events = {}
    for object_id in ids:
        payload = sf.thin_event(
            "v1.customer.subscription.updated", "subscription", object_id, created=past()
        )
        assert queue(engine, payload).outcome == "queued"
        events[object_id] = payload["id"]
    commits = []

    @sa_event.listens_for(engine, "commit")
    def count(conn) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            commits.append(1)

    resolver = make_resolver(engine, stripe_api)
    try:
        report = resolve_all(resolver)
    finally:
        resolver.close()
        sa_event.remove(engine, "commit", count)

    assert (report.fetched_objects, report.failed) == (len(ids) - 1, 1)
    failed = event_row(engine, events[bad])
    assert failed.status == "failed" and f"subscription {bad} from Stripe" in failed.error
    assert stored(engine, subscriptions, bad) is None
    for object_id in ids:
        if object_id != bad:
            assert event_row(engine, events[object_id]).status == "processed"
            assert stored(engine, subscriptions, object_id).status == "past_due"
    # One claim and a write per batch, not one per object.
    assert len(commits) <= 1 + len(ids) // resolver_module.APPLY_BATCH + 1


def test_sqlite_locked_while_a_batch_is_written_fails_no_event_and_heals(
    tmp_path, stripe_api, monkeypatch
):
    # SQLite held by another process past the busy timeout: the database's fault, not the
    # objects'. The batch rolls back, nothing is failed, and the events are resolved later.
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "locked.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    ids = [f"sub_locked{n:02d}" for n in range(12)]
    for object_id in ids:
        stripe_api.put("subscriptions", sf.subscription(object_id, "active", "prod_locked"))
        queue(
            engine,
            sf.thin_event(
                "v1.customer.subscription.updated", "subscription", object_id, created=past()
            ),
        )
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    taking = threading.Lock()
    resolver = make_resolver(engine, stripe_api)
    fetch = resolver._fetch

    def fetch_then_lock(key, events):
        outcome = fetch(key, events)
        with taking:  # taken once the first object is read, before it is written
            if not other.in_transaction:
                other.execute("BEGIN IMMEDIATE")
        return outcome

    resolver._fetch = fetch_then_lock  # type: ignore[method-assign]
    try:
        with pytest.raises(OperationalError) as raised:
            resolver.run_once()
        assert is_transient(raised.value)
        other.execute("ROLLBACK")
        with read_transaction(engine) as conn:
            statuses = conn.execute(select(webhook_events.c.status)).scalars().all()
        assert statuses == ["pending"] * len(ids)

        resolver._fetch = fetch  # type: ignore[method-assign]
        resolver.clock = lambda: datetime.now(UTC) + CLAIM_LEASE  # the claims have lapsed
        report = resolve_all(resolver)
    finally:
        resolver.close()
        other.close()
        engine.dispose()
    assert (report.fetched_objects, report.failed) == (len(ids), 0)
