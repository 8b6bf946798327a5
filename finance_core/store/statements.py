"""Hot-path statements (ingest, API reads): built with SQLAlchemy, compiled once, run on the driver.

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

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from finance_core.store.db import execute_on_driver, insert_for_dialect
from finance_core.store.models import as_utc, event_api_versions, subscriptions, webhook_events

# Named parameters on both drivers, so that one parameter dict fits every statement.
_DIALECTS = {
    "sqlite": sqlite.dialect(paramstyle="named"),
    "postgresql": postgresql.psycopg.dialect(),
}


def db_time(dialect: str, moment: datetime | None) -> Any:
    """An aware datetime as the UTCDateTime column stores it on this dialect."""
    if moment is None:
        return None
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    # SQLAlchemy's storage format for DateTime on SQLite ("2026-11-24 22:43:44.000000").
    return naive.isoformat(" ", "microseconds") if dialect == "sqlite" else naive


def stored_time(value: Any) -> datetime | None:
    """A UTCDateTime column's value as the driver returns it, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's text storage
        value = datetime.fromisoformat(value)
    return as_utc(value)


def run(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run a hot-path statement in the connection's transaction; returns the DBAPI cursor."""
    return _execute(conn, _compiled(conn.dialect.name, statement, None), params)


def run_with(
    conn: Connection, statement: Any, params: Mapping[str, Any], columns: Sequence[str]
) -> Any:
    """Like `run`, for an INSERT whose VALUES are `columns` (taken from `params`)."""
    return _execute(conn, _compiled(conn.dialect.name, statement, tuple(columns)), params)


def fetch_one(conn: Connection, statement: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """The one row a SELECT finds, as a dict of stored values."""
    row = fetch_optional(conn, statement, params)
    if row is None:
        raise LookupError(f"no row for {dict(params)!r}")
    return row


def fetch_optional(
    conn: Connection, statement: Any, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The row a SELECT finds, if any, as a dict of stored values."""
    cursor = run(conn, statement, params)
    row = cursor.fetchone()  # first: in a pipeline the description comes with the rows
    if row is None:
        return None
    return dict(zip([column[0] for column in cursor.description], row, strict=True))


def _execute(
    conn: Connection, compiled: tuple[str, dict[str, Any] | None], params: Mapping[str, Any]
) -> Any:
    sql, constants = compiled
    if constants is None:  # its values are in its text
        if params:
            raise TypeError(f"this statement takes no parameters, not {sorted(params)}")
        return execute_on_driver(conn, sql)
    if constants:
        params = {**constants, **params}
    return execute_on_driver(conn, sql, params)


@cache
def _compiled(
    dialect: str, statement: Any, keys: Sequence[str] | None
) -> tuple[str, dict[str, Any] | None]:
    """The SQL text, and the values of the parameters the statement itself fixes (None: it
    takes no parameters)."""
    column_keys = list(keys) if keys is not None else None
    compiled = statement.compile(dialect=_DIALECTS[dialect], column_keys=column_keys)
    if not any(bind.required for bind in compiled.binds.values()):
        # Nothing left for the caller to give: the values go into the text. PostgreSQL then
        # plans the prepared statement once, instead of on every run as it does for a
        # statement with parameters whose generic plan it does not trust (the API's answers:
        # 150 us of their 450).
        literal = statement.compile(
            dialect=_DIALECTS[dialect],
            column_keys=column_keys,
            compile_kwargs={"literal_binds": True},
        )
        return str(literal), None
    constants = {
        compiled.bind_names[bind]: bind.value
        for bind in compiled.binds.values()
        if not bind.required and bind.value is not None
    }
    return str(compiled), constants


# --- the statements -------------------------------------------------------------------

# /healthz's round trip.
SELECT_ONE = select(literal(1))


@cache
def claim(dialect: str, table: Table, columns: tuple[str, ...], rows: int) -> Any:
    """Insert `rows` rows of `columns` (parameters `<column>_<n>`), skipping ids stored already.

    RETURNING gives the ids inserted (not rowcount: drivers disagree on it for ON CONFLICT DO
    NOTHING). An id given twice in one statement is inserted once.
    """
    values: list[dict[str, Any]] = [
        {column: bindparam(f"{column}_{n}") for column in columns} for n in range(rows)
    ]
    return (
        insert_for_dialect(dialect, table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )


@cache
def upsert_state(
    dialect: str,
    table: Table,
    columns: tuple[str, ...],
    keep_when_missing: tuple[str, ...],
    terminal_statuses: frozenset[str] | None,
    since_flag: tuple[str, str] | None = None,
    terminal_since: str | None = None,
) -> Any:
    """Insert an object's state, or update to it when it is newer than the stored one.

    The ordering rule of SPEC section 4, as the WHERE of the upsert: a later `created` wins; on
    an equal `created` the arrival wins unless it would replace a terminal state with a
    non-terminal one. `keep_when_missing` columns take `keep_<column>` and fall back to the
    stored value when it is NULL. `since_flag` (since column, boolean flag column): the since
    column keeps its stored time while the written flag stays true, takes the new one when the
    flag turns true, and is NULL while it is false. `terminal_since`: a column that says when
    the terminal status began; it keeps its stored time while the status stays the same,
    takes the new one when the status changes, and is NULL while the status is not terminal.
    RETURNING gives a row when the state was written.
    """
    statement = insert_for_dialect(dialect, table)
    stored, new = table.c, statement.excluded
    stored_terminal: ColumnElement[bool]
    new_terminal: ColumnElement[bool]
    if terminal_statuses is None:  # products and prices: deleted is the terminal state
        stored_terminal, new_terminal = stored.deleted, new.deleted
    else:  # constants as named parameters: an IN list would be expanded at execution
        statuses = [
            bindparam(f"terminal_{n}", value, type_=stored.status.type)
            for n, value in enumerate(sorted(terminal_statuses))
        ]
        stored_terminal = or_(*(stored.status == status for status in statuses))
        new_terminal = or_(*(new.status == status for status in statuses))
    newer = or_(
        new.state_created > stored.state_created,
        and_(
            new.state_created == stored.state_created,
            not_(and_(stored_terminal, not_(new_terminal))),
        ),
    )
    changes = {
        column: (
            func.coalesce(bindparam(f"keep_{column}", type_=stored[column].type), stored[column])
            if column in keep_when_missing
            else new[column]
        )
        for column in columns
        if column != "id"
    }
    if since_flag is not None:
        since, flag = since_flag
        changes[since] = case(
            (changes[flag], func.coalesce(stored[since], new[since])), else_=null()
        )
    if terminal_since is not None:
        changes[terminal_since] = case(
            (
                new_terminal,
                case(
                    (
                        stored.status == new.status,
                        func.coalesce(stored[terminal_since], new[terminal_since]),
                    ),
                    else_=new[terminal_since],
                ),
            ),
            else_=null(),
        )
    return statement.on_conflict_do_update(
        index_elements=["id"], set_=changes, where=newer
    ).returning(stored.id)


@cache
def record_failure(table: Table) -> Any:
    """A payment failure at `since`: the start of the current run of failures of a failing
    invoice, and its first failure ever (kept after it closes), move back to `since` when
    that is earlier. An older failure arriving after the invoice closed still marks it as
    one that was failing."""
    failing_later = and_(
        table.c.payment_failing,
        or_(table.c.failing_since.is_(None), table.c.failing_since > bindparam("since")),
    )
    first_later = or_(
        table.c.first_failed_at.is_(None), table.c.first_failed_at > bindparam("since")
    )
    return (
        update(table)
        .where(table.c.id == bindparam("object_id"), or_(failing_later, first_later))
        .values(
            failing_since=case((failing_later, bindparam("since")), else_=table.c.failing_since),
            first_failed_at=case((first_later, bindparam("since")), else_=table.c.first_failed_at),
        )
    )


@cache
def earliest_cancel_dates() -> Any:
    """Date a canceled subscription by `at` when it has no cancel dates yet or later ones, or
    by its start when `at` is earlier (an event dated before the subscription began cannot end
    it). Canceled is final in Stripe, so every event that says so belongs to one cancellation:
    the earliest dates it, whatever order they arrive in."""
    started = subscriptions.c.started_at
    at = case((started > bindparam("at"), started), else_=bindparam("at"))
    canceled, ended = subscriptions.c.canceled_at, subscriptions.c.ended_at
    return (
        update(subscriptions)
        .where(
            subscriptions.c.id == bindparam("object_id"),
            subscriptions.c.status == literal_column("'canceled'"),
            or_(canceled.is_(None), canceled > at),
        )
        .values(
            canceled_at=at,
            ended_at=case((or_(ended.is_(None), ended > at), at), else_=ended),
        )
    )


@cache
def earlier_closing(table: Table) -> Any:
    """Move when a closed invoice reached its status back to `at`, if it is that status and
    `at` is earlier (an older event of the same closing, arriving late)."""
    return (
        update(table)
        .where(
            table.c.id == bindparam("object_id"),
            table.c.status == bindparam("status"),
            table.c.closed_at > bindparam("at"),
        )
        .values(closed_at=bindparam("at"))
    )


@cache
def add_api_version_counts(dialect: str, rows: int) -> Any:
    """Add `count_<n>` events of (`day_<n>`, `kind_<n>`, `api_version_<n>`) to `writer`'s counts."""
    table = event_api_versions
    statement = insert_for_dialect(dialect, table).values(
        [
            {
                "day": bindparam(f"day_{n}"),
                "kind": bindparam(f"kind_{n}"),
                "api_version": bindparam(f"api_version_{n}"),
                "writer": bindparam("writer"),
                "event_count": bindparam(f"count_{n}"),
            }
            for n in range(rows)
        ]
    )
    return statement.on_conflict_do_update(
        index_elements=["day", "kind", "api_version", "writer"],
        set_={"event_count": table.c.event_count + statement.excluded.event_count},
    )


# Whether an event is stored, and how it stands (a thin event's snapshot twin).
event_status = select(webhook_events.c.status).where(webhook_events.c.id == bindparam("object_id"))


@cache
def lock(table: Table) -> Any:
    return select(table).where(table.c.id == bindparam("object_id")).with_for_update()


@cache
def event_update(change: str) -> Any:
    statement = update(webhook_events).where(webhook_events.c.id == bindparam("object_id"))
    if change == "delivered":
        return statement.values(
            deliveries=webhook_events.c.deliveries + 1, last_received_at=bindparam("at")
        )
    if change == "ignored":
        return statement.values(
            status="ignored", processed_at=bindparam("at"), error=null(), payload=null()
        )
    if change == "pending":  # a thin event queued for the resolver, with its payload
        return statement.values(
            status="pending",
            payload=bindparam("payload"),
            error=null(),
            dismissed_by=null(),
            claimed_by=null(),
            claimed_until=null(),
            next_attempt_at=null(),
        )
    if change == "settled":  # a thin event whose object's state is in the store
        return statement.values(
            status="processed",
            processed_at=bindparam("at"),
            error=null(),
            payload=null(),
            claimed_by=null(),
            claimed_until=null(),
            next_attempt_at=null(),
        )
    return statement.values(  # "processed": a failed event, finished at last
        status="processed",
        attempts=webhook_events.c.attempts + 1,
        processed_at=bindparam("at"),
        error=null(),
        payload=null(),
        dismissed_by=null(),
    )
