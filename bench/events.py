"""Realistic, distinct, signed Stripe events for load tests, built from real payload templates."""

import copy
import hashlib
import hmac
import json
import random
import time
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe"
TEMPLATES = {
    "customer.subscription.updated": "stripe-sync-engine/subscription_updated.json",
    "invoice.payment_failed": "stripe-ruby-mock/invoice.payment_failed.json",
    "invoice.paid": "stripe-sync-engine/invoice_paid.json",
}
STATUSES = ["active", "active", "active", "trialing", "past_due", "canceled"]


def _template(event_type: str) -> dict[str, Any]:
    path = FIXTURES / TEMPLATES[event_type]
    if not path.exists():
        raise SystemExit(f"bench needs the shared Stripe fixtures at {FIXTURES}")
    event = json.loads(path.read_text())
    # Personal data does not belong in load either: blank it.
    obj = event["data"]["object"]
    for key in ("customer_email", "customer_name", "customer_phone", "customer_address"):
        if key in obj:
            obj[key] = None
    return event


def generate(
    count: int, *, seed: int = 7, subscriptions: int = 5000, plans: int = 20
) -> list[dict[str, Any]]:
    """`count` distinct events: 60% subscription updates, 40% invoice failures and payments."""
    rng = random.Random(seed)
    templates = {name: _template(name) for name in TEMPLATES}
    run = f"{int(time.time())}{rng.randrange(10**6):06d}"
    events = []
    for n in range(count):
        roll = rng.random()
        event_type = (
            "customer.subscription.updated"
            if roll < 0.6
            else "invoice.payment_failed"
            if roll < 0.85
            else "invoice.paid"
        )
        event = copy.deepcopy(templates[event_type])
        event["id"] = f"evt_bench_{run}_{n:08d}"
        event["created"] = 1_790_000_000 + n
        obj = event["data"]["object"]
        sub_id = f"sub_bench_{rng.randrange(subscriptions):06d}"
        if event_type.startswith("customer.subscription"):
            product = f"prod_bench_{rng.randrange(plans):02d}"
            obj["id"], obj["status"] = sub_id, rng.choice(STATUSES)
            for item in obj["items"]["data"]:
                item["price"]["product"] = product
                if isinstance(item.get("plan"), dict):
                    item["plan"]["product"] = product
            if isinstance(obj.get("plan"), dict):
                obj["plan"]["product"] = product
        else:
            obj["id"] = f"in_bench_{rng.randrange(subscriptions * 2):07d}"
            obj["subscription"] = sub_id
        events.append(event)
    return events


def sign(body: str, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    v1 = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


def write_requests(events: list[dict[str, Any]], secret: str, path: Path) -> float:
    """One request per line for wrk: "<signature>\\t<compact JSON body>". Returns mean size."""
    total = 0
    with path.open("w") as out:
        for event in events:
            body = json.dumps(event, separators=(",", ":"))
            total += len(body)
            out.write(f"{sign(body, secret)}\t{body}\n")
    return total / max(len(events), 1)
