"""Data access for the pages: one engine per process, short caches, one kind of failure.

Every function here calls a named query in finance_core; the pages never see SQL. Cached
results are keyed by the database URL, so two stores in one process (tests) never mix.
"""

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import IO, Any, ParamSpec, TypeVar

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from finance_core import event_log, migrate, queries, rejections, users
from finance_core.db import make_engine, read_transaction
from finance_core.ingest import ReplayError, dismiss_event, replay_event
from finance_core.settings import Settings, get_settings

# Health moves by the minute; counts and plans change slowly and cost a little more.
HEALTH_TTL = timedelta(seconds=10)
SUMMARY_TTL = timedelta(seconds=30)
LOG_TTL = timedelta(seconds=15)
EXPORT_SPOOL_BYTES = 8 * 1024 * 1024

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailable(RuntimeError):
    """The database could not be reached or read; the message says so in words."""


def settings() -> Settings:
    """The process settings (a SettingsError names the variable at fault)."""
    return get_settings()


def now() -> datetime:
    return datetime.now(UTC)


def _store_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a database failure into StoreUnavailable, which the pages show as a message."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite file we cannot open
            url = make_url(settings().database_url).render_as_string(hide_password=True)
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            raise StoreUnavailable(
                f"The finance database at {url} cannot be read right now ({detail})."
            ) from exc

    wrapper.__doc__ = func.__doc__
    return wrapper


def _dispose(engine: Engine) -> None:
    engine.dispose()


@st.cache_resource(show_spinner=False, on_release=_dispose)
def _engine_for(database_url: str) -> Engine:
    engine = make_engine(database_url)
    migrate.upgrade(engine)  # idempotent; a fresh store gets its schema on first use
    return engine


@_store_errors
def engine() -> Engine:
    """The process's one engine, with the schema brought up to date on first use."""
    return _engine_for(settings().database_url)


@_store_errors
def credentials() -> dict[str, Any]:
    """The store's dashboard users, read on every run so role changes apply at once."""
    with read_transaction(engine()) as conn:
        return users.authenticator_credentials(conn=conn)


@st.cache_data(ttl=SUMMARY_TTL, show_spinner=False)
def _subscription_summary(url: str, statuses: tuple[str, ...]) -> queries.SubscriptionSummary:
    with read_transaction(_engine_for(url)) as conn:
        return queries.subscription_summary(conn=conn, active_statuses=statuses, now=now())


@_store_errors
def subscription_summary() -> queries.SubscriptionSummary:
    """The same summary as the Finance API's subscription-summary."""
    config = settings()
    return _subscription_summary(config.database_url, tuple(config.active_subscription_statuses))


@st.cache_data(ttl=HEALTH_TTL, show_spinner=False)
def _sync_status(url: str, delayed_after: int) -> queries.SyncStatus:
    with read_transaction(_engine_for(url)) as conn:
        return queries.stripe_sync_status(conn=conn, delayed_after=delayed_after, now=now())


@_store_errors
def sync_status() -> queries.SyncStatus:
    """The same status as the Finance API's stripe-sync-status."""
    config = settings()
    return _sync_status(config.database_url, config.webhook_delayed_after)


@st.cache_data(ttl=SUMMARY_TTL, show_spinner=False)
def _status_breakdown(url: str) -> dict[str, int]:
    with read_transaction(_engine_for(url)) as conn:
        return queries.status_breakdown(conn=conn)


@_store_errors
def status_breakdown() -> dict[str, int]:
    """All subscriptions by status."""
    return _status_breakdown(settings().database_url)


@st.cache_data(ttl=HEALTH_TTL, show_spinner=False)
def _rejections(url: str) -> list[rejections.ReasonCount]:
    with read_transaction(_engine_for(url)) as conn:
        return rejections.rejections_by_reason(conn=conn)


@_store_errors
def rejections_by_reason() -> list[rejections.ReasonCount]:
    """Rejected deliveries per reason, most frequent first."""
    return _rejections(settings().database_url)


@st.cache_data(ttl=HEALTH_TTL, show_spinner=False)
def _failed_events(url: str, limit: int) -> list[event_log.EventRow]:
    with read_transaction(_engine_for(url)) as conn:
        return event_log.failed_events(conn=conn, limit=limit)


@_store_errors
def failed_events(limit: int = 100) -> list[event_log.EventRow]:
    """The newest failed events with their errors."""
    return _failed_events(settings().database_url, limit)


@st.cache_data(ttl=LOG_TTL, show_spinner=False)
def _events_per_hour(url: str, hours: int, end: datetime) -> list[event_log.HourlyCount]:
    with read_transaction(_engine_for(url)) as conn:
        return event_log.events_per_hour(conn=conn, start=end - timedelta(hours=hours), end=end)


@_store_errors
def events_per_hour(hours: int) -> tuple[datetime, list[event_log.HourlyCount]]:
    """Events per hour by outcome over the last `hours` hours, ending with the current hour."""
    end = now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end, _events_per_hour(settings().database_url, hours, end)


@st.cache_data(ttl=LOG_TTL, show_spinner=False)
def _event_types(url: str) -> list[str]:
    with read_transaction(_engine_for(url)) as conn:
        return event_log.event_types(conn=conn)


@_store_errors
def event_types() -> list[str]:
    """Every event type seen so far."""
    return _event_types(settings().database_url)


@st.cache_data(ttl=LOG_TTL, show_spinner=False)
def _event_page(
    url: str, filters: event_log.EventFilter, limit: int, after: event_log.Cursor | None
) -> tuple[event_log.EventPage, int]:
    with read_transaction(_engine_for(url)) as conn:
        page = event_log.event_page(conn=conn, filters=filters, limit=limit, after=after)
        return page, event_log.count_events(conn=conn, filters=filters)


@_store_errors
def event_page(
    filters: event_log.EventFilter, limit: int, after: event_log.Cursor | None
) -> tuple[event_log.EventPage, int]:
    """One page of the event log and how many events match (capped)."""
    return _event_page(settings().database_url, filters, limit, after)


def csv_export(engine: Engine, filters: event_log.EventFilter) -> Callable[[], IO[bytes]]:
    """A deferred CSV download of the filtered log, spooled to disk past a few megabytes.

    Streamlit runs it on another thread when the button is pressed, so it takes the engine
    rather than reaching for Streamlit's caches.
    """

    def build() -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(max_size=EXPORT_SPOOL_BYTES)  # noqa: SIM115
        for chunk in event_log.csv_pages(engine=engine, filters=filters):
            spool.write(chunk.encode())
        spool.seek(0)
        return spool

    return build


def forget_cached_reads() -> None:
    """Drop cached answers after a write, so that the next run shows its effect."""
    for cached in (_sync_status, _failed_events, _events_per_hour, _event_page, _event_types):
        cached.clear()


@_store_errors
def replay(event_id: str) -> tuple[bool, str]:
    """Reprocess a failed event from its kept payload: whether it worked, in words."""
    try:
        result = replay_event(engine=engine(), event_id=event_id, now=now())
    except ReplayError as exc:
        return False, str(exc)
    finally:
        forget_cached_reads()
    if result.error:
        return False, f"Replay of {event_id} failed again: {result.error}"
    return True, f"Replayed {event_id}: {result.outcome.value}."


@_store_errors
def dismiss(event_id: str, by: str) -> tuple[bool, str]:
    """Mark a failed event as needing no more work: whether it worked, in words."""
    try:
        dismiss_event(engine=engine(), event_id=event_id, by=by)
    except ReplayError as exc:
        return False, str(exc)
    finally:
        forget_cached_reads()
    return True, f"Dismissed {event_id}; it no longer counts against webhook health."
