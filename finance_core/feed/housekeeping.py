"""The listener's housekeeping job: prune old events about hourly, one listener at a time."""

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache

from sqlalchemy import Engine

from finance_core.feed.retention import prune_events
from finance_core.settings import Settings
from finance_core.store import leases

log = logging.getLogger(__name__)

LEASE = "housekeeping"
EVERY = timedelta(hours=1)
# Renewed by every run of the holder; a listener that dies leaves it to another two hours on.
LEASE_TTL = 2 * EVERY


@cache
def _holder() -> str:
    # One name for the process, so that the job restarted after an error keeps its lease.
    return leases.holder_name()


def housekeeping(
    *, engine: Engine, settings: Settings, stop: threading.Event, round_done: Callable[[], None]
) -> None:
    """Prune now and then every hour, while this process holds the housekeeping lease.

    `round_done` is called after each hourly turn, pruned or not (the listener's metrics).
    """
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            if leases.acquire(engine=engine, name=LEASE, holder=_holder(), ttl=LEASE_TTL, now=now):
                report = prune_events(
                    engine=engine, retention_days=settings.event_retention_days, now=now, stop=stop
                )
                if report.total:
                    log.info("housekeeping: %s", report.line())
            round_done()
            stop.wait(EVERY.total_seconds())
    finally:
        if stop.is_set():  # shutting down: another listener may take over at once
            leases.release(engine=engine, name=LEASE, holder=_holder())
