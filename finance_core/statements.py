"""The ingest hot path's statements: built with SQLAlchemy, compiled once, run on the driver.

Running a compiled string with a parameter dict on the transaction's DBAPI connection skips
SQLAlchemy's per-execution machinery (execution context, parameter processing, result
objects), which cost about four times the database's own work per event. Values therefore go
in, and come out, as the driver stores them: UTC times through `db_time`, booleans as the
driver's. A driver error is raised as SQLAlchemy's `DBAPIError`, like any other query's.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Integer, Table, bindparam, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from finance_core.db import insert_for_dialect
from finance_core.models import subscription_counts, webhook_events

# Named parameters on both drivers, so that one parameter dict fits every statement.
_DIALECTS = {
    "sqlite": sqlite.dialect(paramstyle="named"),
    "postgresql": postgresql.psycopg.dialect(),
}
# A constant in the SQL text: a plain `+ 1` would become a parameter to supply.
_ONE = literal_column("1", Integer)


def db_time(dialect: str, moment: datetime | None) -> Any:
    """An aware datetime as the UTCDateTime column stores it on this dialect."""
    if moment is None:
        return None
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    # SQLAlchemy's storage format for DateTime on SQLite ("2026-11-24 22:43:44.000000").
    return naive.isoformat(" ", "microseconds") if dialect == "sqlite" else naive


def run(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run a hot-path statement in the connection's transaction; returns the DBAPI cursor."""
    sql = _compiled(conn.dialect.name, statement, None)
    return _execute(conn, sql, params)


def run_with(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Like `run`, for an INSERT or UPDATE whose columns are the keys of `params`."""
    keys = tuple(key for key in params if key != "object_id")
    return _execute(conn, _compiled(conn.dialect.name, statement, keys), params)


def fetch_one(conn: Connection, statement: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The one row a SELECT finds, as a dict of stored values."""
    cursor = run(conn, statement, params)
    names = [column[0] for column in cursor.description]
    row = cursor.fetchone()
    if row is None:
        raise LookupError(f"no row for {dict(params)!r}")
    return dict(zip(names, row, strict=True))


def _execute(conn: Connection, sql: str, params: Mapping[str, Any]) -> Any:
    dialect = conn.dialect
    try:
        return conn.connection.driver_connection.execute(sql, params)  # type: ignore[union-attr]
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            sql, params, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
        ) from exc


@cache
def _compiled(dialect: str, statement: Any, keys: Sequence[str] | None) -> str:
    column_keys = list(keys) if keys is not None else None
    return str(statement.compile(dialect=_DIALECTS[dialect], column_keys=column_keys))


# --- the statements -------------------------------------------------------------------


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
            deliveries=webhook_events.c.deliveries + _ONE, last_received_at=bindparam("at")
        )
    if change == "ignored":
        return statement.values(
            status=bindparam("ignored"),
            processed_at=bindparam("at"),
            error=bindparam("no_error"),
            payload=bindparam("no_payload"),
        )
    return statement.values(  # "processed": a failed event, finished at last
        status=bindparam("processed"),
        attempts=webhook_events.c.attempts + _ONE,
        processed_at=bindparam("at"),
        error=bindparam("no_error"),
        payload=bindparam("no_payload"),
        dismissed_by=bindparam("no_dismissal"),
    )


EVENT_UPDATE_CONSTANTS = {
    "ignored": "ignored",
    "processed": "processed",
    "no_error": None,
    "no_payload": None,
    "no_dismissal": None,
}


@cache
def count_down() -> Any:
    counts = subscription_counts.c
    return (
        update(subscription_counts)
        .where(
            counts.product_id == bindparam("key_product"), counts.status == bindparam("key_status")
        )
        .values(subscription_count=counts.subscription_count - _ONE)
    )


@cache
def count_up(dialect: str) -> Any:
    return (
        insert_for_dialect(dialect, subscription_counts)
        .values(
            product_id=bindparam("key_product"),
            status=bindparam("key_status"),
            subscription_count=_ONE,
        )
        .on_conflict_do_update(
            index_elements=["product_id", "status"],
            set_={"subscription_count": subscription_counts.c.subscription_count + _ONE},
        )
    )
