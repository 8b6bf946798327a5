"""One poisoned delivery fails alone: its batch's other deliveries are applied and answered 200,
and the writer process carries on (SPEC 18), alike on SQLite and PostgreSQL."""

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from finance_core.store.db import make_engine
from finance_core.store.models import products, webhook_events
from tests.support import stripe_factory as sf
from tests.support.servers import ListenerProcess

NORMAL_DELIVERIES = 39


@pytest.fixture
def listener(database_url: str) -> Iterator[ListenerProcess]:
    process = ListenerProcess(database_url).start()
    yield process
    process.stop()


def deeply_nested(depth: int) -> bytes:
    """A signed-ready event body whose object nests `depth` levels: json.loads gives up."""
    event = sf.event("product.updated", sf.product(sf.next_id("prod"), "Deep"))
    text = json.dumps(event)
    inner = '{"x":' * depth + "1" + "}" * depth
    return text.replace('"active": true', f'"active": true, "deep": {inner}', 1).encode()


def product_named(name: str) -> bytes:
    return json.dumps(sf.event("product.updated", sf.product(sf.next_id("prod"), name))).encode()


def event_with_id(event_id: str) -> bytes:
    event = sf.event("product.updated", sf.product(sf.next_id("prod"), "Plain"))
    event["id"] = event_id
    return json.dumps(event).encode()


POISONS = {
    # The parser cannot take it: a 400, nothing stored.
    "nested_too_deeply": (lambda: deeply_nested(100_000), 400, "malformed_json"),
    # PostgreSQL cannot store a NUL in an id: refused as no event on both stores.
    "nul_in_event_id": (lambda: event_with_id("evt_nul\u0000here"), 400, "not_an_event"),
    "newline_in_event_id": (lambda: event_with_id("evt_forged\nINFO admin"), 400, "not_an_event"),
    # An object PostgreSQL would refuse: failed alone, kept for replay, on both stores.
    "nul_in_product_name": (lambda: product_named("Pro\u0000"), 500, "apply_failed"),
}


def post(url: str, body: bytes) -> httpx.Response:
    headers = {"Stripe-Signature": sf.signature_header(body), "Content-Type": "application/json"}
    return httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=30)


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_a_poisoned_delivery_fails_alone_and_the_writer_carries_on(
    listener: ListenerProcess, database_url: str, poison: str
) -> None:
    make_body, status, reason = POISONS[poison]
    writer = listener.writer_pid()
    assert writer is not None
    names = [f"Plan {n}" for n in range(NORMAL_DELIVERIES)]
    bodies = [product_named(name) for name in names]
    bodies.insert(NORMAL_DELIVERIES // 2, make_body())

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(lambda body: post(listener.url, body), bodies))

    poisoned = answers.pop(NORMAL_DELIVERIES // 2)
    assert poisoned.status_code == status, poisoned.text
    assert reason in poisoned.text
    assert [a.status_code for a in answers] == [200] * NORMAL_DELIVERIES
    assert {a.json()["outcome"] for a in answers} == {"processed"}
    assert listener.writer_pid() == writer, "the writer process was restarted"
    assert httpx.get(f"{listener.url}/healthz", timeout=5).status_code == 200

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(select(products.c.name)).scalars())
            failed = conn.execute(
                select(webhook_events.c.id, webhook_events.c.payload).where(
                    webhook_events.c.status == "failed"
                )
            ).all()
    finally:
        engine.dispose()
    assert set(names) <= stored
    if status == 500:  # kept for replay, with the body Stripe sent
        assert len(failed) == 1
        assert failed[0].payload is not None and "\\u0000" in failed[0].payload
    else:
        assert failed == []
