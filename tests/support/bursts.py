"""Deterministic bursts of subscription and invoice events, for load tests and benchmarks."""

import random
from typing import Any

from tests.support import stripe_factory as sf

STATUSES = ["active", "trialing", "past_due", "canceled", "unpaid"]


def burst(count: int, *, seed: int, subscriptions_n: int = 300) -> list[dict[str, Any]]:
    """Subscription and invoice events; `created` rises, so the newest per object is the last."""
    rng = random.Random(seed)
    events = []
    for n in range(count):
        sub_id = f"sub_burst_{rng.randrange(subscriptions_n):04d}"
        if rng.random() < 0.7:
            obj = sf.subscription(sub_id, rng.choice(STATUSES), f"prod_{rng.randrange(8)}")
            event_type = "customer.subscription.updated"
        else:
            event_type = rng.choice(["invoice.payment_failed", "invoice.paid"])
            status = "open" if event_type == "invoice.payment_failed" else "paid"
            obj = sf.invoice(
                f"in_burst_{rng.randrange(subscriptions_n):04d}", status, subscription_id=sub_id
            )
        events.append(
            sf.event(
                event_type, obj, event_id=f"evt_burst_{seed}_{n:06d}", created=1_780_000_000 + n
            )
        )
    return events
