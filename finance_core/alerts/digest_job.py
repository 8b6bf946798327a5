"""The morning digest job: once a day at DIGEST_AT, claimed once across listeners, sent.

The `digest` row of `alert_rules` holds the local day (in DIGEST_AT's zone) of the last digest
sent. A worker that finds DIGEST_AT passed today and that row on another day moves the row to
today, in the transaction that keeps the digest as an alert (rule and kind `digest`): the one
that moves it sends it. So a digest goes out once a day however many listeners run, never again
after a restart, and one missed because no listener ran at DIGEST_AT goes out when one starts
later that same day (not on the next day: its own digest is due then).
"""

import logging
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from finance_core.access.audit import record_action
from finance_core.alerts import samples, sending, store
from finance_core.alerts.digest import DigestText, build_digest
from finance_core.alerts.job import CLAIM_HOLD
from finance_core.settings import Settings
from finance_core.store.db import is_unavailable, read_transaction, write_transaction

log = logging.getLogger(__name__)

FIGURES = "digest:"
KEEP_FIGURES = timedelta(days=3)


def due_day(*, at: time, zone: ZoneInfo, last_sent: str | None, now: datetime) -> date | None:
    """The local day whose digest is due at `now`, or None (not yet time, or already sent)."""
    local = now.astimezone(zone)
    if local.time().replace(tzinfo=None) < at or last_sent == local.date().isoformat():
        return None
    return local.date()


def _zone(settings: Settings) -> ZoneInfo:
    schedule = settings.digest_schedule()
    return schedule[1] if schedule else ZoneInfo("UTC")


def compose(*, engine: Engine, settings: Settings, now: datetime) -> tuple[date, DigestText]:
    """Today's digest (the local day in DIGEST_AT's zone, else UTC) as it would be sent now.

    The Alerts page and the job both build it here; "since yesterday" for failed payments
    compares with the figures kept by the last digest of the previous local day.
    """
    zone = _zone(settings)
    local_day = now.astimezone(zone).date()
    today_starts = datetime.combine(local_day, time(), zone).astimezone(UTC)
    yesterday_starts = datetime.combine(local_day - timedelta(days=1), time(), zone)
    with read_transaction(engine) as conn:
        yesterdays = samples.latest_figures(
            conn=conn, prefix=FIGURES, start=yesterday_starts.astimezone(UTC), end=today_starts
        )
        text = build_digest(
            conn=conn,
            settings=settings,
            now=now,
            local_day=local_day,
            yesterdays_figures=yesterdays,
        )
    return local_day, text


def claim_digest(*, engine: Engine, settings: Settings, now: datetime) -> store.AlertRecord | None:
    """Keep today's digest if it is due and no process has claimed it yet; None otherwise."""
    schedule = settings.digest_schedule()
    if schedule is None:
        return None
    at, zone = schedule
    with read_transaction(engine) as conn:
        last = store.rule_states(conn=conn).get(store.DIGEST_RULE)
    if due_day(at=at, zone=zone, last_sent=last.state if last else None, now=now) is None:
        return None
    day, text = compose(engine=engine, settings=settings, now=now)
    with write_transaction(engine) as conn:
        current = store.lock_rule(conn=conn, rule=store.DIGEST_RULE, now=now)
        if current.state == day.isoformat():
            return None  # another process sent it while this one was building it
        if not store.change_rule(
            conn=conn, rule=store.DIGEST_RULE, old=current.state, new=day.isoformat(), now=now
        ):
            return None
        alert = _keep(conn, settings, day, text, now, triggered_by=None)
    _keep_figures(engine, text, now)
    log.info("digest %s for %s kept", alert.id, day)
    return alert


def _keep(
    conn: Connection,
    settings: Settings,
    day: date,
    text: DigestText,
    now: datetime,
    *,
    triggered_by: str | None,
) -> store.AlertRecord:
    return store.add_alert(
        conn=conn,
        rule=store.DIGEST_RULE,
        kind="digest",
        state=day.isoformat(),
        title=text.title,
        body=text.body,
        now=now,
        hold=CLAIM_HOLD if settings.digest_channels() else None,
        triggered_by=triggered_by,
    )


def _keep_figures(engine: Engine, text: DigestText, now: datetime) -> None:
    samples.record_figures(
        engine=engine, figures=text.figures, now=now, prefix=FIGURES, keep=KEEP_FIGURES
    )


def run_digest(
    *, engine: Engine, settings: Settings, stop: threading.Event, round_done: Callable[[], None]
) -> None:
    """The background job: every ALERT_CHECK_SECONDS, send today's digest once it is due.

    `round_done` is called after each check that read the store (the listener's metrics).
    """
    if settings.digest_schedule() is None:
        log.info("DIGEST_AT is empty: no morning digest")
        return
    urls = settings.digest_channels()
    log.info("morning digest daily at %s, to %s channel(s)", settings.digest_at, len(urls))
    if not urls:
        log.info("DIGEST_URLS and ALERT_URLS are empty: digests are kept, not sent")
    while not stop.is_set():
        now = datetime.now(UTC)
        try:
            claimed = claim_digest(engine=engine, settings=settings, now=now)
            due = [] if claimed is None else [claimed]
            if urls:
                due += store.take_stalled(engine=engine, now=now, hold=CLAIM_HOLD, digests=True)
        except SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            log.warning("digest not checked: the database is unreachable or busy")
            due = []
        else:
            round_done()
        for alert in due:
            if urls:
                sending.deliver(engine=engine, alert=alert, urls=urls, stop=stop)
        stop.wait(settings.alert_check_seconds)


def send_digest_now(
    *, engine: Engine, settings: Settings, actor: str, now: datetime
) -> store.AlertRecord:
    """Send today's digest to every digest channel now (an admin's Send digest now).

    Kept like the daily one, with `actor` (who asked) and in the audit log; the daily digest
    is still sent at DIGEST_AT.
    """
    urls = settings.digest_channels()
    day, text = compose(engine=engine, settings=settings, now=now)
    with write_transaction(engine) as conn:
        alert = _keep(conn, settings, day, text, now, triggered_by=actor)
        record_action(
            conn,
            actor=actor,
            action="digest_sent",
            target=f"alert {alert.id}",
            detail=f"to {len(urls)} channel{'s' if len(urls) != 1 else ''}",
            now=now,
        )
    _keep_figures(engine, text, now)
    if urls:
        sending.deliver(engine=engine, alert=alert, urls=urls, stop=threading.Event())
    with read_transaction(engine) as conn:
        return store.get_alert(conn=conn, alert_id=alert.id)
