"""A made-up past for bench stores: the daily history of subscriptions that have no dates.

The demo's own events carry Stripe's dates, which the store's history follows. `spread` is for
a bench store without such events: it invents when each of today's subscriptions arrived, and
for canceled and expired ones when they left, over a window. It is pure, and its rows add up
to today's counts, as the history always does.
"""

import random
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from finance_core.store.models import HISTORY_STATUSES, OTHER_STATUSES, history_column

# Of today's subscriptions, this share was already there before the window opened.
ALREADY_THERE = 0.35
# Terminal statuses are reached from another: what the subscription was before.
CAME_FROM = {"canceled": "active", "incomplete_expired": "incomplete"}


def spread(
    counts: Mapping[tuple[str, str], int], *, days: int, today: date, rng: random.Random
) -> list[dict[str, Any]]:
    """History rows over the `days` days ending `today` that end at `counts` (plan, status):
    one per day and plan, a column per status."""
    first = today - timedelta(days=days - 1)
    columns = (*HISTORY_STATUSES, OTHER_STATUSES)
    rows: defaultdict[tuple[date, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys((*columns, "new_subscriptions", "cancellations"), 0)
    )

    def add(day: date, key: tuple[str, str], change: int, new: int = 0, canceled: int = 0) -> None:
        product_id, status = key
        row = rows[day, product_id]
        row[history_column(status)] += change
        row["new_subscriptions"] += new
        row["cancellations"] += canceled

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
        {"day": day, "product_id": product_id, **row}
        for (day, product_id), row in sorted(rows.items())
        if any(row.values())
    ]
