"""Single numbers out of the Finance API's answers, read as the product reads them."""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, MetaData, select

from finance_core.db import read_transaction
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


def store_dump(engine: Engine) -> str:
    """Every row of every table in the store, as text to search for what must not be there."""
    metadata = MetaData()
    metadata.reflect(engine)
    with read_transaction(engine) as conn:
        return "\n".join(
            repr(tuple(row))
            for table in metadata.sorted_tables
            for row in conn.execute(select(table))
        )
