"""Data access for the pages: one engine per process, short caches, one kind of failure.

Every function here calls a named query in finance_core; the pages never see SQL. Cached
results are keyed by the database URL, so two stores in one process (tests) never mix.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from dashboard.sync_job import SyncJob, SyncJobs
from finance_core import event_log, migrate, payments, queries, rejections, trends, users
from finance_core.db import make_engine, read_transaction
from finance_core.ingest import ReplayError, dismiss_event
from finance_core.replay import replay_events
from finance_core.settings import Settings, get_settings
from finance_core.stripe_api import make_client
from finance_core.sync import Progress, SyncError, SyncReport, SyncRun, latest_runs, run_sync

# Health moves by the minute; counts and plans change slowly and cost a little more.
HEALTH_TTL = timedelta(seconds=10)
SUMMARY_TTL = timedelta(seconds=30)
LOG_TTL = timedelta(seconds=15)

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailable(RuntimeError):
    """The database could not be reached or read; the message says so in words."""


def settings() -> Settings:
    """The process settings (a SettingsError names the variable at fault)."""
    return get_settings()


def now() -> datetime:
    return datetime.now(UTC)


def _unavailable(exc: Exception) -> StoreUnavailable:
    url = make_url(settings().database_url).render_as_string(hide_password=True)
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    return StoreUnavailable(f"The finance database at {url} cannot be read right now ({detail}).")


def _store_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a database failure into StoreUnavailable, which the pages show as a message."""

    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite file we cannot open
            raise _unavailable(exc) from exc

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


def csv_export(engine: Engine, filters: event_log.EventFilter) -> Callable[[], bytes]:
    """A deferred CSV download of the filtered log, built only when the button is pressed.

    Streamlit runs it on another thread, so it takes the engine rather than reaching for
    Streamlit's caches. Streamlit holds a download in memory whatever it is given (a file
    object of another kind than BytesIO it refuses), so the file is the bytes themselves.
    """
    return _joined(lambda: event_log.csv_pages(engine=engine, filters=filters))


def payments_csv_export(engine: Engine) -> Callable[[], bytes]:
    """A deferred CSV download of every failing invoice, as `csv_export` is for the log."""
    return _joined(lambda: payments.csv_pages(engine=engine))


def _joined(chunks: Callable[[], Iterator[str]]) -> Callable[[], bytes]:
    def build() -> bytes:
        return b"".join(chunk.encode() for chunk in chunks())

    return build


@st.cache_data(ttl=HEALTH_TTL, show_spinner=False)
def _failing_invoices(
    url: str, limit: int, after: payments.Cursor | None
) -> tuple[payments.FailingPage, list[payments.CurrencyTotal]]:
    with read_transaction(_engine_for(url)) as conn:
        page = payments.failing_invoice_page(conn=conn, limit=limit, after=after)
        return page, payments.failing_totals(conn=conn)


@_store_errors
def failing_invoices(
    limit: int, after: payments.Cursor | None
) -> tuple[payments.FailingPage, list[payments.CurrencyTotal]]:
    """One page of the failing invoices and the totals per currency, from one snapshot."""
    return _failing_invoices(settings().database_url, limit, after)


@st.cache_data(ttl=SUMMARY_TTL, show_spinner=False)
def _trends(
    url: str, statuses: tuple[str, ...], start: date, end: date
) -> tuple[list[trends.PlanSeries], list[trends.WeekFlow]]:
    with read_transaction(_engine_for(url)) as conn:
        per_day = trends.active_per_plan_per_day(
            conn=conn, active_statuses=statuses, start=start, end=end
        )
        # Whole weeks: from the Monday of the window's first day.
        monday = start - timedelta(days=start.weekday())
        return per_day, trends.new_and_canceled_per_week(conn=conn, start=monday, end=end)


@_store_errors
def subscription_trends(days: int) -> tuple[list[trends.PlanSeries], list[trends.WeekFlow]]:
    """Active subscriptions per plan per day over the last `days` UTC days, and weekly churn."""
    config = settings()
    start, end = trends.last_days(days=days, now=now())
    return _trends(config.database_url, tuple(config.active_subscription_statuses), start, end)


@st.cache_data(ttl=HEALTH_TTL, show_spinner=False)
def _sync_runs(url: str, limit: int) -> list[SyncRun]:
    with read_transaction(_engine_for(url)) as conn:
        return latest_runs(conn=conn, limit=limit)


@_store_errors
def sync_runs(limit: int = 10) -> list[SyncRun]:
    """The latest Stripe sync runs, from the CLI or the dashboard, newest first."""
    return _sync_runs(settings().database_url, limit)


def forget_cached_reads() -> None:
    """Drop cached answers after a write, so that the next run shows its effect."""
    # Every read: a replay or a sync can change subscriptions and plans as well as health.
    for cached in (
        _subscription_summary,
        _sync_status,
        _status_breakdown,
        _rejections,
        _failed_events,
        _events_per_hour,
        _event_types,
        _event_page,
        _sync_runs,
        _failing_invoices,
        _trends,
    ):
        cached.clear()


def stripe_configured() -> bool:
    """Whether STRIPE_API_KEY is set, which sync and re-fetching events need."""
    return settings().stripe_api_key is not None


@st.cache_resource(show_spinner=False)
def _sync_jobs(database_url: str) -> SyncJobs:
    return SyncJobs()


def running_sync() -> SyncJob | None:
    """The sync this dashboard process is running, if any."""
    return _sync_jobs(settings().database_url).running()


@_store_errors
def start_sync(by: str) -> SyncJob:
    """Start a sync from Stripe on its own thread, or return the one already running."""
    config = settings()
    client = make_client(config)  # SettingsError without a key
    store = engine()

    def work(progress: Progress) -> SyncReport:
        try:
            return run_sync(engine=store, client=client, triggered_by=by, progress=progress)
        except (SQLAlchemyError, OSError) as exc:  # a store outage stops a sync like Stripe's
            raise SyncError(str(_unavailable(exc))) from exc
        finally:
            forget_cached_reads()

    return _sync_jobs(config.database_url).start(work, triggered_by=by, now=now())


@_store_errors
def replay(event_id: str) -> tuple[bool, str]:
    """Reprocess a failed event as `python -m finance_core replay` does: whether it worked.

    From its kept payload, or re-fetched from Stripe when none is kept and a key is set.
    """
    client = make_client(settings()) if stripe_configured() else None
    try:
        [outcome] = replay_events(engine=engine(), event_ids=[event_id], now=now(), client=client)
    finally:
        forget_cached_reads()
    if not outcome.ok:
        return False, f"Could not replay {event_id}: {outcome.message}"
    return True, f"Replayed {event_id}: {outcome.message}."


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
