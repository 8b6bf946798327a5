"""Recovered payments: invoices that were failing and were paid, and the recovery rate.

An invoice "was failing" once any payment failure of it was seen (`first_failed_at`, kept
after it closes); it closed when it reached paid, void, uncollectible or deleted
(`closed_at`). A window's whole UTC days are read from the daily totals the triggers of
migration 0012 keep (`recovery_paid_daily`, `recovery_closings_daily`); its partial first and
last days from a partial index over the invoices that ever failed. A window costs a few rows
per day plus one day's invoices, whatever the size of the store.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, func, select, union_all

from finance_core.store.models import invoices, recovery_closings_daily, recovery_paid_daily
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
_paid = recovery_paid_daily.c
_closings = recovery_closings_daily.c


def _paid_in(start: datetime, end: datetime) -> Select[Any]:
    """Invoices that had been failing and were paid in [start, end), per currency."""
    return (
        select(
            func.coalesce(invoices.c.currency, "").label("currency"),
            func.count().label("invoices"),
            func.coalesce(func.sum(invoices.c.amount_paid), 0).label("amount_paid"),
        )
        .where(
            _EVER_FAILED,
            invoices.c.closed_at >= start,
            invoices.c.closed_at < end,
            invoices.c.status == "paid",
        )
        .group_by(invoices.c.currency)
    )


def _failed_in_and_closed(start: datetime, end: datetime) -> Select[Any]:
    """Invoices that first failed in [start, end) and have closed, per status."""
    return (
        select(invoices.c.status, func.count().label("invoices"))
        .where(
            _EVER_FAILED,
            invoices.c.closed_at.is_not(None),  # as the partial index's predicate says it
            invoices.c.first_failed_at >= start,
            invoices.c.first_failed_at < end,
        )
        .group_by(invoices.c.status)
    )


def _whole_days(start: datetime, end: datetime) -> tuple[date, date]:
    """The UTC days wholly inside [start, end), as [first, last): the window's daily rows."""
    first = start.astimezone(UTC).date()
    if start.astimezone(UTC) != _midnight(first):
        first += timedelta(days=1)
    return first, max(first, end.astimezone(UTC).date())


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def recovered(conn: Connection, *, days: int, now: datetime) -> Recovered:
    """Invoices that were failing and were paid in [now - days, now), per currency (the most
    invoices first), and the recovery rate of that window.

    The window's whole UTC days come from the daily tables the triggers keep; its two partial
    days (the first, from `now - days`, and today up to `now`) from the invoices themselves
    through their partial indexes, so the answer is exact to the instant at a day's cost."""
    if days < 1:
        raise ValueError("the window is at least one day")
    start, end = now - timedelta(days=days), now
    first, last = _whole_days(start, end)
    edges = ((start, min(_midnight(first), end)), (max(_midnight(last), start), end))
    paid_parts = union_all(
        select(_paid.currency, _paid.invoices, _paid.amount_paid).where(
            _paid.day >= first, _paid.day < last
        ),
        *(_paid_in(low, high) for low, high in edges),
    ).subquery()
    paid_rows = select(
        paid_parts.c.currency,
        func.sum(paid_parts.c.invoices).label("invoices"),
        func.sum(paid_parts.c.amount_paid).label("amount_paid"),
    ).group_by(paid_parts.c.currency)
    totals = [
        RecoveredTotal(row.currency or None, int(row.invoices), int(row.amount_paid))
        for row in conn.execute(paid_rows)
        if row.invoices
    ]
    totals.sort(key=lambda total: (-total.invoices, total.currency or ""))
    closing_parts = union_all(
        select(_closings.status, _closings.invoices).where(
            _closings.day >= first, _closings.day < last
        ),
        *(_failed_in_and_closed(low, high) for low, high in edges),
    ).subquery()
    closing_rows = select(
        closing_parts.c.status, func.sum(closing_parts.c.invoices).label("invoices")
    ).group_by(closing_parts.c.status)
    by_status = {row.status: int(row.invoices) for row in conn.execute(closing_rows)}
    closed = sum(count for status, count in by_status.items() if status in CLOSED_STATUSES)
    rate = by_status.get("paid", 0) / closed if closed else None
    return Recovered(days=days, totals=totals, recovery_rate=rate)
