"""How plans and churn moved: named, UI-free reads of the daily subscription history.

`subscription_history` holds, per UTC day and plan, the net change of each status and the
day's new subscriptions and cancellations, dated by Stripe: a subscription is new on its own
start date and canceled on its own cancel date, other moves land on the day they happened
(migrations 0012 and 0015). A day's count is today's `subscription_counts` less the changes
since that day, so a window costs a row per day and plan of the window, however many
subscriptions or years of history the store has. Days before `observed_since` are
reconstructed from Stripe's dates (their status detail is a guess).
Ranges are half-open UTC days: [start, end).
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import accumulate
from operator import sub
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    CompoundSelect,
    Connection,
    Date,
    Integer,
    bindparam,
    cast,
    func,
    null,
    select,
    union_all,
)

from finance_core.store import statements as hot
from finance_core.store.models import (
    history_column,
    products,
    subscription_counts,
    subscription_history,
    subscription_history_observed,
)
from finance_core.views.queries import plan_id_for, plan_name_for

MAX_DAYS = 3660
WINDOWS = (30, 90, 365)


@dataclass(frozen=True, slots=True)
class PlanSeries:
    """One plan's active subscriptions at the end of each UTC day of a window."""

    plan_id: uuid.UUID
    product_id: str
    plan_name: str
    days: tuple[date, ...]
    # One per day, in the order of `days`; None before the plan's first active subscription.
    counts: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class WeekFlow:
    """Subscriptions started and subscriptions canceled in one week (Monday first)."""

    week: date
    new_subscriptions: int
    cancellations: int

    @property
    def net(self) -> int:
        return self.new_subscriptions - self.cancellations


def last_days(*, days: int, now: datetime) -> tuple[date, date]:
    """The `days` UTC days that end with today, as [start, end)."""
    if now.tzinfo is None:
        raise ValueError("naive datetime given; use an aware UTC datetime")
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"a window is 1 to {MAX_DAYS} days, not {days}")
    end = now.astimezone(UTC).date() + timedelta(days=1)
    return end - timedelta(days=days), end


def _check(start: date, end: date) -> None:
    if not start < end or (end - start).days > MAX_DAYS:
        raise ValueError(f"a range is [start, end) with start < end, at most {MAX_DAYS} days")


_history = subscription_history.c


@cache
def _active_statement(dialect: str, statuses: tuple[str, ...]) -> CompoundSelect[Any]:
    """Per plan, the window's days (numbered from :start) with a change of the active ones and
    those changes, as two arrays; then per plan the active count at the end of the window:
    today's counts less the changes dated after it (:end on)."""
    # One named parameter per status (fixed by the settings), not an expanding IN list.
    wanted: list[BindParameter[str]] = [
        bindparam(f"status_{n}", status) for n, status in enumerate(statuses)
    ]
    # A status Stripe may add shares the history's `other_statuses` column with any other.
    first, *rest = dict.fromkeys(history_column(status) for status in statuses)
    change: ColumnElement[int] = _history[first]
    for name in rest:
        change = change + _history[name]
    start, end = bindparam("start", type_=Date), bindparam("end", type_=Date)
    # A plan's year is one row of two arrays, not 365 rows: handing thousands of rows to
    # Python cost more than reading them (docs/performance.md, the trends' 365 days).
    if dialect == "sqlite":  # days stored as ISO text; arrays as JSON text
        number: ColumnElement[int] = cast(
            func.julianday(_history.day) - func.julianday(start), Integer
        )
        numbers, changes = func.json_group_array(number), func.json_group_array(change)
    else:  # PostgreSQL: date - date is a number of days; integer arrays
        number = _history.day - start
        numbers, changes = func.array_agg(number), func.array_agg(change)
    # Both arrays aggregate one pass over the group's rows, in the same order.
    window = (
        select(_history.product_id, numbers, changes, null())
        .where(_history.day >= start, _history.day < end)
        .group_by(_history.product_id)
    )
    counted = union_all(
        select(
            subscription_counts.c.product_id, subscription_counts.c.subscription_count.label("n")
        ).where(subscription_counts.c.status.in_(wanted)),
        select(_history.product_id, (-change).label("n")).where(_history.day >= end),
    ).subquery()
    at_end = select(
        counted.c.product_id, null(), null(), cast(func.sum(counted.c.n), BigInteger)
    ).group_by(counted.c.product_id)
    return union_all(window, at_end)


_FLOW = (
    select(_history.day, func.sum(_history.new_subscriptions), func.sum(_history.cancellations))
    .where(
        _history.day >= bindparam("start", type_=Date), _history.day < bindparam("end", type_=Date)
    )
    .group_by(_history.day)
)


def _day(conn: Connection, value: date) -> Any:
    """A day as the driver stores it (SQLite: ISO text)."""
    return value.isoformat() if conn.dialect.name == "sqlite" else value


def _array(value: str | list[int]) -> Sequence[int]:
    """An aggregated array as the driver gives it (SQLite: JSON text)."""
    return json.loads(value) if isinstance(value, str) else value


def _stored_day(value: date | str) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def active_per_plan_per_day(
    *, conn: Connection, active_statuses: Sequence[str], start: date, end: date
) -> list[PlanSeries]:
    """Active subscriptions per plan at the end of each UTC day in [start, end), by plan name.

    One statement reads the window's changes, a row of arrays per plan, and each plan's count
    at the window's end (today's counts less any changes dated after it), one snapshot of
    both; it is compiled once and run on the driver (`finance_core.store.statements`). Plans
    never active in the window are left out.
    """
    _check(start, end)
    statement = _active_statement(conn.dialect.name, tuple(active_statuses))
    params = {"start": _day(conn, start), "end": _day(conn, end)}
    window: dict[str, tuple[Sequence[int], Sequence[int]]] = {}
    at_end: dict[str, int] = {}
    for product_id, numbers, changes, count in hot.run(conn, statement, params).fetchall():
        if count is None:
            window[product_id] = (_array(numbers), _array(changes))
        else:
            at_end[product_id] = count

    days = tuple(start + timedelta(days=n) for n in range((end - start).days))
    counts: dict[str, tuple[int | None, ...]] = {}
    for product_id in window.keys() | at_end.keys():
        deltas = [0] * len(days)
        numbers, changes = window.get(product_id, ((), ()))
        for number, change in zip(numbers, changes, strict=True):
            deltas[number] = change
        # Walk back from the window's end: the count at the end of a day is the next day's
        # count less that next day's change.
        column = list(accumulate(reversed(deltas[1:]), sub, initial=at_end.get(product_id, 0)))
        column.reverse()
        if any(column):
            first = next(n for n, count in enumerate(column) if count)
            counts[product_id] = (None,) * first + tuple(column[first:])
    names = _plan_names(conn, sorted(counts))
    series = [
        PlanSeries(plan_id_for(product_id), product_id, names[product_id], days, column)
        for product_id, column in counts.items()
    ]
    series.sort(key=lambda plan: (plan.plan_name, plan.product_id))
    return series


def new_and_canceled_per_week(*, conn: Connection, start: date, end: date) -> list[WeekFlow]:
    """New subscriptions and cancellations of the UTC days in [start, end), per week.

    Weeks run Monday to Sunday; a week only partly in the range counts its days in it. A
    subscription is new on its own start date and canceled on its own cancel date.
    """
    _check(start, end)
    weeks: dict[date, list[int]] = {}
    monday = start - timedelta(days=start.weekday())
    while monday < end:
        weeks[monday] = [0, 0]
        monday += timedelta(days=7)
    params = {"start": _day(conn, start), "end": _day(conn, end)}
    for stored, new, canceled in hot.run(conn, _FLOW, params).fetchall():
        day = _stored_day(stored)
        week = weeks[day - timedelta(days=day.weekday())]
        week[0] += int(new)
        week[1] += int(canceled)
    return [WeekFlow(week, new, canceled) for week, (new, canceled) in weeks.items()]


def _plan_names(conn: Connection, product_ids: Sequence[str]) -> dict[str, str]:
    statement = select(products.c.id, products.c.name).where(products.c.id.in_(product_ids))
    known = {product_id: name for product_id, name in conn.execute(statement)}
    return {product: plan_name_for(product, known.get(product)) for product in product_ids}


def observed_since(*, conn: Connection) -> date:
    """The first UTC day the store observed; the days before it are reconstructed."""
    value = conn.execute(select(subscription_history_observed.c.observed_since)).scalar()
    if value is None:  # a store whose migration row was removed by hand: nothing observed yet
        return datetime.now(UTC).date()
    return _stored_day(value)


@dataclass(frozen=True, slots=True)
class SubscriptionTrends:
    """The Trends page and the subscription-trends API: one window, read in one snapshot."""

    days: int
    observed_since: date
    as_of: datetime
    per_plan: list[PlanSeries]
    weekly: list[WeekFlow]  # whole ISO weeks, from the Monday of the window's first day
    window: tuple[date, ...]  # the window's days, oldest first

    def reconstructed(self, day: date) -> bool:
        """Whether a day is before the store observed, rebuilt from Stripe's dates."""
        return day < self.observed_since


def subscription_trends(
    *, conn: Connection, active_statuses: Sequence[str], days: int, now: datetime
) -> SubscriptionTrends:
    """Active subscriptions per plan per day over the last `days` UTC days, and weekly churn."""
    start, end = last_days(days=days, now=now)
    per_plan = active_per_plan_per_day(
        conn=conn, active_statuses=active_statuses, start=start, end=end
    )
    monday = start - timedelta(days=start.weekday())
    weekly = new_and_canceled_per_week(conn=conn, start=monday, end=end)
    window = tuple(start + timedelta(days=n) for n in range(days))
    return SubscriptionTrends(days, observed_since(conn=conn), now, per_plan, weekly, window)
