"""Which pending thin events a resolver holds: reading what is due, claiming, settling, failing.

A claim is a lease in the event's row (`claimed_by`, `claimed_until`): `FOR UPDATE SKIP
LOCKED` on PostgreSQL, the write lock on SQLite, so that several listener processes never take
the same event, and a resolver that dies leaves its events to the next once the lease lapses.
Writes go in small chunks, so that SQLite's one write lock is held briefly.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, null, or_, select, update

from finance_core.feed.events import ThinEvent
from finance_core.feed.ingest import RESOURCE_PATHS, SETTLED_STATUSES
from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.models import invoices, prices, products, subscriptions, webhook_events

CLAIM_LEASE = timedelta(seconds=15)
MAX_ERROR_LENGTH = 500
TABLES = {
    "subscription": subscriptions,
    "invoice": invoices,
    "product": products,
    "price": prices,
    "plan": prices,  # legacy plans are prices under another name
}


@dataclass(frozen=True, slots=True)
class Pending:
    """A claimed thin event, as the resolver needs it."""

    id: str
    created: int
    livemode: bool
    attempts: int
    url: str  # of the related object, as the notification gives it (rebuilt when missing)
    thin: ThinEvent

    @property
    def key(self) -> tuple[str, str]:
        """The object it is about: (related type, id)."""
        assert self.thin.related_type is not None and self.thin.related_id is not None
        return self.thin.related_type, self.thin.related_id


class ThinClaims:
    """One resolver's reads and writes of pending thin events, as `holder`."""

    def __init__(self, engine: Engine, holder: str, batch_size: int) -> None:
        self.engine = engine
        self.holder = holder
        self.batch_size = batch_size

    def free(self, now: datetime) -> Any:
        """A pending event no live claim holds."""
        events = webhook_events.c
        return and_(
            events.status == "pending",
            or_(events.claimed_until.is_(None), events.claimed_until <= now),
        )

    def due(self, now: datetime) -> list[Pending]:
        """The oldest pending events that nobody holds and that are due, read without a lock."""
        events = webhook_events.c
        due = (
            select(events.id, events.created, events.livemode, events.attempts, events.payload)
            .where(
                self.free(now),
                or_(events.next_attempt_at.is_(None), events.next_attempt_at <= now),
            )
            .order_by(events.first_received_at, events.id)
            .limit(self.batch_size)
        )
        with read_transaction(self.engine) as conn:
            rows = conn.execute(due).all()
        found = []
        for row in rows:
            pending = pending_from_row(row, now)
            if pending is None:  # no payload to fetch from: keep it as failed rather than loop
                self.fail_free([row.id], "the pending thin event has no readable payload", now)
                continue
            found.append(pending)
        found.sort(key=lambda p: (p.created, p.id))
        return found

    def claim(self, events: Sequence[Pending], now: datetime) -> set[str]:
        """Take these events for fetching; the ids this resolver won (a lease in their rows).

        `FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite the write lock makes the update's
        condition the claim.
        """
        column = webhook_events.c
        won: set[str] = set()
        for chunk in chunks([p.id for p in events]):
            free = (
                select(column.id)
                .where(column.id.in_(chunk), self.free(now))
                .with_for_update(skip_locked=True)
            )
            claim = (
                update(webhook_events)
                .where(column.id.in_(free.scalar_subquery()))
                .values(claimed_by=self.holder, claimed_until=now + CLAIM_LEASE)
                .returning(column.id)
            )
            with write_transaction(self.engine) as conn:
                won.update(conn.execute(claim).scalars())
        return won

    def settle_free(self, event_ids: Sequence[str], now: datetime) -> None:
        """Settle events nobody holds (the store covers them: no fetch, no claim needed)."""
        for chunk in chunks(event_ids):
            with write_transaction(self.engine) as conn:
                conn.execute(
                    update(webhook_events)
                    .where(webhook_events.c.id.in_(chunk), self.free(now))
                    .values(**SETTLED, processed_at=now)
                )

    def wait_free(
        self,
        events: Sequence[Pending],
        now: datetime,
        *,
        next_attempt: datetime,
        reason: str | None = None,
    ) -> None:
        """Put events nobody holds off until `next_attempt`, saying why when there is a why."""
        values: dict[str, Any] = {"next_attempt_at": next_attempt}
        if reason is not None:
            values["error"] = reason
        for chunk in chunks([p.id for p in events]):
            with write_transaction(self.engine) as conn:
                conn.execute(
                    update(webhook_events)
                    .where(webhook_events.c.id.in_(chunk), self.free(now))
                    .values(**values)
                )

    def fail_free(self, event_ids: Sequence[str], reason: str, now: datetime) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id.in_(list(event_ids)), self.free(now))
                .values(**failed_values(reason))
            )

    def covered(self, by_object: dict[tuple[str, str], list[Pending]]) -> list[Pending]:
        """Events whose change the store holds already: by a snapshot twin, or a newer state."""
        twins = {p.thin.snapshot_event for ps in by_object.values() for p in ps} - {None}
        with read_transaction(self.engine) as conn:
            settled_twins = settled_events(conn, twins)
            stored = state_times(conn, by_object)
        return [
            p
            for key, events in by_object.items()
            for p in events
            if p.thin.snapshot_event in settled_twins or p.created < stored.get(key, -1)
        ]

    def release(
        self,
        events: Sequence[Pending],
        *,
        next_attempt: datetime,
        reason: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        with write_transaction(self.engine) as conn:
            self.release_in(
                conn, events, next_attempt=next_attempt, reason=reason, count_attempt=count_attempt
            )

    def release_in(
        self,
        conn: Connection,
        events: Sequence[Pending],
        *,
        next_attempt: datetime,
        reason: str | None = None,
        count_attempt: bool = False,
    ) -> None:
        """Give these events back, due at `next_attempt` (in the caller's transaction)."""
        values: dict[str, Any] = {
            "claimed_by": null(),
            "claimed_until": null(),
            "next_attempt_at": next_attempt,
        }
        if reason is not None:
            values["error"] = reason
        if count_attempt:
            values["attempts"] = webhook_events.c.attempts + 1
        conn.execute(
            update(webhook_events).where(*self.ours([p.id for p in events])).values(**values)
        )

    def fail(self, event_ids: Sequence[str], reason: str) -> None:
        """Keep as failed (health says error; an admin replays or dismisses it)."""
        with write_transaction(self.engine) as conn:
            self.fail_in(conn, event_ids, reason)

    def ours(self, event_ids: Iterable[str]) -> tuple[Any, ...]:
        events = webhook_events.c
        return (
            events.id.in_(list(event_ids)),
            events.status == "pending",
            events.claimed_by == self.holder,
        )

    def renew(self, events: Sequence[Pending], *, until: datetime) -> None:
        """Extend this resolver's lease on these events to `until`."""
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(*self.ours([p.id for p in events]))
                .values(claimed_until=until)
            )

    def release_all(self) -> None:
        """Give back every event this resolver holds, so another may take them at once."""
        events = webhook_events.c
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(events.status == "pending", events.claimed_by == self.holder)
                .values(claimed_by=null(), claimed_until=null())
            )

    def fail_in(self, conn: Connection, event_ids: Sequence[str], reason: str) -> None:
        conn.execute(
            update(webhook_events).where(*self.ours(event_ids)).values(**failed_values(reason))
        )


def make_all_due(conn: Connection) -> int:
    return int(
        conn.execute(
            update(webhook_events)
            .where(webhook_events.c.status == "pending")
            .values(next_attempt_at=null())
        ).rowcount
    )


def pending_from_row(row: Any, now: datetime) -> Pending | None:
    try:
        payload = json.loads(row.payload or "")
        thin = ThinEvent.from_payload(payload, received_at=now)
    except (ValueError, TypeError):
        return None
    if thin.related_type is None or thin.related_id is None:
        return None
    related = payload.get("related_object")
    url = related.get("url") if isinstance(related, dict) else None
    if not isinstance(url, str):
        # The fetch reads the URL the notification gives; rebuild it when it is missing.
        url = f"/v1/{RESOURCE_PATHS[thin.related_type]}/{thin.related_id}"
    return Pending(
        id=row.id,
        created=int(row.created),
        livemode=bool(row.livemode),
        attempts=int(row.attempts),
        url=url,
        thin=thin,
    )


def settled_events(conn: Connection, event_ids: set[str | None]) -> set[str]:
    ids = [event_id for event_id in event_ids if event_id is not None]
    if not ids:
        return set()
    rows = conn.execute(
        select(webhook_events.c.id).where(
            webhook_events.c.id.in_(ids), webhook_events.c.status.in_(sorted(SETTLED_STATUSES))
        )
    )
    return set(rows.scalars())


def state_times(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The `state_created` of each object the store holds, by (kind, id)."""
    wanted: dict[str, set[str]] = {}
    for kind, object_id in keys:
        wanted.setdefault(kind, set()).add(object_id)
    stored: dict[tuple[str, str], int] = {}
    for kind, ids in wanted.items():
        table = TABLES[kind]
        rows = conn.execute(
            select(table.c.id, table.c.state_created).where(table.c.id.in_(sorted(ids)))
        )
        for object_id, state_created in rows:
            stored[(kind, object_id)] = int(state_created)
    return stored


SETTLED = {
    "status": "processed",
    "error": null(),
    "payload": null(),
    "claimed_by": null(),
    "claimed_until": null(),
    "next_attempt_at": null(),
}
# Rows per write transaction: on SQLite a short hold of its one write lock keeps webhook
# answers fast (a 500-row update held it for 60 ms).
WRITE_CHUNK = 50


def failed_values(reason: str) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": reason[:MAX_ERROR_LENGTH],
        "processed_at": null(),
        "claimed_by": null(),
        "claimed_until": null(),
        "next_attempt_at": null(),
    }


def chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), WRITE_CHUNK):
        yield list(items[start : start + WRITE_CHUNK])


def mark_settled(conn: Connection, event_ids: Sequence[str], holder: str, now: datetime) -> None:
    """Settle events this resolver holds.

    One row a parameter set (executemany): one statement compiled once and cached, where an
    IN list of another length each time is compiled again (a third of a batch's CPU).
    """
    if not event_ids:
        return
    events = webhook_events.c
    conn.execute(
        update(webhook_events)
        .where(
            events.id == bindparam("event_id"),
            events.status == "pending",
            events.claimed_by == holder,
        )
        .values(**SETTLED, processed_at=now),
        [{"event_id": event_id} for event_id in event_ids],
    )
