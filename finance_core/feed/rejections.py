"""Rejected deliveries: the latest few thousand kept for inspection, totals per reason forever."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select

from finance_core.store.db import insert_for, write_transaction
from finance_core.store.models import KEEP_LATEST_REJECTIONS, rejected_deliveries, rejection_totals


@dataclass(frozen=True, slots=True)
class ReasonCount:
    reason: str
    count: int
    last_rejected_at: datetime


def record_rejection(
    *,
    engine: Engine,
    reason: str,
    client_address: str | None,
    now: datetime,
    keep: int = KEEP_LATEST_REJECTIONS,
) -> None:
    """Count one rejected delivery; storage stays bounded however many arrive."""
    with write_transaction(engine) as conn:
        new_id = conn.execute(
            rejected_deliveries.insert()
            .values(received_at=now, reason=reason, client_address=(client_address or "")[:64])
            .returning(rejected_deliveries.c.id)
        ).scalar_one()
        conn.execute(delete(rejected_deliveries).where(rejected_deliveries.c.id <= new_id - keep))
        statement = insert_for(conn, rejection_totals).values(
            reason=reason, rejection_count=1, last_rejected_at=now
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["reason"],
                set_={
                    "rejection_count": rejection_totals.c.rejection_count + 1,
                    "last_rejected_at": now,
                },
            )
        )


def rejections_by_reason(*, conn: Connection) -> list[ReasonCount]:
    """Every reason ever seen, most frequent first."""
    rows = conn.execute(
        select(
            rejection_totals.c.reason,
            rejection_totals.c.rejection_count,
            rejection_totals.c.last_rejected_at,
        ).order_by(rejection_totals.c.rejection_count.desc(), rejection_totals.c.reason)
    ).all()
    return [ReasonCount(row.reason, int(row.rejection_count), row.last_rejected_at) for row in rows]


def kept_rejections(*, conn: Connection) -> int:
    """How many individual rejections are currently kept."""
    return int(conn.execute(select(func.count()).select_from(rejected_deliveries)).scalar_one())


def rejections_between(*, conn: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """Rejected deliveries received in [start, end) per reason, most frequent first.

    Reads the kept rejections (the latest KEEP_LATEST_REJECTIONS), a few thousand rows at most.
    """
    count = func.count().label("rejections")
    rows = conn.execute(
        select(rejected_deliveries.c.reason, count)
        .where(rejected_deliveries.c.received_at >= start, rejected_deliveries.c.received_at < end)
        .group_by(rejected_deliveries.c.reason)
        .order_by(count.desc(), rejected_deliveries.c.reason)
    ).all()
    return {row.reason: int(row.rejections) for row in rows}
