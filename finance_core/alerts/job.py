"""The alert job: the rules evaluated every ALERT_CHECK_SECONDS, each change claimed once, sent.

However many listener processes share a store, each runs this job in its worker process
(`webhook_listener.background_process`), and each change of a rule is sent once: the process
that moves the rule's state row from its old state to the new one in the store, in the same
transaction that keeps the alert, is the one that sends it. The row is locked while the rule
is checked again, so that a process with an older view cannot undo a newer change.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from finance_core.access.audit import record_action
from finance_core.alerts import sending, store
from finance_core.alerts.rules import (
    RULES,
    ended_text,
    sample_failed_payments,
    started_text,
    text_of_test_alert,
)
from finance_core.settings import Settings
from finance_core.store.db import is_unavailable, read_transaction, write_transaction
from finance_core.store.models import ALERT_STATE_OK

log = logging.getLogger(__name__)

TEST_RULE = "test"
# How long a sender holds an alert: longer than its attempts and waits can last (about a
# minute); past it, another process sends what is left.
CLAIM_HOLD = timedelta(minutes=5)
SENDERS = 4


def evaluate(*, engine: Engine, settings: Settings, now: datetime) -> list[store.AlertRecord]:
    """Evaluate every rule at `now`; the alerts of the changes this process claimed.

    The usual evaluation, no change, only reads (and samples failed payments once a minute);
    a change is checked again under the rule's lock before it is claimed.
    """
    sample_failed_payments(engine=engine, settings=settings, now=now)
    with read_transaction(engine) as conn:
        stored = store.rule_states(conn=conn)
        changed = [
            name
            for name, rule in RULES.items()
            if rule(conn=conn, settings=settings, now=now).active
            != stored.get(name, store.NEVER_ALERTED).active
        ]
    claimed = [_claim(engine, settings, name, now) for name in changed]
    return [alert for alert in claimed if alert is not None]


def _claim(
    engine: Engine, settings: Settings, name: str, now: datetime
) -> store.AlertRecord | None:
    """Keep the rule's change and its alert, unless another process has done so first."""
    with write_transaction(engine) as conn:
        current = store.lock_rule(conn=conn, rule=name, now=now)
        finding = RULES[name](conn=conn, settings=settings, now=now)
        if finding.active == current.active:
            return None  # another process claimed it while this one was reading
        if finding.active:
            kind, new_state = "started", finding.state
            title, body = started_text(finding, dashboard_url=settings.dashboard_url)
        else:
            kind, new_state = "ended", ALERT_STATE_OK
            title, body = ended_text(
                finding,
                started_as=current.state,
                since=current.changed_at or now,
                now=now,
                dashboard_url=settings.dashboard_url,
            )
        if not store.change_rule(conn=conn, rule=name, old=current.state, new=new_state, now=now):
            return None
        alert = store.add_alert(
            conn=conn,
            rule=name,
            kind=kind,
            state=finding.state,
            title=title,
            body=body,
            now=now,
            hold=CLAIM_HOLD if settings.alert_urls else None,
        )
    log.info("alert %s (%s %s): %s", alert.id, name, kind, title)
    return alert


def run_alerts(
    *, engine: Engine, settings: Settings, stop: threading.Event, round_done: Callable[[], None]
) -> None:
    """The background job: evaluate every ALERT_CHECK_SECONDS and send, until `stop`.

    `round_done` is called after each evaluation that read the store (the listener's metrics).
    """
    urls = settings.alert_channels()
    if not urls:
        log.info("ALERT_URLS is empty: alerts are kept for the dashboard, not sent")
    with ThreadPoolExecutor(SENDERS, thread_name_prefix="alert-send") as senders:
        while not stop.is_set():
            now = datetime.now(UTC)
            try:
                due = evaluate(engine=engine, settings=settings, now=now)
                if urls:
                    due += store.take_stalled(engine=engine, now=now, hold=CLAIM_HOLD)
            except SQLAlchemyError as exc:
                if not is_unavailable(exc):
                    raise
                log.warning("alert rules not evaluated: the database is unreachable or busy")
                due = []
            else:
                round_done()
            for alert in due:
                if urls:
                    senders.submit(_send, engine, alert, urls, stop)
            stop.wait(settings.alert_check_seconds)


def _send(engine: Engine, alert: store.AlertRecord, urls: list[str], stop: threading.Event) -> None:
    try:
        sending.deliver(engine=engine, alert=alert, urls=urls, stop=stop)
    except Exception:  # a bug or an outage: logged; the alert stays `sending` for a retry
        log.exception("alert %s could not be sent", alert.id)


def send_test_alert(
    *, engine: Engine, settings: Settings, actor: str, now: datetime
) -> store.AlertRecord:
    """Send a test alert to every channel now, the way the rules' alerts go; kept as rule "test".

    `actor` says who asked (the admin's username, `cli:<user>`), kept with the alert and in
    the audit log.
    Returns the alert with each channel's attempts.
    """
    urls = settings.alert_channels()
    title, body = text_of_test_alert(dashboard_url=settings.dashboard_url, now=now)
    with write_transaction(engine) as conn:
        alert = store.add_alert(
            conn=conn,
            rule=TEST_RULE,
            kind="test",
            state="test",
            title=title,
            body=body,
            now=now,
            hold=CLAIM_HOLD if urls else None,
            triggered_by=actor,
        )
        record_action(
            conn,
            actor=actor,
            action="alert_test_sent",
            target=f"alert {alert.id}",
            detail=f"to {len(urls)} channel{'s' if len(urls) != 1 else ''}",
            now=now,
        )
    if urls:
        sending.deliver(engine=engine, alert=alert, urls=urls, stop=threading.Event())
    with read_transaction(engine) as conn:
        return store.get_alert(conn=conn, alert_id=alert.id)
