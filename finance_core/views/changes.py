"""How the Overview's numbers moved: the change since yesterday and since a week ago (UTC days)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from finance_core.alerts import samples
from finance_core.views import trends

WEEK = 7


@dataclass(frozen=True, slots=True)
class Changes:
    """A number's change since the end of yesterday and of the day a week before; None: unknown."""

    since_yesterday: int | None
    since_last_week: int | None


def _since(current: int, then: int | None) -> int | None:
    return None if then is None else current - then


def active_subscription_changes(
    *, conn: Connection, active_statuses: tuple[str, ...], now: datetime
) -> Changes:
    """Active subscriptions now against the end of yesterday and of 7 days ago, per the history.

    All three counts come from `subscription_history` through the Trends reads, so they are
    counted alike (the same statuses, one snapshot); today's is the current count.
    """
    today = now.astimezone(UTC).date()
    series = trends.active_per_plan_per_day(
        conn=conn,
        active_statuses=active_statuses,
        start=today - timedelta(days=WEEK),
        end=today + timedelta(days=1),
    )
    # One total per day, from a week ago to today; no plan active in the window: all zero.
    # A plan's day before its first subscription is None (not drawn): it counts as none.
    totals = [
        sum(count or 0 for count in column)
        for column in zip(*(plan.counts for plan in series), strict=True)
    ]
    if not totals:
        return Changes(0, 0)
    return Changes(totals[-1] - totals[-2], totals[-1] - totals[0])


def failed_payment_changes(*, conn: Connection, failed_now: int, now: datetime) -> Changes:
    """Failed payments now against the counts the alert job kept at the end of past days.

    Unknown (None) for a day before the alert job first ran: no listener kept a count yet.
    """
    today = now.astimezone(UTC).date()
    measure = samples.FAILED_PAYMENTS_DAILY_MEASURE
    yesterday = samples.day_close(conn=conn, measure=measure, day=today - timedelta(days=1))
    week_ago = samples.day_close(conn=conn, measure=measure, day=today - timedelta(days=WEEK))
    return Changes(_since(failed_now, yesterday), _since(failed_now, week_ago))
