"""Small factories for Stripe-shaped payloads, and real signatures over them.

Shapes follow Stripe's API reference: "old" is 2020-08-27 (`current_period_*` on the
subscription, `plan` beside `price` on items, `subscription` on invoices), "new" is
2025-03-31.basil and later (`current_period_*` on items, `parent.subscription_details`).
"""

import hashlib
import hmac
import itertools
import json
import time
from typing import Any, Literal

SECRET = "whsec_suite_signing_secret_0123456789"
OLD_API, NEW_API = "2020-08-27", "2025-03-31.basil"
Shape = Literal["old", "new", "legacy"]

_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):024d}"


def signature_header(
    body: bytes | str,
    secret: str = SECRET,
    timestamp: int | None = None,
    extra_signatures: tuple[str, ...] = (),
) -> str:
    """A Stripe-Signature header: HMAC-SHA256 over "{t}.{body}" with the endpoint secret."""
    t = int(time.time()) if timestamp is None else timestamp
    text = body.decode() if isinstance(body, bytes) else body
    v1 = hmac.new(secret.encode(), f"{t}.{text}".encode(), hashlib.sha256).hexdigest()
    return ",".join([f"t={t}", *(f"v1={s}" for s in extra_signatures), f"v1={v1}"])


def signed(
    event: dict[str, Any], secret: str = SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {
        "Stripe-Signature": signature_header(body, secret, timestamp),
        "Content-Type": "application/json",
    }


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    api_version: str | None = NEW_API,
) -> dict[str, Any]:
    return {
        "id": event_id or next_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": created if created is not None else int(time.time()),
        "data": {"object": obj},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": next_id("req"), "idempotency_key": None},
        "type": event_type,
    }


def product(product_id: str, name: str, *, active: bool = True) -> dict[str, Any]:
    return {
        "id": product_id,
        "object": "product",
        "active": active,
        "name": name,
        "description": f"{name} plan",
        "livemode": False,
        "metadata": {},
        "created": 1700000000,
    }


def price(
    price_id: str, product_id: str, *, unit_amount: int = 2900, interval: str = "month"
) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "usd",
        "product": product_id,
        "unit_amount": unit_amount,
        "type": "recurring",
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed"},
        "livemode": False,
        "created": 1700000000,
    }


def subscription(
    subscription_id: str,
    status: str,
    product_id: str | None,
    *,
    shape: Shape = "new",
    price_id: str | None = None,
    customer: str = "cus_suite0001",
) -> dict[str, Any]:
    period = {"current_period_start": 1764547200, "current_period_end": 1767225600}
    items: list[dict[str, Any]] = []
    if product_id is not None:
        price_id = price_id or f"price_for_{product_id}"
        item: dict[str, Any] = {
            "id": next_id("si"),
            "object": "subscription_item",
            "quantity": 1,
            "subscription": subscription_id,
        }
        plan = {
            "id": price_id,
            "object": "plan",
            "product": product_id,
            "amount": 2900,
            "currency": "usd",
            "interval": "month",
        }
        if shape == "legacy":
            item["plan"] = plan
        else:
            item["price"] = {**price(price_id, product_id), "product": product_id}
            if shape == "old":
                item["plan"] = plan
            else:
                item.update(period)
        items.append(item)
    obj: dict[str, Any] = {
        "id": subscription_id,
        "object": "subscription",
        "status": status,
        "customer": customer,
        "cancel_at_period_end": False,
        "created": 1764547200,
        "items": {"object": "list", "data": items, "has_more": False},
        "livemode": False,
        "metadata": {},
    }
    if shape != "new":
        obj.update(period)
    return obj


def invoice(
    invoice_id: str,
    status: str,
    *,
    subscription_id: str | None = None,
    shape: Shape = "new",
    attempted: bool = True,
    amount_due: int = 2900,
    attempt_count: int = 1,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "status": status,
        "amount_due": amount_due,
        "amount_paid": amount_due if status == "paid" else 0,
        "currency": "usd",
        "attempted": attempted,
        "attempt_count": attempt_count,
        "customer": "cus_suite0001",
        # Personal data Stripe sends along; the store must never keep it.
        "customer_email": "jane.doe@example.com",
        "customer_name": "Jane Doe",
        "customer_phone": "+15555550123",
        "customer_address": {
            "line1": "1 Penguin Way",
            "city": "Iceberg",
            "country": "AQ",
            "postal_code": "90210",
            "line2": None,
            "state": None,
        },
        "livemode": False,
        "created": 1764547200,
    }
    if shape == "new":
        obj["parent"] = (
            {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": subscription_id, "metadata": {}},
            }
            if subscription_id
            else None
        )
    else:
        obj["subscription"] = subscription_id
    return obj


RESOURCE_PATHS = {
    "subscription": "subscriptions",
    "invoice": "invoices",
    "product": "products",
    "price": "prices",
    "plan": "plans",
}


def thin_event(
    event_type: str,
    related_type: str | None,
    related_id: str | None,
    *,
    event_id: str | None = None,
    created: float | None = None,
    livemode: bool = False,
    context: str | None = None,
    snapshot_event: str | None = None,
) -> dict[str, Any]:
    """A thin event notification as an event destination delivers it (2026-09-30.endive)."""
    moment = time.time() if created is None else created
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    related = None
    if related_type is not None:
        path = RESOURCE_PATHS.get(related_type, f"{related_type}s")
        related = {"id": related_id, "type": related_type, "url": f"/v1/{path}/{related_id}"}
    return {
        "id": event_id or next_id("evt_thin"),
        "object": "v2.core.event",
        "type": event_type,
        "livemode": livemode,
        "created": f"{stamp}.{int(moment * 1000) % 1000:03d}Z",
        "context": context,
        "related_object": related,
        "snapshot_event": snapshot_event,
        "reason": {"type": "request", "request": {"id": next_id("req"), "idempotency_key": None}},
    }
