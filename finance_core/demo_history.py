"""A believable past for demo data: the daily history of the demo's year of subscriptions.

Demo events all arrive on the day the demo starts, so a history dated by when the store saw
them would show a single day. `history_of` dates each change by the Stripe event that made it
(a subscription is new on its `start_date`); `demo.backdate_history` writes its rows, to demo
stores only. `spread` (for a bench store without such events) invents when each of today's
subscriptions arrived, and for canceled and expired ones when they left, over a window. Both
are pure, and their rows add up to today's counts, as the history always does.
"""

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

# Of today's subscriptions, this share was already there before the window opened.
ALREADY_THERE = 0.35
# Terminal statuses are reached from another: what the subscription was before.
CAME_FROM = {"canceled": "active", "incomplete_expired": "incomplete"}


def spread(
    counts: Mapping[tuple[str, str], int], *, days: int, today: date, rng: random.Random
) -> list[dict[str, Any]]:
    """History rows over the `days` days ending `today` that end at `counts` (plan, status)."""
    first = today - timedelta(days=days - 1)
    rows: defaultdict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(day: date, key: tuple[str, str], change: int, new: int = 0, canceled: int = 0) -> None:
        row = rows[(day, *key)]
        row[0], row[1], row[2] = row[0] + change, row[1] + new, row[2] + canceled

    for (product_id, status), count in sorted(counts.items()):
        for _ in range(count):
            if rng.random() < ALREADY_THERE:
                arrived = first - timedelta(days=1)
            else:  # more of them lately: a business that grows
                arrived = first + timedelta(days=int(days * rng.random() ** 0.6))
            before = CAME_FROM.get(status)
            if before is None:
                add(arrived, (product_id, status), 1, new=1)
                continue
            left = arrived + timedelta(days=rng.randint(0, (today - arrived).days))
            add(arrived, (product_id, before), 1, new=1)
            add(left, (product_id, before), -1)
            add(left, (product_id, status), 1, canceled=int(status == "canceled"))
    return [
        {
            "day": day,
            "product_id": product_id,
            "status": status,
            "subscription_change": change,
            "new_subscriptions": new,
            "cancellations": canceled,
        }
        for (day, product_id, status), (change, new, canceled) in sorted(rows.items())
        if change or new or canceled
    ]


def history_of(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """History rows from Stripe subscription events: each change on the UTC day it happened.

    A subscription is new on its `start_date` (else `created`) in its first status, and moves
    on the day of each later event; duplicates and late deliveries are put back in order, as
    the store applies them. The rows add up to the statuses the last events leave.
    """
    changes: defaultdict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for event in events:
        obj = event["data"]["object"]
        if obj.get("object") == "subscription":
            changes[obj["id"]][event["id"]] = event
    rows: defaultdict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for by_id in changes.values():
        ordered = sorted(by_id.values(), key=lambda event: event["created"])
        before: tuple[str, str] | None = None
        for event in ordered:
            obj = event["data"]["object"]
            key = (obj["items"]["data"][0]["price"]["product"], obj["status"])
            if key == before:
                continue
            if before is None:
                started = obj.get("start_date") or obj["created"]
                row = rows[(_utc_day(started), *key)]
                row[0], row[1] = row[0] + 1, row[1] + 1
            else:
                day = _utc_day(event["created"])
                rows[(day, *before)][0] -= 1
                row = rows[(day, *key)]
                row[0] += 1
                row[2] += int(key[1] == "canceled" and before[1] != "canceled")
            before = key
    return [
        {
            "day": day,
            "product_id": product_id,
            "status": status,
            "subscription_change": change,
            "new_subscriptions": new,
            "cancellations": canceled,
        }
        for (day, product_id, status), (change, new, canceled) in sorted(rows.items())
        if change or new or canceled
    ]


def _utc_day(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()
