"""Sending an alert: every channel at once, each retried with backoff, every attempt kept.

Channels are sent to in parallel, so that one that hangs (each attempt is given up on after
`channels.ATTEMPT_TIMEOUT_S`) holds up neither the others nor the next evaluation, which runs
on the alert job's own thread. A channel that took the alert is never sent it again, also
when another process takes over an alert whose sender stopped half way.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import Engine

from finance_core.alerts import channels, store
from finance_core.backoff import Backoff
from finance_core.store.db import read_transaction

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
# Waits of up to 1, 2 and 4 seconds (jittered) between a channel's attempts.
BACKOFF = Backoff(first_delay=1.0, max_delay=8.0)


def deliver(
    *, engine: Engine, alert: store.AlertRecord, urls: list[str], stop: threading.Event
) -> str | None:
    """Send `alert` to each of `urls` not yet sent to; its final status (None: interrupted).

    Interrupted by `stop` (the listener is shutting down), the alert stays `sending`, and
    once its hold has passed another process (or this one, restarted) sends what is left.
    """
    with read_transaction(engine) as conn:
        done = store.sent_channels(conn=conn, alert_id=alert.id)
    pending = [(channel, url) for channel, url in enumerate(urls, 1) if channel not in done]
    sent = True
    if pending:
        with ThreadPoolExecutor(len(pending), thread_name_prefix=f"alert-{alert.id}") as pool:
            outcomes = list(
                pool.map(lambda item: _to_channel(engine, alert, *item, stop=stop), pending)
            )
        sent = all(outcomes)
    if not sent and stop.is_set():
        return None
    status = "sent" if sent else "failed"
    store.finish_alert(engine=engine, alert_id=alert.id, status=status)
    return status


def _to_channel(
    engine: Engine, alert: store.AlertRecord, channel: int, url: str, *, stop: threading.Event
) -> bool:
    """Up to MAX_ATTEMPTS attempts with backoff between them; whether the channel took it."""
    name = channels.describe(url)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        result = channels.send_once(url, title=alert.title, body=alert.body)
        store.record_attempt(
            engine=engine,
            alert_id=alert.id,
            channel=channel,
            channel_name=name,
            attempt=attempt,
            outcome=result.outcome,
            detail=result.detail,
            now=datetime.now(UTC),
        )
        if result.sent:
            return True
        log.warning(
            "alert %s to channel %s (%s), attempt %s of %s: %s",
            alert.id,
            channel,
            name,
            attempt,
            MAX_ATTEMPTS,
            result.outcome,
        )
        if attempt < MAX_ATTEMPTS and stop.wait(BACKOFF.delay(attempt, None)):
            return False
    return False
