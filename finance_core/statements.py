"""Statements of the ingest hot path, built once per dialect and run with parameter dicts.

Building a Core statement (coercing values, computing its cache key) costs more than running
it on SQLite, so these are built once and executed with plain dicts.
"""

from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, select, update

from finance_core.db import insert_for_dialect
from finance_core.models import subscription_counts, webhook_events


@cache
def claim(dialect: str, table: Table) -> Any:
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return (
        insert_for_dialect(dialect, table)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )


@cache
def lock(table: Table) -> Any:
    return select(table).where(table.c.id == bindparam("object_id")).with_for_update()


@cache
def overwrite(table: Table) -> Any:
    return update(table).where(table.c.id == bindparam("object_id"))


@cache
def event_update(change: str) -> Any:
    statement = update(webhook_events).where(webhook_events.c.id == bindparam("object_id"))
    if change == "delivered":
        return statement.values(
            deliveries=webhook_events.c.deliveries + 1, last_received_at=bindparam("at")
        )
    if change == "ignored":
        return statement.values(
            status="ignored", processed_at=bindparam("at"), error=None, payload=None
        )
    return statement.values(  # "processed": a failed event, finished at last
        status="processed",
        attempts=webhook_events.c.attempts + 1,
        processed_at=bindparam("at"),
        error=None,
        payload=None,
        dismissed_by=None,
    )


@cache
def count_down() -> Any:
    counts = subscription_counts.c
    return (
        update(subscription_counts)
        .where(
            counts.product_id == bindparam("key_product"), counts.status == bindparam("key_status")
        )
        .values(subscription_count=counts.subscription_count - 1)
    )


@cache
def count_up(dialect: str) -> Any:
    return (
        insert_for_dialect(dialect, subscription_counts)
        .values(
            product_id=bindparam("key_product"),
            status=bindparam("key_status"),
            subscription_count=1,
        )
        .on_conflict_do_update(
            index_elements=["product_id", "status"],
            set_={"subscription_count": subscription_counts.c.subscription_count + 1},
        )
    )
