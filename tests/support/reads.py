"""Single numbers out of the Finance API's answers, read as the product reads them."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from finance_core.store.models import (
    HISTORY_STATUSES,
    OTHER_STATUSES,
    subscription_counts,
    subscription_history,
    subscriptions,
)
from finance_core.views.queries import (
    LastEvent,
    PlanCount,
    stripe_sync_status,
    subscription_summary,
)


def plan_counts(conn: Connection, statuses: Sequence[str]) -> list[PlanCount]:
    """The plan distribution among `statuses`, largest first."""
    now = datetime.now(UTC)
    return subscription_summary(conn=conn, active_statuses=statuses, now=now).plan_distribution


def failed_payments_count(conn: Connection) -> int:
    now = datetime.now(UTC)
    return stripe_sync_status(conn=conn, delayed_after=3600, now=now).failed_payments_count


def latest_event(conn: Connection) -> LastEvent | None:
    """The event of the latest verified delivery."""
    return stripe_sync_status(conn=conn, delayed_after=3600, now=datetime.now(UTC)).last_event


def maintained_and_recounted(conn: Connection) -> tuple[dict[tuple[str, str], int], ...]:
    """`subscription_counts` (zeros left out) and a GROUP BY over the subscriptions themselves."""
    maintained = {
        (r.product_id, r.status): r.subscription_count
        for r in conn.execute(select(subscription_counts))
        if r.subscription_count
    }
    recount = {
        (r.product_id, r.status): r.n
        for r in conn.execute(
            select(
                subscriptions.c.product_id, subscriptions.c.status, func.count().label("n")
            ).group_by(subscriptions.c.product_id, subscriptions.c.status)
        )
    }
    return maintained, recount


def cumulative_history(conn: Connection) -> dict[tuple[str, str], int]:
    """The daily history added up per (plan, status), zeros left out: what the counts must be.

    Not the days themselves: which intermediate states a subscription passed through, and so
    on which day its history moved, depends on the order its events arrived in (a stale event
    is ignored), and no two concurrent runs deliver in one order.
    """
    totals: dict[tuple[str, str], int] = {}
    for (_, product_id, status), change in history_changes(conn).items():
        totals[product_id, status] = totals.get((product_id, status), 0) + change
    return {key: total for key, total in totals.items() if total}


def history_changes(conn: Connection) -> dict[tuple[Any, str, str], int]:
    """The history's net change per (day, plan, status), its status columns spread out, zeros
    left out (days as the driver gives them)."""
    columns = (*HISTORY_STATUSES, OTHER_STATUSES)
    return {
        (row.day, row.product_id, status): getattr(row, status)
        for row in conn.execute(select(subscription_history))
        for status in columns
        if getattr(row, status)
    }
