"""Bad deliveries: each gets its status code and reason, is counted, and changes nothing else."""

import json
import time

import pytest
from sqlalchemy import Engine, func, select

from finance_core.feed.rejections import kept_rejections, record_rejection, rejections_by_reason
from finance_core.store.db import read_transaction
from finance_core.store.models import (
    invoices,
    products,
    rejected_deliveries,
    subscriptions,
    webhook_events,
)
from tests.conftest import deliver, make_settings
from tests.support import stripe_factory as sf
from tests.support.servers import ThreadedServer

OTHER_SECRET = "whsec_some_other_endpoint_secret_42"


def store_is_empty(engine: Engine) -> bool:
    with read_transaction(engine) as conn:
        return all(
            conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
            for table in (webhook_events, subscriptions, invoices, products)
        )


def reasons(engine: Engine) -> dict[str, int]:
    with read_transaction(engine) as conn:
        return {r.reason: r.count for r in rejections_by_reason(conn=conn)}


def a_subscription_event() -> dict:
    return sf.event("customer.subscription.created", sf.subscription("sub_r", "active", "prod_r"))


def post(http, body: bytes, headers: dict[str, str]):
    return http.post("/webhooks/stripe", content=body, headers=headers)


def test_missing_signature_header(http, engine):
    body, _ = sf.signed(a_subscription_event())
    response = post(http, body, {"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "missing_signature"
    assert store_is_empty(engine)
    assert reasons(engine) == {"missing_signature": 1}


@pytest.mark.parametrize(
    "header", ["garbage", "t=notanumber,v1=abc", "v1=abc", "t=123", "t=1700000000,v0=abc"]
)
def test_garbled_signature_header(http, engine, header):
    body, _ = sf.signed(a_subscription_event())
    response = post(http, body, {"Stripe-Signature": header})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_signature"
    assert store_is_empty(engine)


def test_wrong_secret(http, engine):
    response = deliver(http, a_subscription_event(), secret=OTHER_SECRET)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert store_is_empty(engine)


def test_tampered_body(http, engine):
    body, headers = sf.signed(a_subscription_event())
    tampered = body.replace(b'"active"', b'"canceled"')
    response = post(http, tampered, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_signature"
    assert store_is_empty(engine)


def test_stale_timestamp(http, engine):
    response = deliver(http, a_subscription_event(), timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert response.json()["error"] == "stale_timestamp"
    assert store_is_empty(engine)


def test_one_of_several_v1_signatures_may_match(http, engine):
    event = a_subscription_event()
    body = json.dumps(event).encode()
    header = sf.signature_header(body, extra_signatures=("0" * 64, "deadbeef"))
    assert post(http, body, {"Stripe-Signature": header}).status_code == 200
    assert not store_is_empty(engine)


def test_secret_rotation_accepts_old_and_new_secret(database_url, engine):
    from webhook_listener.app import create_app

    settings = make_settings(database_url, stripe_webhook_secret=f"{OTHER_SECRET},{sf.SECRET}")
    server = ThreadedServer(create_app(settings, engine)).start()
    try:
        import httpx

        with httpx.Client(base_url=server.url) as http:
            assert deliver(http, a_subscription_event(), secret=OTHER_SECRET).status_code == 200
            assert deliver(http, a_subscription_event(), secret=sf.SECRET).status_code == 200
            third = deliver(http, a_subscription_event(), secret="whsec_retired_long_ago")
            assert third.status_code == 400
    finally:
        server.stop()
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(webhook_events)).scalar_one() == 2


def test_signed_non_json(http, engine):
    body = b"this is not json"
    response = post(http, body, {"Stripe-Signature": sf.signature_header(body)})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert store_is_empty(engine)


def test_signed_non_utf8(http, engine):
    body = b"\xff\xfe\x00garbage"
    # The signature is over bytes Stripe never sends; the listener must still answer 400.
    response = post(http, body, {"Stripe-Signature": "t=1700000000,v1=" + "0" * 64})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_utf8"


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "a string",
        {"id": "evt_1", "type": "customer.subscription.created"},
        {"id": "evt_1", "type": "x", "created": "yesterday", "data": {"object": {}}},
        {"id": 5, "type": "x", "created": 1, "data": {"object": {}}},
        {"id": "evt_1", "type": "x", "created": 1, "data": {"object": "nope"}},
        {"id": "evt_1", "object": "charge", "type": "x", "created": 1, "data": {"object": {}}},
    ],
)
def test_signed_json_that_is_no_event(http, engine, payload):
    body = json.dumps(payload).encode()
    response = post(http, body, {"Stripe-Signature": sf.signature_header(body)})
    assert response.status_code == 400
    assert response.json()["error"] == "not_an_event"
    assert store_is_empty(engine)


def test_oversized_body_gets_413(database_url, engine):
    import httpx

    from webhook_listener.app import create_app

    settings = make_settings(database_url, webhook_max_body_bytes=2048)
    server = ThreadedServer(create_app(settings, engine)).start()
    try:
        event = a_subscription_event()
        event["data"]["object"]["metadata"] = {"padding": "x" * 4096}
        with httpx.Client(base_url=server.url) as http:
            assert deliver(http, event).status_code == 413

            # Without a Content-Length (chunked), the limit holds while reading.
            body, headers = sf.signed(event)
            chunked = http.post(
                "/webhooks/stripe", content=iter([body[:1000], body[1000:]]), headers=headers
            )
            assert chunked.status_code == 413
            assert deliver(http, a_subscription_event()).status_code == 200
    finally:
        server.stop()
    assert reasons(engine) == {"body_too_large": 2}
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(webhook_events)).scalar_one() == 1


def test_rejections_record_time_reason_and_client_address(http, engine):
    post(http, b"{}", {"Stripe-Signature": "t=1,v1=00"})
    with read_transaction(engine) as conn:
        (kept,) = conn.execute(select(rejected_deliveries)).all()
    assert kept.reason == "bad_signature"
    assert kept.client_address == "127.0.0.1"
    assert kept.received_at is not None


def test_a_flood_of_rejections_stays_bounded(engine):
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for _ in range(120):
        record_rejection(
            engine=engine, reason="bad_signature", client_address="10.0.0.1", now=now, keep=50
        )
    with read_transaction(engine) as conn:
        assert kept_rejections(conn=conn) == 50
        totals = {r.reason: r.count for r in rejections_by_reason(conn=conn)}
        newest = conn.execute(select(func.max(rejected_deliveries.c.id))).scalar_one()
        oldest = conn.execute(select(func.min(rejected_deliveries.c.id))).scalar_one()
    assert totals == {"bad_signature": 120}
    assert newest - oldest == 49


def test_a_flood_over_http_keeps_the_listener_answering(http, engine):
    for _ in range(200):
        assert post(http, b"garbage", {"Stripe-Signature": "t=1,v1=00"}).status_code == 400
    assert deliver(http, a_subscription_event()).status_code == 200
    assert reasons(engine) == {"bad_signature": 200}
    with read_transaction(engine) as conn:
        assert kept_rejections(conn=conn) <= 5000


def test_rejections_do_not_change_health(http, engine):
    from datetime import UTC, datetime

    from finance_core.views.queries import stripe_sync_status

    post(http, b"{}", {"Stripe-Signature": "t=1,v1=00"})
    with read_transaction(engine) as conn:
        status = stripe_sync_status(conn=conn, delayed_after=600, now=datetime.now(UTC))
    assert status.webhook_health == "delayed"
    assert status.last_webhook_received is None
    assert status.rejected_deliveries == 1
