"""The store's numbers `/metrics` reports as gauges, read through the API's one-statement answers.

One place, so that every number a gauge shows is the Finance API's for the same store.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from finance_core.feed.feed_check import feed_check_gauges
from finance_core.settings import Settings
from finance_core.views.queries import WebhookHealth, stripe_sync_status, subscription_summary


@dataclass(frozen=True, slots=True)
class StoreGauges:
    webhook_health: WebhookHealth
    last_webhook_received: datetime | None
    active_subscriptions: int
    failed_payments: int
    unresolved_failed_events: int
    thin_events_pending: int
    # The feed check's (ok 1/0, Unix time of the check); None when it is off or never ran.
    feed_check: tuple[float, float] | None = None


def store_gauges(*, conn: Connection, settings: Settings, now: datetime) -> StoreGauges:
    """The gauges' values now: the API's summary and sync status, and the feed check's row."""
    summary = subscription_summary(
        conn=conn, active_statuses=settings.active_subscription_statuses, now=now
    )
    status = stripe_sync_status(conn=conn, delayed_after=settings.webhook_delayed_after, now=now)
    return StoreGauges(
        webhook_health=status.webhook_health,
        last_webhook_received=status.last_webhook_received,
        active_subscriptions=summary.active_subscriptions,
        failed_payments=status.failed_payments_count,
        unresolved_failed_events=status.unresolved_failed_events,
        thin_events_pending=status.thin_events_pending,
        feed_check=feed_check_gauges(conn=conn, now=now),
    )
