"""The morning digest's text (SPEC 16): yesterday and today's numbers in plain words.

Built from the same `finance_core` reads as the Finance API and the dashboard (plans from
`subscription_summary`, their change from the daily history in `views.trends`, failed payments
from `views.payments`, recoveries from `views.recovery`, the feed from `stripe_sync_status`),
so the digest's numbers are the API's. Counts, plan names, amounts and times only: no secret,
no customer data. Days are the history's UTC days; "yesterday" is the UTC day before the digest's.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection

from finance_core.alerts.rules import OVERVIEW_PAGE, when
from finance_core.settings import Settings
from finance_core.views.money import format_amount
from finance_core.views.payments import failing_totals
from finance_core.views.queries import stripe_sync_status, subscription_summary
from finance_core.views.recovery import Recovered, recovered
from finance_core.views.trends import active_per_plan_per_day, last_days, new_and_canceled_per_week

# Figures kept with each digest (alert_samples), for the next day's "since yesterday".
FAILED_MEASURE = "digest:failed"
FAILED_IN = "digest:failed:"  # + currency: failing invoices
DUE_IN = "digest:due:"  # + currency: amount due, minor units
RATE_DAYS = 30  # the recovery rate's window: a day's is too few invoices to say much


@dataclass(frozen=True, slots=True)
class DigestText:
    """A digest as sent and kept, and the figures kept for tomorrow's comparison."""

    title: str
    body: str
    figures: dict[str, int] = field(default_factory=dict)


def build_digest(
    *,
    conn: Connection,
    settings: Settings,
    now: datetime,
    local_day: date,
    yesterdays_figures: Mapping[str, int] | None,
) -> DigestText:
    """The digest of `local_day` (the day it is sent, in DIGEST_AT's zone) as of `now`.

    `yesterdays_figures`: what the previous day's digest kept (None: no digest yesterday, so
    failed payments are shown without a change).
    """
    start, end = last_days(days=2, now=now)  # [yesterday, tomorrow) in UTC days
    yesterday = start
    summary = subscription_summary(
        conn=conn, active_statuses=settings.active_subscription_statuses, now=now
    )
    series = active_per_plan_per_day(
        conn=conn, active_statuses=settings.active_subscription_statuses, start=start, end=end
    )
    at_end_of_yesterday = {plan.product_id: plan.counts[0] or 0 for plan in series}
    names = {plan.product_id: plan.plan_name for plan in series}
    (flow,) = new_and_canceled_per_week(conn=conn, start=yesterday, end=yesterday + timedelta(1))
    totals = failing_totals(conn=conn)
    status = stripe_sync_status(conn=conn, delayed_after=settings.webhook_delayed_after, now=now)
    midnight = datetime.combine(end - timedelta(days=1), time(), tzinfo=UTC)
    paid_yesterday = recovered(conn, days=1, now=midnight)  # [yesterday, today) in UTC
    rate_of_the_month = recovered(conn, days=RATE_DAYS, now=now).recovery_rate

    lines = [
        f"Morning digest for {local_day:%A %d %B %Y}, as of {when(now)}.",
        "",
        _active_line(summary.active_subscriptions, sum(at_end_of_yesterday.values())),
    ]
    now_by_plan = {plan.product_id: plan for plan in summary.plan_distribution}
    for product_id in sorted(
        now_by_plan.keys() | at_end_of_yesterday.keys(),
        key=lambda p: (now_by_plan[p].plan_name if p in now_by_plan else names[p], p),
    ):
        current = now_by_plan[product_id].count if product_id in now_by_plan else 0
        name = now_by_plan[product_id].plan_name if product_id in now_by_plan else names[product_id]
        change = current - at_end_of_yesterday.get(product_id, 0)
        lines.append(f"- {name}: {current} ({_change(change)})")
    new = _count(flow.new_subscriptions, "new subscription")
    lines += [
        f"Yesterday ({yesterday.isoformat()}, UTC): {new}, {flow.cancellations} canceled.",
        "",
    ]
    figures = {FAILED_MEASURE: sum(total.invoices for total in totals)}
    for total in totals:
        code = total.currency or "unknown"
        figures[FAILED_IN + code] = total.invoices
        figures[DUE_IN + code] = total.amount_due
    lines += _failed_payments_lines(figures, yesterdays_figures)
    lines.append(_recovered_line(paid_yesterday, rate_of_the_month))
    lines += [
        "",
        f"Feed: webhook health is {status.webhook_health.value} ({status.health_reason}).",
    ]
    lines.append(_waiting_line(status.unresolved_failed_events, status.thin_events_pending))
    if settings.dashboard_url:
        lines.append(f"Dashboard: {settings.dashboard_url}/{OVERVIEW_PAGE}")
    title = f"PenguinMails Finance: morning digest for {local_day.isoformat()}"
    return DigestText(title, "\n".join(lines), figures)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _change(change: int, noun: str = "") -> str:
    if change == 0:
        return "no change since yesterday"
    return f"{change:+d}{noun} since yesterday"


def _active_line(now: int, yesterday: int) -> str:
    by_plan = ", by plan:" if now or yesterday else "."
    return f"Active subscriptions: {now} ({_change(now - yesterday)}){by_plan}"


def _failed_payments_lines(
    figures: Mapping[str, int],
    yesterdays: Mapping[str, int] | None,
) -> list[str]:
    count = figures[FAILED_MEASURE]
    if yesterdays is None or FAILED_MEASURE not in yesterdays:
        since = "no figure for yesterday to compare with"
    else:
        since = _change(count - yesterdays[FAILED_MEASURE])
    lines = [f"Failed payments: {_count(count, 'invoice')} failing ({since})."]
    currencies = sorted(
        {key.removeprefix(FAILED_IN) for key in figures if key.startswith(FAILED_IN)}
        | {key.removeprefix(FAILED_IN) for key in (yesterdays or {}) if key.startswith(FAILED_IN)}
    )
    for code in currencies:
        invoices = figures.get(FAILED_IN + code, 0)
        due = figures.get(DUE_IN + code, 0)
        currency = None if code == "unknown" else code
        line = (
            f"- {code.upper()}: {_count(invoices, 'invoice')}, {format_amount(due, currency)} due"
        )
        if yesterdays is not None and FAILED_MEASURE in yesterdays:
            was_invoices = yesterdays.get(FAILED_IN + code, 0)
            was_due = yesterdays.get(DUE_IN + code, 0)
            amount = format_amount(due - was_due, currency)
            sign = "+" if due >= was_due else ""
            line += f" ({invoices - was_invoices:+d} invoices, {sign}{amount} since yesterday)"
        lines.append(line)
    return lines


def _recovered_line(paid_yesterday: Recovered, rate_of_the_month: float | None) -> str:
    if not paid_yesterday.totals:
        paid = "no failing invoice was paid"
    else:
        paid = "; ".join(
            f"{_count(total.invoices, 'invoice')}, "
            f"{format_amount(total.amount_paid, total.currency)}"
            for total in paid_yesterday.totals
        )
    rate = (
        ""
        if rate_of_the_month is None
        else f" Of the invoices that started failing in the last {RATE_DAYS} days and have "
        f"been closed, {round(rate_of_the_month * 100)}% were paid."
    )
    return f"Recovered yesterday: {paid}.{rate}"


def _waiting_line(failed_events: int, waiting_for_stripe: int) -> str:
    waiting = []
    if failed_events:
        waiting.append(
            f"{_count(failed_events, 'failed event')} to replay or dismiss (Webhooks page)"
        )
    if waiting_for_stripe:
        waiting.append(f"{_count(waiting_for_stripe, 'event')} waiting for details from Stripe")
    if not waiting:
        return "Waiting for action: nothing."
    return "Waiting for action: " + "; ".join(waiting) + "."
