"""Recovered payments: invoices that were failing and were paid, and the recovery rate.

An invoice "was failing" once any payment failure of it was seen (`first_failed_at`, kept
after it closes); it closed when it reached paid, void, uncollectible or deleted
(`closed_at`). Both read a partial index over the invoices that ever failed, so a window
costs the invoices in it, whatever the size of the store.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, func, select

from finance_core.store.models import invoices
from finance_core.views.money import format_amount

RECOVERED_WINDOWS = (7, 30, 90)
DEFAULT_RECOVERED_DAYS = 30
CLOSED_STATUSES = frozenset({"paid", "void", "uncollectible", "deleted"})


@dataclass(frozen=True, slots=True)
class RecoveredTotal:
    """Invoices in one currency that were failing and were paid in the window."""

    currency: str | None
    invoices: int
    amount_paid: int  # minor units; an invoice without an amount paid counts as 0

    @property
    def amount(self) -> str:
        return format_amount(self.amount_paid, self.currency)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What was recovered in the last `days` days, and the window's recovery rate."""

    days: int
    totals: list[RecoveredTotal]
    # Of the invoices that started failing in the window and have closed since, the share
    # closed by payment; None when none has closed.
    recovery_rate: float | None

    @property
    def recovery_rate_text(self) -> str:
        """The rate in words for the finance team."""
        if self.recovery_rate is None:
            return (
                f"No invoice that started failing in the last {self.days} days has been "
                "paid, voided, marked uncollectible or deleted yet."
            )
        return (
            f"Recovery rate {self.recovery_rate:.0%}: of the invoices that started failing in "
            f"the last {self.days} days and have closed since, the share that was paid rather "
            "than voided, marked uncollectible or deleted."
        )


_EVER_FAILED = invoices.c.first_failed_at.is_not(None)  # the partial indexes' predicate
_PAID_IN_WINDOW = (
    select(
        invoices.c.currency,
        func.count().label("invoices"),
        func.coalesce(func.sum(invoices.c.amount_paid), 0).label("amount_paid"),
    )
    .where(
        _EVER_FAILED,
        invoices.c.closed_at >= bindparam("start"),
        invoices.c.closed_at < bindparam("end"),
        invoices.c.status == "paid",
    )
    .group_by(invoices.c.currency)
)
# Closed ones only: every invoice failing now started in some window, and they are many.
_FAILED_IN_WINDOW_AND_CLOSED = (
    select(invoices.c.status, func.count().label("invoices"))
    .where(
        _EVER_FAILED,
        invoices.c.closed_at.is_not(None),  # as the partial index's predicate says it
        invoices.c.first_failed_at >= bindparam("start"),
        invoices.c.first_failed_at < bindparam("end"),
    )
    .group_by(invoices.c.status)
)


def recovered(conn: Connection, *, days: int, now: datetime) -> Recovered:
    """Invoices that were failing and were paid in [now - days, now), per currency (the most
    invoices first), and the recovery rate of that window."""
    if days < 1:
        raise ValueError("the window is at least one day")
    window = {"start": now - timedelta(days=days), "end": now}
    totals = [
        RecoveredTotal(row.currency, int(row.invoices), int(row.amount_paid))
        for row in conn.execute(_PAID_IN_WINDOW, window)
    ]
    totals.sort(key=lambda total: (-total.invoices, total.currency or ""))
    closings = conn.execute(_FAILED_IN_WINDOW_AND_CLOSED, window)
    by_status = {row.status: int(row.invoices) for row in closings}
    closed = sum(count for status, count in by_status.items() if status in CLOSED_STATUSES)
    rate = by_status.get("paid", 0) / closed if closed else None
    return Recovered(days=days, totals=totals, recovery_rate=rate)
