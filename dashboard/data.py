"""Data access for the pages: one engine per process, short caches, one kind of failure.

Every function here calls a named query in finance_core; the pages never see SQL. Cached
results are keyed by the database URL, so two stores in one process (tests) never mix.
"""

import functools
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import streamlit as st
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from streamlit.runtime.caching.cache_utils import CachedFunc

from dashboard.sync_job import SyncJob, SyncJobs
from finance_core import demo
from finance_core.access import audit, tokens, users
from finance_core.access.roles import describe_roles
from finance_core.access.sign_in import SignInResult, SignInThrottle, attempt_sign_in
from finance_core.alerts import channels, digest_job, job
from finance_core.alerts.store import AlertPage, AlertRecord, alert_page
from finance_core.feed import feed_check, rejections, resolver
from finance_core.feed.ingest import ReplayError, dismiss_event
from finance_core.feed.replay import replay_events
from finance_core.feed.stripe_api import make_client
from finance_core.feed.sync import Progress, SyncError, SyncReport, SyncRun, latest_runs, run_sync
from finance_core.settings import Settings, get_settings
from finance_core.store import migrate
from finance_core.store.db import make_engine, read_transaction
from finance_core.views import changes, event_log, payments, queries, recovery, trends

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


# --- cached reads: each is one `@cached_read(TTL)` function of a connection ------------------

# Every cache `cached_read` made, so that `forget_cached_reads` clears them all at once.
_CACHED_READS: list[CachedFunc] = []


def cached_read(
    ttl: timedelta,
) -> Callable[[Callable[Concatenate[Connection, P], R]], Callable[P, R]]:
    """Make `read(conn, *args)` a page's `read(*args)`: cached for `ttl`, failures in words.

    The cache is keyed by the database URL and the arguments, so two stores in one process
    (tests) never mix; the read runs in one read-only snapshot; a database failure becomes
    StoreUnavailable; and the cache is registered, so that a write clears it with every other.
    """

    def decorate(read: Callable[Concatenate[Connection, P], R]) -> Callable[P, R]:
        def from_store(url: str, *args: P.args, **kwargs: P.kwargs) -> R:
            with read_transaction(_engine_for(url)) as conn:
                return read(conn, *args, **kwargs)

        # Streamlit keys a cache by the function's module, qualified name and source: one
        # name per read, or every read made here would share one cache.
        from_store.__module__ = read.__module__
        from_store.__qualname__ = read.__qualname__
        cached = st.cache_data(ttl=ttl, show_spinner=False)(from_store)
        _CACHED_READS.append(cached)

        @_store_errors
        @functools.wraps(read)
        def page_read(*args: P.args, **kwargs: P.kwargs) -> R:
            return cached(settings().database_url, *args, **kwargs)

        return page_read

    return decorate


def forget_cached_reads() -> None:
    """Drop every cached answer after a write, so that the next run shows its effect."""
    # Every read: a replay or a sync can change subscriptions and plans as well as health.
    for cached in _CACHED_READS:
        cached.clear()


@cached_read(SUMMARY_TTL)
def _subscription_summary(
    conn: Connection, statuses: tuple[str, ...]
) -> queries.SubscriptionSummary:
    return queries.subscription_summary(conn=conn, active_statuses=statuses, now=now())


def subscription_summary() -> queries.SubscriptionSummary:
    """The same summary as the Finance API's subscription-summary."""
    return _subscription_summary(tuple(settings().active_subscription_statuses))


@cached_read(HEALTH_TTL)
def _sync_status(conn: Connection, delayed_after: int) -> queries.SyncStatus:
    return queries.stripe_sync_status(conn=conn, delayed_after=delayed_after, now=now())


def sync_status() -> queries.SyncStatus:
    """The same status as the Finance API's stripe-sync-status."""
    return _sync_status(settings().webhook_delayed_after)


@cached_read(SUMMARY_TTL)
def status_breakdown(conn: Connection) -> dict[str, int]:
    """All subscriptions by status."""
    return queries.status_breakdown(conn=conn)


@cached_read(SUMMARY_TTL)
def paused_by_reason(conn: Connection) -> dict[str, int]:
    """Paused subscriptions per reason Stripe gave."""
    return queries.paused_by_reason(conn=conn)


@cached_read(SUMMARY_TTL)
def _active_changes(conn: Connection, statuses: tuple[str, ...]) -> changes.Changes:
    return changes.active_subscription_changes(conn=conn, active_statuses=statuses, now=now())


def active_subscription_changes() -> changes.Changes:
    """Active subscriptions' change since yesterday and since 7 days ago (UTC days)."""
    return _active_changes(tuple(settings().active_subscription_statuses))


@cached_read(HEALTH_TTL)
def failed_payment_changes(conn: Connection, failed_now: int) -> changes.Changes:
    """Failed payments' change from `failed_now` since yesterday and since 7 days ago."""
    return changes.failed_payment_changes(conn=conn, failed_now=failed_now, now=now())


@cached_read(LOG_TTL)
def _api_versions(conn: Connection, start: date, end: date) -> list[event_log.VersionCount]:
    return event_log.api_versions(conn=conn, start=start, end=end)


def api_versions(days: int) -> list[event_log.VersionCount]:
    """Deliveries per kind and API version over the last `days` UTC days, today included."""
    today = now().date()
    return _api_versions(today - timedelta(days=days - 1), today + timedelta(days=1))


@cached_read(LOG_TTL)
def latest_generation_failure(conn: Connection) -> event_log.EventRow | None:
    """The latest time Stripe said it had failed to generate events."""
    return event_log.latest_generation_failure(conn=conn)


@_store_errors
def resolve_now(actor: str) -> int:
    """Have the listeners fetch every waiting thin event at once; how many."""
    try:
        return resolver.retry_pending_now(engine=engine(), actor=actor, now=now())
    finally:
        forget_cached_reads()


@cached_read(HEALTH_TTL)
def feed_check_state(conn: Connection) -> feed_check.FeedCheckState:
    """The latest feed check (SPEC 17): Stripe's own view of our endpoint, as stored."""
    return feed_check.latest_feed_check(conn=conn, now=now())


def feed_check_configured() -> bool:
    """Whether this dashboard can ask Stripe itself: STRIPE_ENDPOINT_URL and STRIPE_API_KEY set."""
    config = settings()
    return bool(config.stripe_endpoint_url) and config.stripe_api_key is not None


@_store_errors
def check_feed_now(actor: str) -> feed_check.FeedCheckReport | None:
    """Ask Stripe about the feed now (audited); None while a listener is checking already."""
    try:
        return feed_check.check_now(engine=engine(), settings=settings(), actor=actor, now=now())
    finally:
        forget_cached_reads()


@cached_read(HEALTH_TTL)
def rejections_by_reason(conn: Connection) -> list[rejections.ReasonCount]:
    """Rejected deliveries per reason, most frequent first."""
    return rejections.rejections_by_reason(conn=conn)


@cached_read(HEALTH_TTL)
def failed_events(conn: Connection, limit: int = 100) -> list[event_log.EventRow]:
    """The newest failed events with their errors."""
    return event_log.failed_events(conn=conn, limit=limit)


@cached_read(LOG_TTL)
def _events_per_hour(conn: Connection, hours: int, end: datetime) -> list[event_log.HourlyCount]:
    return event_log.events_per_hour(conn=conn, start=end - timedelta(hours=hours), end=end)


def events_per_hour(hours: int) -> tuple[datetime, list[event_log.HourlyCount]]:
    """Events per hour by outcome over the last `hours` hours, ending with the current hour."""
    end = now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end, _events_per_hour(hours, end)


@cached_read(LOG_TTL)
def event_types(conn: Connection) -> list[str]:
    """Every event type seen so far."""
    return event_log.event_types(conn=conn)


@cached_read(LOG_TTL)
def event_page(
    conn: Connection, filters: event_log.EventFilter, limit: int, after: event_log.Cursor | None
) -> tuple[event_log.EventPage, int]:
    """One page of the event log and how many events match (capped)."""
    page = event_log.event_page(conn=conn, filters=filters, limit=limit, after=after)
    return page, event_log.count_events(conn=conn, filters=filters)


def _deferred(chunks: Callable[[], Iterator[str]]) -> Callable[[], bytes]:
    """A CSV download built only when the button is pressed.

    Streamlit runs it on another thread then, so the chunks come from finance_core with the
    engine given, not from Streamlit's caches. Bytes, since that is what Streamlit keeps of
    any answer (it refuses a spooled temporary file, and would read a file whole anyway).
    """

    def build() -> bytes:
        return "".join(chunks()).encode()

    return build


def payments_csv_export(engine: Engine) -> Callable[[], bytes]:
    """Every failing invoice as a deferred CSV download, as `csv_export` is for the log."""
    return _deferred(lambda: payments.csv_pages(engine=engine))


def csv_export(engine: Engine, filters: event_log.EventFilter) -> Callable[[], bytes]:
    """The filtered event log as a deferred CSV download."""
    return _deferred(lambda: event_log.csv_pages(engine=engine, filters=filters))


@cached_read(HEALTH_TTL)
def failing_invoices(
    conn: Connection, limit: int, after: payments.Cursor | None
) -> tuple[payments.FailingPage, list[payments.CurrencyTotal]]:
    """One page of the failing invoices and the totals per currency, from one snapshot."""
    page = payments.failing_invoice_page(conn=conn, limit=limit, after=after)
    return page, payments.failing_totals(conn=conn)


@cached_read(SUMMARY_TTL)
def recovered(conn: Connection, days: int) -> recovery.Recovered:
    """Invoices that were failing and were paid in the last `days` days, and the rate."""
    return recovery.recovered(conn, days=days, now=now())


@cached_read(SUMMARY_TTL)
def _trends(
    conn: Connection, statuses: tuple[str, ...], days: int, as_of: datetime
) -> trends.SubscriptionTrends:
    return trends.subscription_trends(conn=conn, active_statuses=statuses, days=days, now=as_of)


def subscription_trends(days: int) -> trends.SubscriptionTrends:
    """Active subscriptions per plan per day over the last `days` UTC days, and weekly churn."""
    # Cached per minute: the answer's `as_of` is the minute it was read.
    as_of = now().replace(second=0, microsecond=0)
    return _trends(tuple(settings().active_subscription_statuses), days, as_of)


@cached_read(HEALTH_TTL)
def sync_runs(conn: Connection, limit: int = 10) -> list[SyncRun]:
    """The latest Stripe sync runs, from the CLI or the dashboard, newest first."""
    return latest_runs(conn=conn, limit=limit)


@cached_read(HEALTH_TTL)
def alerts(conn: Connection, limit: int, before: int | None) -> AlertPage:
    """A page of the alerts kept, newest first, with each channel's attempts."""
    return alert_page(conn=conn, limit=limit, before=before)


def alert_channels() -> list[str]:
    """The configured alert channels, named by scheme and host only (never their secrets)."""
    return [channels.describe(url) for url in settings().alert_channels()]


@_store_errors
def send_test_alert(actor: str) -> AlertRecord:
    """Send a test alert to every channel now; the alert kept, with each channel's result."""
    try:
        return job.send_test_alert(engine=engine(), settings=settings(), actor=actor, now=now())
    finally:
        forget_cached_reads()


@cached_read(timedelta(seconds=60))
def is_demo_store(conn: Connection) -> bool:
    """Whether the store is `make run`'s demo (demo events only), cached a minute."""
    return demo.is_demo_store(conn.engine)


@_store_errors
def send_broken_demo_event(actor: str) -> str:
    """Make the demo deliver a malformed event (demo stores only); its id. Audited."""
    try:
        return demo.send_broken_event(engine=engine(), actor=actor, now=now())
    finally:
        forget_cached_reads()


def digest_channels() -> list[str]:
    """The morning digest's channels (DIGEST_URLS, else ALERT_URLS), by scheme and host only."""
    return [channels.describe(url) for url in settings().digest_channels()]


def digest_schedule() -> str:
    """DIGEST_AT as configured (`08:00 Europe/Berlin`), or "" when the digest is off."""
    return settings().digest_at


@_store_errors
def send_digest_now(actor: str) -> AlertRecord:
    """Send today's digest to every digest channel now; the digest kept, with each result."""
    try:
        return digest_job.send_digest_now(
            engine=engine(), settings=settings(), actor=actor, now=now()
        )
    finally:
        forget_cached_reads()


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
def start_sync(actor: str) -> SyncJob:
    """Start a sync from Stripe on its own thread, or return the one already running."""
    config = settings()
    client = make_client(config)  # SettingsError without a key
    store = engine()

    def work(progress: Progress) -> SyncReport:
        try:
            return run_sync(engine=store, client=client, actor=actor, progress=progress)
        except (SQLAlchemyError, OSError) as exc:  # a store outage stops a sync like Stripe's
            raise SyncError(str(_unavailable(exc))) from exc
        finally:
            forget_cached_reads()

    return _sync_jobs(config.database_url).start(work, triggered_by=actor, now=now())


@_store_errors
def replay(event_id: str, actor: str) -> tuple[bool, str]:
    """Reprocess a failed event as `python -m finance_core replay` does: whether it worked.

    From its kept payload, or re-fetched from Stripe when none is kept and a key is set.
    """
    client = make_client(settings()) if stripe_configured() else None
    try:
        [outcome] = replay_events(
            engine=engine(), event_ids=[event_id], actor=actor, now=now(), client=client
        )
    finally:
        forget_cached_reads()
    if not outcome.ok:
        return False, f"Could not replay {event_id}: {outcome.message}"
    return True, f"Replayed {event_id}: {outcome.message}."


@_store_errors
def dismiss(event_id: str, actor: str) -> tuple[bool, str]:
    """Mark a failed event as needing no more work: whether it worked, in words."""
    try:
        dismiss_event(engine=engine(), event_id=event_id, actor=actor, now=now())
    except ReplayError as exc:
        return False, str(exc)
    finally:
        forget_cached_reads()
    return True, f"Dismissed {event_id}; it no longer counts against webhook health."


# --- signing in: the throttle and the sessions of finance_core.access.sign_in and .sessions


def _close_throttle(throttle: SignInThrottle) -> None:
    throttle.close()


@st.cache_resource(show_spinner=False, on_release=_close_throttle)
def _sign_in_throttle(storage_uri: str) -> SignInThrottle:
    return SignInThrottle(storage_uri)


@_store_errors
def sign_in(username: str, address: str | None, check_password: Callable[[], bool]) -> SignInResult:
    """One press of Login, throttled and audited; `check_password` runs unless locked."""
    return attempt_sign_in(
        throttle=_sign_in_throttle(settings().rate_limit_storage_uri),
        engine=engine(),
        username=username,
        address=address,
        check_password=check_password,
        now=now(),
    )


@_store_errors
def sign_out_everywhere(username: str) -> None:
    """End every session of this user: their login cookies stop working at once."""
    users.sign_out_everywhere(engine=engine(), username=username)


# --- administration: what the CLI's user and token commands do, the admin as the actor -------


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:].rstrip(".") + "."


def _refused_or(done: str, change: Callable[[], object]) -> tuple[bool, str]:
    """Run a change: (True, `done`), or (False, why it was refused) and nothing changed."""
    try:
        change()
    except (users.UserError, tokens.TokenError) as exc:
        return False, _sentence(str(exc))
    return True, done


@_store_errors
def dashboard_users() -> list[users.DashboardUser]:
    """Every dashboard user, read afresh: an admin expects their change to show at once."""
    with read_transaction(engine()) as conn:
        return users.list_users(conn=conn)


@_store_errors
def add_user(
    username: str, name: str, roles: list[str], password: str, actor: str
) -> tuple[bool, str]:
    """`python -m finance_core user add`."""
    return _refused_or(
        f"Added {username.strip().lower()} with the roles {describe_roles(roles)}.",
        lambda: users.add_user(
            engine=engine(),
            username=username,
            password=password,
            roles=roles,
            name=name.strip() or None,
            actor=actor,
            now=now(),
        ),
    )


@_store_errors
def set_roles(username: str, roles: list[str], actor: str) -> tuple[bool, str]:
    """`python -m finance_core user set-roles`: also ends the user's sessions."""
    return _refused_or(
        f"{username} now has the roles {describe_roles(roles)}; their sessions have ended.",
        lambda: users.set_roles(
            engine=engine(), username=username, roles=roles, actor=actor, now=now()
        ),
    )


@_store_errors
def set_password(username: str, password: str, actor: str) -> tuple[bool, str]:
    """`python -m finance_core user set-password`: also ends the user's sessions."""
    return _refused_or(
        f"Set a new password for {username}; their sessions have ended.",
        lambda: users.set_password(
            engine=engine(), username=username, password=password, actor=actor, now=now()
        ),
    )


@_store_errors
def remove_user(username: str, actor: str) -> tuple[bool, str]:
    """`python -m finance_core user remove`: their sessions end with them."""
    return _refused_or(
        f"Removed {username}; their sessions have ended.",
        lambda: users.remove_user(engine=engine(), username=username, actor=actor, now=now()),
    )


@_store_errors
def api_tokens() -> list[tokens.TokenInfo]:
    """Every Finance API token, revoked ones too, never a secret."""
    with read_transaction(engine()) as conn:
        return tokens.list_tokens(conn=conn)


@_store_errors
def create_token(name: str, roles: list[str], actor: str) -> tuple[str | None, str]:
    """`python -m finance_core token create`: the token, to show this once, or why not."""
    try:
        token = tokens.create_token(engine=engine(), name=name, roles=roles, actor=actor, now=now())
    except tokens.TokenError as exc:
        return None, _sentence(str(exc))
    return token, f"Created the token {name.strip()!r} with the roles {describe_roles(roles)}."


@_store_errors
def revoke_token(name: str, actor: str) -> tuple[bool, str]:
    """`python -m finance_core token revoke`: its next call to the Finance API gets 401."""
    return _refused_or(
        f"Revoked the token {name!r}; the Finance API refuses it from now on.",
        lambda: tokens.revoke_token(engine=engine(), name=name, actor=actor, now=now()),
    )


@_store_errors
def audit_page(
    filters: audit.AuditFilter, limit: int, after: audit.AuditCursor | None
) -> audit.AuditPage:
    """One page of the audit log, newest first, read afresh."""
    with read_transaction(engine()) as conn:
        return audit.audit_page(conn=conn, filters=filters, limit=limit, after=after)


def audit_csv_export(engine: Engine, filters: audit.AuditFilter) -> Callable[[], bytes]:
    """The filtered audit log as a deferred CSV download."""
    return _deferred(lambda: audit.csv_pages(engine=engine, filters=filters))
