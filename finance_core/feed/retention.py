"""Event retention: settled webhook events past EVENT_RETENTION_DAYS go, a small batch at a time.

Only the statuses named here are deleted (processed, ignored, dismissed): failed events wait
for a replay or a dismissal, and a status this code does not know (a thin event's `pending`)
stays. Each batch is its own short transaction with a pause after it, so that ingest, which
shares the store's write lock on SQLite, waits milliseconds at most. The event behind "last
webhook" is never deleted, so the API's answers do not change; counts and the history live in
tables of their own.
"""

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, delete, func, select

from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.models import webhook_events
from finance_core.views.queries import LATEST_EVENT

PRUNED_STATUSES = ("processed", "ignored", "dismissed")
BATCH_SIZE = 500
PAUSE_S = 0.05

_events = webhook_events.c
# Settled events of one status first received before the cutoff, through the
# (status, first_received_at) index, never the latest delivery's event.
_PRUNABLE = select(_events.id).where(
    _events.status == bindparam("status"),
    _events.first_received_at < bindparam("cutoff", type_=_events.first_received_at.type),
    _events.id.not_in(LATEST_EVENT.with_only_columns(_events.id)),
)
_COUNT = select(func.count()).select_from(_PRUNABLE.subquery())


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one pass removed (or, on a dry run, would remove), per status."""

    cutoff: datetime
    removed: dict[str, int]
    dry_run: bool
    finished: bool  # False: stopped before the end (the listener is shutting down)

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def line(self) -> str:
        """The pass in words."""
        verb = "would remove" if self.dry_run else "removed"
        parts = ", ".join(f"{count:,} {status}" for status, count in self.removed.items())
        cutoff = self.cutoff.strftime("%Y-%m-%d %H:%M:%S UTC")
        stopped = "" if self.finished else " (stopped before the end)"
        return f"{verb} {parts} events first received before {cutoff}{stopped}"


def prune_events(
    *,
    engine: Engine,
    retention_days: int,
    now: datetime,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    pause_s: float = PAUSE_S,
    stop: threading.Event | None = None,
) -> PruneReport:
    """Delete the settled events first received more than `retention_days` before `now`."""
    if not 1 <= batch_size <= 10_000:
        raise ValueError("batch size must be between 1 and 10,000")
    cutoff = now - timedelta(days=retention_days)
    removed = dict.fromkeys(PRUNED_STATUSES, 0)
    if dry_run:
        with read_transaction(engine) as conn:
            for status in PRUNED_STATUSES:
                removed[status] = _count(conn, status, cutoff)
        return PruneReport(cutoff, removed, dry_run=True, finished=True)
    batch = delete(webhook_events).where(_events.id.in_(_PRUNABLE.limit(batch_size)))
    for status in PRUNED_STATUSES:
        while True:
            if stop is not None and stop.is_set():
                return PruneReport(cutoff, removed, dry_run=False, finished=False)
            with write_transaction(engine) as conn:
                deleted = conn.execute(batch, {"status": status, "cutoff": cutoff}).rowcount
            removed[status] += deleted
            if deleted < batch_size:
                break
            # Let ingest have the store between batches.
            if stop is not None:
                stop.wait(pause_s)
            else:
                time.sleep(pause_s)
    return PruneReport(cutoff, removed, dry_run=False, finished=True)


def _count(conn: Connection, status: str, cutoff: datetime) -> int:
    return int(conn.execute(_COUNT, {"status": status, "cutoff": cutoff}).scalar_one())
