"""Single numbers out of the Finance API's answers, read as the product reads them."""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection

from finance_core.queries import LastEvent, PlanCount, stripe_sync_status, subscription_summary


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
