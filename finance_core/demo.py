"""Demo data: realistic signed Stripe events for a store with no Stripe behind it.

Test-mode events for a few plans and a few hundred subscriptions across every status, failed
then recovered payments, and the odd duplicate and late (older) delivery, as Stripe sends them.
Ids carry `demo` so that demo data is never mistaken for real data.
"""

import hashlib
import hmac
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine, delete, exists, insert, select

from finance_core.demo_history import spread
from finance_core.feed.events import Outcome, StripeEvent
from finance_core.feed.ingest import ingest_event
from finance_core.store.db import write_transaction
from finance_core.store.models import (
    invoices,
    prices,
    products,
    subscription_counts,
    subscription_history,
    subscriptions,
    webhook_events,
)

DEMO_EVENT_PREFIX = "evt_demo_"
HISTORY_DAYS = 90

PLANS = [
    ("prod_demo_starter", "Starter", 900),
    ("prod_demo_pro", "Pro", 2900),
    ("prod_demo_business", "Business", 9900),
    ("prod_demo_enterprise", "Enterprise", 49900),
]
STATUSES = (
    ["active"] * 60
    + ["trialing"] * 10
    + ["past_due"] * 6
    + ["canceled"] * 14
    + ["unpaid"] * 3
    + ["incomplete"] * 3
    + ["incomplete_expired"] * 2
    + ["paused"] * 2
)


def _event(kind: str, obj: dict[str, Any], created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"evt_demo_{rng.getrandbits(64):016x}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }


def _subscription(sub_id: str, status: str, product: str, price: int) -> dict[str, Any]:
    item = {
        "id": f"si_{sub_id[4:]}",
        "object": "subscription_item",
        "quantity": 1,
        "price": {
            "id": f"price_{product[5:]}",
            "object": "price",
            "product": product,
            "unit_amount": price,
            "currency": "usd",
            "recurring": {"interval": "month"},
        },
        "current_period_start": int(time.time()) - 86400,
        "current_period_end": int(time.time()) + 29 * 86400,
    }
    return {
        "id": sub_id,
        "object": "subscription",
        "status": status,
        "livemode": False,
        "customer": f"cus_{sub_id[4:]}",
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [item]},
    }


# Most customers pay in dollars, some in euros, a few in yen (a zero-decimal currency), with
# the minor units of each per US cent of the plan's price.
CURRENCIES = [("usd", 1)] * 3 + [("eur", 1)] * 2 + [("jpy", 1.5)]


def _invoice(
    invoice_id: str, status: str, sub_id: str, amount: int, currency: str = "usd"
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "status": status,
        "amount_due": amount,
        "currency": currency,
        "attempted": True,
        "livemode": False,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub_id},
        },
    }


def backfill(subscriptions: int = 300, seed: int = 2026) -> list[dict[str, Any]]:
    """The initial history, in the order Stripe might deliver it (duplicates and late ones)."""
    rng = random.Random(seed)
    created = int(time.time()) - 3 * 86400
    events = [
        _event(
            "product.created",
            {"id": p, "object": "product", "name": n, "active": True},
            created,
            rng,
        )
        for p, n, _ in PLANS
    ]
    failures = 0
    for n in range(subscriptions):
        sub_id = f"sub_demo_{n:05d}"
        product, _, price = rng.choice(PLANS)
        created += rng.randrange(1, 60)
        events.append(
            _event(
                "customer.subscription.created",
                _subscription(sub_id, "incomplete", product, price),
                created,
                rng,
            )
        )
        created += rng.randrange(1, 60)
        events.append(
            _event(
                "customer.subscription.updated",
                _subscription(sub_id, rng.choice(STATUSES), product, price),
                created,
                rng,
            )
        )
        if rng.random() < 0.12:
            invoice_id = f"in_demo_{n:05d}"
            currency, minor_per_cent = CURRENCIES[failures % len(CURRENCIES)]
            failures += 1
            amount = round(price * minor_per_cent)  # yen: about the dollar price, whole yen
            created += 5
            events.append(
                _event(
                    "invoice.payment_failed",
                    _invoice(invoice_id, "open", sub_id, amount, currency),
                    created,
                    rng,
                )
            )
            if rng.random() < 0.5:  # recovered on retry
                created += 3600
                events.append(
                    _event(
                        "invoice.paid",
                        _invoice(invoice_id, "paid", sub_id, amount, currency),
                        created,
                        rng,
                    )
                )
    for _ in range(len(events) // 40):  # late deliveries: an older event arrives after newer ones
        i = rng.randrange(2, len(events) - 1)
        events.insert(min(len(events), i + rng.randrange(2, 20)), events.pop(i))
    events.extend(rng.sample(events, len(events) // 50))  # Stripe's at-least-once duplicates
    return events


def malformed_event(seed: int = 3) -> dict[str, Any]:
    """A subscription update whose object lacks its items, as a Stripe change might send it.

    It fails to apply and waits on the Webhooks page for an admin to replay or dismiss it.
    """
    product, _, price = PLANS[1]
    broken = _subscription("sub_demo_00001", "active", product, price)
    del broken["items"]
    return _event(
        "customer.subscription.updated", broken, int(time.time()) - 3600, random.Random(seed)
    )


def trickle(seed: int = 7) -> Iterator[dict[str, Any]]:
    """An endless, gentle stream of plan changes so that webhook health stays live."""
    rng = random.Random(seed)
    while True:
        product, _, price = rng.choice(PLANS)
        sub_id = f"sub_demo_{rng.randrange(300):05d}"
        yield _event(
            "customer.subscription.updated",
            _subscription(sub_id, rng.choice(STATUSES), product, price),
            int(time.time()),
            rng,
        )


def post(client: httpx.Client, url: str, event: dict[str, Any], secret: str) -> int:
    """POST one event signed as Stripe signs it; returns the status code."""
    body = json.dumps(event)
    t = int(time.time())
    v1 = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    response = client.post(
        f"{url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": f"t={t},v1={v1}", "Content-Type": "application/json"},
    )
    return response.status_code


class NotADemoStore(RuntimeError):
    """The store holds data that did not come from the demo; demo data would pollute it."""


def holds_non_demo_data(engine: Engine) -> bool:
    """Whether any event or object state in the store came from somewhere other than the demo."""
    demo_like = DEMO_EVENT_PREFIX.replace("_", r"\_") + "%"
    columns = [webhook_events.c.id] + [
        table.c.state_event_id for table in (products, prices, subscriptions, invoices)
    ]
    with engine.connect() as conn:
        return any(
            conn.execute(select(exists().where(column.not_like(demo_like, escape="\\")))).scalar()
            for column in columns
        )


def _refuse_non_demo(engine: Engine) -> None:
    if holds_non_demo_data(engine):
        raise NotADemoStore(
            "this store already holds data that is not demo data; demo events go only to a "
            "store of their own (set DATABASE_URL to a new file, e.g. sqlite:///data/demo.db)"
        )


def backdate_history(*, engine: Engine, now: datetime, days: int = HISTORY_DAYS) -> int:
    """Give a demo store's history a believable past over `days` days; the rows written.

    Replaces the whole history with one that ends at today's counts (`demo_history.spread`),
    in one transaction with reading them. Refuses a store holding anything but demo data.
    """
    _refuse_non_demo(engine)
    with write_transaction(engine) as conn:
        counts = {
            (row.product_id, row.status): row.subscription_count
            for row in conn.execute(select(subscription_counts))
            if row.subscription_count
        }
        rows = spread(counts, days=days, today=now.astimezone(UTC).date(), rng=random.Random(days))
        conn.execute(delete(subscription_history))
        if rows:
            conn.execute(insert(subscription_history), rows)
    return len(rows)


def fill_store(*, engine: Engine, now: Any, subscriptions: int = 300) -> dict[Outcome, int]:
    """Ingest the demo history in-process through the same path as webhooks; count outcomes.

    Then spread the subscriptions over the last days' history (`backdate_history`).
    """
    _refuse_non_demo(engine)
    outcomes = dict.fromkeys(Outcome, 0)
    for payload in backfill(subscriptions=subscriptions):
        result = ingest_event(
            engine=engine,
            event=StripeEvent.from_payload(payload),
            received_at=now(),
            raw_payload=json.dumps(payload),
        )
        outcomes[result.outcome] += 1
    backdate_history(engine=engine, now=now())
    return outcomes
