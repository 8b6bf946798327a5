"""The audit log: who changed users and tokens, replayed, dismissed, synced or failed to sign in."""

import getpass
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, select, tuple_

from finance_core.store.db import write_transaction
from finance_core.store.models import audit_log
from finance_core.views.csv_export import csv_chunks, formula_safe, iso_time, keyset_rows

ACTIONS = (
    "user_added",
    "user_removed",
    "user_password_set",
    "user_roles_set",
    "token_created",
    "token_revoked",
    "event_replayed",
    "event_dismissed",
    "sync_run",
    "feed_check_run",
    "thin_events_retried",
    "alert_test_sent",
    "digest_sent",
    "demo_broken_event_sent",
    "sign_in_failed",
    "sign_in_locked",
)
MAX_PAGE_SIZE = 500
CSV_COLUMNS = ("recorded_at", "actor", "action", "target", "detail")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    recorded_at: datetime
    actor: str
    action: str
    target: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list: one actor and one action at most, recorded in [start, end)."""

    actor: str | None = None
    action: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}; known: {', '.join(ACTIONS)}")
        for bound in (self.start, self.end):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("naive datetime given; use an aware UTC datetime")


@dataclass(frozen=True, slots=True)
class AuditCursor:
    """Where a page ended: the (recorded_at, id) of its last entry."""

    recorded_at: datetime
    entry_id: int


@dataclass(frozen=True, slots=True)
class AuditPage:
    rows: list[AuditEntry]
    next_cursor: AuditCursor | None


def cli_actor() -> str:
    """The actor of a command run from a shell: `cli:<operating-system user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"cli:{user}"


def record_action(
    conn: Connection, *, actor: str, action: str, target: str, detail: str = "", now: datetime
) -> None:
    """Add one entry, in the write transaction of the change it records.

    So that the change and its record commit or roll back together. Never a password or a
    token in any field: the target is a username, a token's name, an event id; the detail
    says what changed in words.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    conn.execute(
        audit_log.insert().values(
            recorded_at=now,
            actor=actor[:255],
            action=action,
            target=target[:255],
            detail=detail[:1000],
        )
    )


def record(
    *, engine: Engine, actor: str, action: str, target: str, detail: str = "", now: datetime
) -> None:
    """Add one entry in a transaction of its own, for an action with no other write."""
    with write_transaction(engine) as conn:
        record_action(conn, actor=actor, action=action, target=target, detail=detail, now=now)


def _filtered(statement: Select[Any], filters: AuditFilter) -> Select[Any]:
    if filters.actor is not None:
        statement = statement.where(audit_log.c.actor == filters.actor)
    if filters.action is not None:
        statement = statement.where(audit_log.c.action == filters.action)
    if filters.start is not None:
        statement = statement.where(audit_log.c.recorded_at >= filters.start)
    if filters.end is not None:
        statement = statement.where(audit_log.c.recorded_at < filters.end)
    return statement


def audit_page(
    *, conn: Connection, filters: AuditFilter, limit: int = 50, after: AuditCursor | None = None
) -> AuditPage:
    """One page of entries, newest first, continuing after `after` (keyset pagination)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    statement = _filtered(select(audit_log), filters)
    if after is not None:
        key = tuple_(audit_log.c.recorded_at, audit_log.c.id)
        statement = statement.where(key < tuple_(after.recorded_at, after.entry_id))
    statement = statement.order_by(audit_log.c.recorded_at.desc(), audit_log.c.id.desc()).limit(
        limit + 1  # one more than asked tells whether another page follows
    )
    rows = [AuditEntry(**row._mapping) for row in conn.execute(statement)]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = AuditCursor(rows[-1].recorded_at, rows[-1].id) if more else None
    return AuditPage(rows, next_cursor)


def entries(*, engine: Engine, filters: AuditFilter) -> Iterator[AuditEntry]:
    """Every matching entry, newest first, read a page at a time in one snapshot."""

    def read_page(conn: Connection, after: AuditCursor | None) -> AuditPage:
        return audit_page(conn=conn, filters=filters, limit=MAX_PAGE_SIZE, after=after)

    return keyset_rows(engine=engine, read_page=read_page)


def csv_pages(*, engine: Engine, filters: AuditFilter) -> Iterator[str]:
    """The matching entries as CSV text, newest first: a header, then chunks of rows."""
    rows = (
        [
            iso_time(entry.recorded_at),
            formula_safe(entry.actor),
            entry.action,
            formula_safe(entry.target),
            formula_safe(entry.detail),
        ]
        for entry in entries(engine=engine, filters=filters)
    )
    return csv_chunks(CSV_COLUMNS, rows)
