"""The webhook event log as the dashboard reads it: filtered, paginated and counted in SQL.

Every query is bounded by a LIMIT or by a half-open UTC range [start, end) on
`first_received_at`, and filters on one type or one status at most, so that the
(type, first_received_at) and (status, first_received_at) indexes serve it.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Select, func, select, tuple_

from finance_core.feed.stripe_shapes import timestamp
from finance_core.store.models import EVENT_STATUSES, event_api_versions, webhook_events
from finance_core.views.csv_export import csv_chunks, formula_safe, iso_time, keyset_rows
from finance_core.views.queries import stripe_dashboard_url

if TYPE_CHECKING:  # a type only: the sync module brings the Stripe client with it
    from finance_core.feed.sync import SyncRun

# Stripe's word that it failed to generate some events (and has since fixed it): those
# events never reach any endpoint, so only a sync can make up for them.
GENERATION_FAILURE_RESOLVED = "v2.core.health.event_generation_failure.resolved"
MAX_PAGE_SIZE = 500
MAX_EVENT_TYPES = 500
CSV_COLUMNS = (
    "id",
    "type",
    "status",
    "created",
    "first_received_at",
    "last_received_at",
    "attempts",
    "deliveries",
    "livemode",
    "error",
    "stripe_url",
)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list: one type and one status at most, received in [start, end)."""

    event_type: str | None = None
    status: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in EVENT_STATUSES:
            raise ValueError(f"unknown event status {self.status!r}")
        for bound in (self.start, self.end):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("naive datetime given; use an aware UTC datetime")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (first_received_at, id) of its last row."""

    received_at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class EventRow:
    id: str
    type: str
    status: str
    created: datetime | None
    first_received_at: datetime
    last_received_at: datetime
    attempts: int
    deliveries: int
    livemode: bool
    error: str | None

    @property
    def stripe_url(self) -> str:
        return stripe_event_url(self.id, livemode=self.livemode)


@dataclass(frozen=True, slots=True)
class EventPage:
    rows: list[EventRow]
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class HourlyCount:
    hour: datetime
    status: str
    count: int


def stripe_event_url(event_id: str, *, livemode: bool) -> str:
    """The event's page in the Stripe Dashboard (under /test for test-mode events)."""
    return stripe_dashboard_url(f"events/{quote(event_id, safe='')}", livemode=livemode)


_LOG_COLUMNS = (
    webhook_events.c.id,
    webhook_events.c.type,
    webhook_events.c.status,
    webhook_events.c.created,
    webhook_events.c.first_received_at,
    webhook_events.c.last_received_at,
    webhook_events.c.attempts,
    webhook_events.c.deliveries,
    webhook_events.c.livemode,
    webhook_events.c.error,
)


def _filtered(statement: Select[Any], filters: EventFilter) -> Select[Any]:
    if filters.event_type is not None:
        statement = statement.where(webhook_events.c.type == filters.event_type)
    if filters.status is not None:
        statement = statement.where(webhook_events.c.status == filters.status)
    if filters.start is not None:
        statement = statement.where(webhook_events.c.first_received_at >= filters.start)
    if filters.end is not None:
        statement = statement.where(webhook_events.c.first_received_at < filters.end)
    return statement


def _row(row: Any) -> EventRow:
    return EventRow(
        id=row.id,
        type=row.type,
        status=row.status,
        created=timestamp(row.created),
        first_received_at=row.first_received_at,
        last_received_at=row.last_received_at,
        attempts=int(row.attempts),
        deliveries=int(row.deliveries),
        livemode=bool(row.livemode),
        error=row.error,
    )


def event_page(
    *, conn: Connection, filters: EventFilter, limit: int = 50, after: Cursor | None = None
) -> EventPage:
    """One page of the log, newest first, continuing after `after` (keyset pagination)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    statement = _filtered(select(*_LOG_COLUMNS), filters)
    if after is not None:
        key = tuple_(webhook_events.c.first_received_at, webhook_events.c.id)
        statement = statement.where(key < tuple_(after.received_at, after.event_id))
    statement = statement.order_by(
        webhook_events.c.first_received_at.desc(), webhook_events.c.id.desc()
    ).limit(limit + 1)  # one more than asked tells whether another page follows
    rows = [_row(row) for row in conn.execute(statement)]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = Cursor(rows[-1].first_received_at, rows[-1].id) if more else None
    return EventPage(rows, next_cursor)


def count_events(*, conn: Connection, filters: EventFilter, cap: int = 10_000) -> int:
    """How many events match, counting at most `cap + 1` so a huge log stays cheap."""
    matching = _filtered(select(webhook_events.c.id), filters).limit(cap + 1)
    return int(conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one())


def failed_events(*, conn: Connection, limit: int = 100) -> list[EventRow]:
    """Events whose latest attempt failed and that nobody dismissed, newest first."""
    return event_page(conn=conn, filters=EventFilter(status="failed"), limit=limit).rows


def event_types(*, conn: Connection) -> list[str]:
    """The distinct event types in the log, alphabetically.

    A loose index scan (one index probe per type, via a recursive CTE) instead of a
    DISTINCT that would read the whole index of a large log.
    """
    column = webhook_events.c.type
    types = select(func.min(column).label("type")).cte("event_types", recursive=True)
    following = select(func.min(column)).where(column > types.c.type).scalar_subquery()
    types = types.union_all(select(following).where(types.c.type.is_not(None)))
    statement = select(types.c.type).where(types.c.type.is_not(None)).limit(MAX_EVENT_TYPES)
    return [row.type for row in conn.execute(statement)]


def events_per_hour(*, conn: Connection, start: datetime, end: datetime) -> list[HourlyCount]:
    """Events first received in [start, end), per UTC hour and current status.

    One GROUP BY per status, so that each reads only the (status, first_received_at)
    index over the range and never touches the table rows.
    """
    column = webhook_events.c.first_received_at
    if conn.dialect.name == "postgresql":
        hour = func.date_trunc("hour", column).label("hour")
    else:
        hour = func.strftime("%Y-%m-%d %H:00:00", column).label("hour")
    counts: list[HourlyCount] = []
    for status in EVENT_STATUSES:
        statement = (
            select(hour, func.count().label("events"))
            .where(webhook_events.c.status == status, column >= start, column < end)
            .group_by(hour)
        )
        counts.extend(
            HourlyCount(_as_utc_hour(row.hour), status, int(row.events))
            for row in conn.execute(statement)
        )
    counts.sort(key=lambda item: (item.hour, item.status))
    return counts


@dataclass(frozen=True, slots=True)
class VersionCount:
    """Deliveries of one kind (snapshot or thin) and API version ("" when none was given)."""

    kind: str
    api_version: str
    count: int


def api_versions(*, conn: Connection, start: date, end: date) -> list[VersionCount]:
    """Deliveries per kind and API version received on the UTC days [start, end), most first.

    From the daily counts kept as events arrive (a few rows a day), not from the event log.
    """
    total = func.sum(event_api_versions.c.event_count)
    statement = (
        select(event_api_versions.c.kind, event_api_versions.c.api_version, total)
        .where(
            event_api_versions.c.day >= start.isoformat(),
            event_api_versions.c.day < end.isoformat(),
        )
        .group_by(event_api_versions.c.kind, event_api_versions.c.api_version)
    )
    counts = [
        VersionCount(kind, version, int(count)) for kind, version, count in conn.execute(statement)
    ]
    counts.sort(key=lambda item: (-item.count, item.kind, item.api_version))
    return counts


def latest_generation_failure(*, conn: Connection) -> EventRow | None:
    """The latest event in which Stripe reported that it failed to generate events."""
    statement = (
        select(*_LOG_COLUMNS)
        .where(webhook_events.c.type == GENERATION_FAILURE_RESOLVED)
        .order_by(webhook_events.c.first_received_at.desc())
        .limit(1)
    )
    row = conn.execute(statement).first()
    return _row(row) if row is not None else None


def generation_failure_unsynced(*, failure: EventRow | None, last_sync: "SyncRun | None") -> bool:
    """Whether Stripe's latest failure to generate events still asks for a sync.

    The events Stripe failed to generate never arrive, and no redelivery brings them; a sync
    that succeeded after the notice arrived has read their effect from Stripe's API.
    """
    if failure is None:
        return False
    return not (
        last_sync is not None
        and last_sync.status == "succeeded"
        and last_sync.started_at > failure.first_received_at
    )


def _as_utc_hour(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite's strftime gives text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def csv_pages(
    *, engine: Engine, filters: EventFilter, page_size: int = MAX_PAGE_SIZE
) -> Iterator[str]:
    """The filtered log as CSV text, a header and then one chunk per page of rows.

    One read transaction for the whole export, so that it is one consistent snapshot.
    """

    def read_page(conn: Connection, after: Cursor | None) -> EventPage:
        return event_page(conn=conn, filters=filters, limit=page_size, after=after)

    rows = (_csv_values(row) for row in keyset_rows(engine=engine, read_page=read_page))
    return csv_chunks(CSV_COLUMNS, rows, rows_per_chunk=page_size)


def _csv_values(row: EventRow) -> list[object]:
    return [
        formula_safe(row.id),
        formula_safe(row.type),
        row.status,
        iso_time(row.created),
        iso_time(row.first_received_at),
        iso_time(row.last_received_at),
        row.attempts,
        row.deliveries,
        "true" if row.livemode else "false",
        formula_safe(row.error or ""),
        row.stripe_url,
    ]
