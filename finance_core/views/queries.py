"""Named, UI-free queries behind every number (SPEC section 5); the API and dashboard share them.

Each reads a handful of rows through maintained counts or indexes, never a whole table.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import BindParameter, Connection, Select, bindparam, func, literal, select, true

from finance_core.feed.stripe_shapes import timestamp
from finance_core.store import statements as hot
from finance_core.store.models import (
    FEED_CHECK_ROW,
    failing_invoice_totals,
    feed_check,
    products,
    rejection_totals,
    subscription_counts,
    subscriptions,
    webhook_events,
)

# plan_id = uuid5(PLAN_NAMESPACE, product id): stable across restarts and rebuilds of the store.
PLAN_NAMESPACE = uuid.UUID("6f1c2d3e-8a4b-5c6d-9e0f-a1b2c3d4e5f6")
NO_PLAN_NAME = "No plan"
STRIPE_DASHBOARD = "https://dashboard.stripe.com"


class WebhookHealth(StrEnum):
    HEALTHY = "healthy"
    DELAYED = "delayed"
    ERROR = "error"


@lru_cache(maxsize=4096)  # uuid5 hashes with SHA-1: 8 us a plan, on every summary
def plan_id_for(product_id: str) -> uuid.UUID:
    """The stable public id of the plan that a Stripe product stands for."""
    return uuid.uuid5(PLAN_NAMESPACE, product_id)


def plan_name_for(product_id: str, name: str | None) -> str:
    """A plan's name (SPEC section 5): the product's, else its id, else "No plan"."""
    return name or product_id or NO_PLAN_NAME


def stripe_dashboard_url(path: str, *, livemode: bool) -> str:
    """A Stripe Dashboard link, under /test when the data comes from test mode."""
    prefix = "" if livemode else "/test"
    return f"{STRIPE_DASHBOARD}{prefix}/{path.lstrip('/')}"


@dataclass(frozen=True, slots=True)
class PlanCount:
    plan_id: uuid.UUID
    product_id: str
    plan_name: str
    count: int


@dataclass(frozen=True, slots=True)
class SubscriptionSummary:
    active_subscriptions: int
    plan_distribution: list[PlanCount]
    livemode: bool
    as_of: datetime

    @property
    def stripe_dashboard_url(self) -> str:
        return stripe_dashboard_url("revenue", livemode=self.livemode)


@dataclass(frozen=True, slots=True)
class LastEvent:
    id: str
    type: str
    created: datetime
    livemode: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class SyncStatus:
    webhook_health: WebhookHealth
    health_reason: str
    last_event: LastEvent | None
    failed_payments_count: int
    unresolved_failed_events: int
    rejected_deliveries: int
    as_of: datetime
    # Thin events stored and acknowledged, waiting for their objects from Stripe's API.
    thin_events_pending: int = 0
    oldest_pending_since: datetime | None = None
    pending_reason: str | None = None
    # The feed check's finding (SPEC 17): Stripe's view says the feed is broken, in words.
    feed_check_problem: str | None = None

    @property
    def last_webhook_received(self) -> datetime | None:
        return self.last_event.received_at if self.last_event else None

    @property
    def livemode(self) -> bool:
        return self.last_event.livemode if self.last_event else True

    @property
    def stripe_dashboard_url(self) -> str:
        return stripe_dashboard_url("payments", livemode=self.livemode)


# The statements behind the Finance API's numbers, built once and run on the driver
# (finance_core.store.statements): SQLAlchemy's building and execution cost ten times the database's
# own work for reads this small. Constants are bound values SQLAlchemy fixes in the statement.
# The event of the latest verified delivery ("last webhook"); retention never prunes it.
LATEST_EVENT = (
    select(
        webhook_events.c.id,
        webhook_events.c.type,
        webhook_events.c.created,
        webhook_events.c.livemode,
        webhook_events.c.last_received_at,
    )
    # Events recovered by `sync` have no deliveries: they are not webhooks.
    .where(webhook_events.c.deliveries > 0)
    .order_by(webhook_events.c.last_received_at.desc())
    .limit(1)
)
# Invoices whose latest payment attempt failed and that are still open: the per-currency
# totals the invoice triggers keep (migration 0014), a row per currency, rather than a count of
# the failing invoices' index entries (6 ms at 100,000 failing, in every sync-status answer,
# metrics read and alert evaluation).
_FAILED_PAYMENTS = select(func.coalesce(func.sum(failing_invoice_totals.c.invoices), 0))
# Verified events whose latest attempt failed, neither processed since nor dismissed.
_UNRESOLVED_FAILED_EVENTS = (
    select(func.count()).select_from(webhook_events).where(webhook_events.c.status == "failed")
)
# All rejected deliveries ever counted, across reasons.
_REJECTED_DELIVERIES = select(func.sum(rejection_totals.c.rejection_count))
# Thin events waiting for their objects: how many, since when, and why (the oldest's reason).
_PENDING = webhook_events.c.status == "pending"
_PENDING_THIN_EVENTS = select(func.count()).select_from(webhook_events).where(_PENDING)
_OLDEST_PENDING = select(func.min(webhook_events.c.first_received_at)).where(_PENDING)
_PENDING_REASON = (
    select(webhook_events.c.error)
    .where(_PENDING)
    .order_by(webhook_events.c.first_received_at)
    .limit(1)
)
# The latest feed check's problem (missing, disabled, missing types), if any.
_FEED_CHECK_PROBLEM = select(feed_check.c.problem).where(feed_check.c.id == FEED_CHECK_ROW)
_SUBSCRIPTIONS = func.sum(subscription_counts.c.subscription_count)
_STATUS_BREAKDOWN = (
    select(subscription_counts.c.status, _SUBSCRIPTIONS)
    .group_by(subscription_counts.c.status)
    .having(_SUBSCRIPTIONS > 0)
)


@cache
def _plan_counts_statement(statuses: tuple[str, ...]) -> Select[Any]:
    # One named parameter per status (fixed by the settings), not an expanding IN list.
    wanted: list[BindParameter[str]] = [
        bindparam(f"status_{n}", status) for n, status in enumerate(statuses)
    ]
    return (
        select(
            subscription_counts.c.product_id,
            products.c.name,
            _SUBSCRIPTIONS.label("subscriptions"),
        )
        .select_from(
            subscription_counts.outerjoin(
                products, products.c.id == subscription_counts.c.product_id
            )
        )
        .where(subscription_counts.c.status.in_(wanted))
        .group_by(subscription_counts.c.product_id, products.c.name)
        .having(_SUBSCRIPTIONS > 0)
    )


# Each Finance API answer is one statement: one snapshot without a transaction, and on
# PostgreSQL one round trip instead of one per number. What it reads is LEFT JOINed to a
# one-row anchor, so that an empty store still answers a row.
_ANCHOR = select(literal(1).label("anchor")).subquery("anchor")


@cache
def _summary_statement(statuses: tuple[str, ...]) -> Select[Any]:
    """A row per plan (none: one row of NULLs), each with the latest event's livemode."""
    plans = _plan_counts_statement(statuses).subquery("plans")
    livemode = LATEST_EVENT.with_only_columns(webhook_events.c.livemode).scalar_subquery()
    return select(
        plans.c.product_id, plans.c.name, plans.c.subscriptions, livemode.label("livemode")
    ).select_from(_ANCHOR.outerjoin(plans, true()))


_LATEST = LATEST_EVENT.subquery("latest")
_SYNC_STATUS = select(
    *_LATEST.c,
    _UNRESOLVED_FAILED_EVENTS.scalar_subquery().label("unresolved_failed_events"),
    _FAILED_PAYMENTS.scalar_subquery().label("failed_payments"),
    _REJECTED_DELIVERIES.scalar_subquery().label("rejected_deliveries"),
    _PENDING_THIN_EVENTS.scalar_subquery().label("thin_events_pending"),
    _OLDEST_PENDING.scalar_subquery().label("oldest_pending_since"),
    _PENDING_REASON.scalar_subquery().label("pending_reason"),
    _FEED_CHECK_PROBLEM.scalar_subquery().label("feed_check_problem"),
).select_from(_ANCHOR.outerjoin(_LATEST, true()))


def _last_event(
    event_id: str | None, event_type: str, created_at: int, livemode: Any, received_at: Any
) -> LastEvent | None:
    if event_id is None:
        return None
    created = timestamp(created_at)
    received = hot.stored_time(received_at)
    assert created is not None and received is not None
    return LastEvent(event_id, event_type, created, bool(livemode), received)


def _plan_distribution(rows: Sequence[Sequence[Any]]) -> list[PlanCount]:
    counts = [
        PlanCount(
            plan_id=plan_id_for(product_id),
            product_id=product_id,
            plan_name=plan_name_for(product_id, name),
            count=int(total),
        )
        for product_id, name, total in rows
    ]
    counts.sort(key=lambda plan: (-plan.count, plan.plan_name, plan.product_id))
    return counts


def status_breakdown(*, conn: Connection) -> dict[str, int]:
    """All subscriptions by status, whatever the plan."""
    rows = hot.run(conn, _STATUS_BREAKDOWN, {}).fetchall()
    return {status: int(count) for status, count in sorted(rows, key=lambda r: -r[1])}


# Paused subscriptions by why Stripe paused them (the partial index holds the paused few).
_PAUSED_BY_REASON = (
    select(subscriptions.c.pause_reason, func.count())
    .where(subscriptions.c.status == "paused")
    .group_by(subscriptions.c.pause_reason)
)


def paused_by_reason(*, conn: Connection) -> dict[str, int]:
    """Paused subscriptions per pause reason, most first ("unspecified" when Stripe gave none)."""
    counts: dict[str, int] = {}
    for reason, count in hot.run(conn, _PAUSED_BY_REASON, {}).fetchall():
        key = reason or "unspecified"
        counts[key] = counts.get(key, 0) + int(count)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def subscription_summary(
    *, conn: Connection, active_statuses: Sequence[str], now: datetime
) -> SubscriptionSummary:
    """Active subscriptions and their plan distribution (SPEC 5 and 6), in one statement."""
    rows = hot.run(conn, _summary_statement(tuple(active_statuses)), {}).fetchall()
    # No plan: the anchor's row alone, product_id NULL (a primary key is never NULL).
    distribution = _plan_distribution([row[:3] for row in rows if row[0] is not None])
    livemode = rows[0][3]  # the latest event's, on every row; none yet: live
    return SubscriptionSummary(
        active_subscriptions=sum(plan.count for plan in distribution),
        plan_distribution=distribution,
        livemode=True if livemode is None else bool(livemode),
        as_of=now,
    )


def stripe_sync_status(*, conn: Connection, delayed_after: int, now: datetime) -> SyncStatus:
    """Webhook feed health, the latest event and failing payments (SPEC 5 and 6), one statement."""
    row = hot.run(conn, _SYNC_STATUS, {}).fetchone()
    *latest, failed_events, failed_payments, rejected = row[:8]
    pending, oldest_pending, pending_reason, feed_problem = row[8:]
    last = _last_event(*latest)
    oldest_pending = hot.stored_time(oldest_pending)
    quiet_limit = timedelta(seconds=delayed_after)
    thin_waiting = oldest_pending is not None and now - oldest_pending > quiet_limit
    if failed_events or thin_waiting or feed_problem:
        health = WebhookHealth.ERROR
        problems = []
        if failed_events:
            problems.append(
                f"{failed_events} event{'s' if failed_events != 1 else ''} failed to apply "
                "and await a redelivery, a replay or an admin's dismissal"
            )
        if thin_waiting:
            problems.append(_thin_wait(int(pending), quiet_limit, pending_reason))
        if feed_problem:
            problems.append(f"Stripe's view of the feed: {feed_problem}")
        reason = "; ".join(problems)
    elif last is None:
        health, reason = WebhookHealth.DELAYED, "no webhook has been received yet"
    elif now - last.received_at > quiet_limit:
        health = WebhookHealth.DELAYED
        reason = f"no webhook for more than {_duration(quiet_limit)}"
    else:
        health = WebhookHealth.HEALTHY
        reason = f"webhooks arriving; the last within {_duration(quiet_limit)}"
    return SyncStatus(
        webhook_health=health,
        health_reason=reason,
        last_event=last,
        failed_payments_count=int(failed_payments),
        unresolved_failed_events=int(failed_events),
        rejected_deliveries=int(rejected or 0),
        as_of=now,
        thin_events_pending=int(pending),
        oldest_pending_since=oldest_pending,
        pending_reason=pending_reason,
        feed_check_problem=feed_problem,
    )


def _thin_wait(pending: int, waited: timedelta, reason: str | None) -> str:
    plural = pending != 1
    why = reason or (
        "no listener has tried to fetch them yet (is one running with its background jobs?)"
    )
    # In the finance team's words: the Overview shows this reason ("thin" is Stripe's jargon).
    return (
        f"{pending} event{'s' if plural else ''} waiting for details from Stripe for more "
        f"than {_duration(waited)}: {why}"
    )


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} seconds"
