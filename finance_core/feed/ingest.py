"""Apply verified Stripe events to the store: idempotent, order-tolerant, atomic per event.

Webhooks come through `ingest_batch` (the writer process's group commit, one event at a time
when a batch fails), events that sync recovers through `recover_event`, replays through
`replay_event`, and the demo through `ingest_event`. An event's record and its effects commit
together; when applying fails the effects roll back and the
event is kept as `failed` with its error and payload, so that a redelivery or a replay can
finish the work. A thin event about an object we keep is stored as `pending`, with its
payload, for the resolver (`finance_core.feed.resolver`) to fetch the object and finish.
"""

import json
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from finance_core.access.audit import record_action
from finance_core.feed.events import (
    DeliveryResult,
    NotAStripeEvent,
    Outcome,
    StripeEvent,
    ThinEvent,
    parse_payload,
)
from finance_core.feed.handlers import (
    HANDLERS,
    TERMINAL_INVOICE_STATUSES,
    TERMINAL_SUBSCRIPTION_STATUSES,
)
from finance_core.log_text import loggable
from finance_core.store import statements
from finance_core.store.db import insert_for, is_unavailable, pipeline, write_transaction
from finance_core.store.models import webhook_events

__all__ = [
    "HANDLERS",
    "TERMINAL_INVOICE_STATUSES",
    "TERMINAL_SUBSCRIPTION_STATUSES",
    "Delivery",
    "DeliveryResult",
    "NotAStripeEvent",
    "Outcome",
    "ReplayError",
    "StripeEvent",
    "ThinEvent",
    "dismiss_event",
    "failed_event_ids",
    "ingest_batch",
    "ingest_event",
    "recover_event",
    "replay_event",
]

log = logging.getLogger(__name__)
MAX_ERROR_LENGTH = 2000
# PostgreSQL's deadlock_detected and serialization_failure: retrying alone will succeed.
RETRY_ALONE_SQLSTATES = frozenset({"40P01", "40001"})
# A snapshot event in one of these has been applied (or needs no work): its thin twin too.
SETTLED_STATUSES = frozenset({"processed", "ignored", "dismissed"})
# API paths of the objects a thin event may point at (when its payload must be rebuilt).
RESOURCE_PATHS = {
    "subscription": "subscriptions",
    "invoice": "invoices",
    "product": "products",
    "price": "prices",
    "plan": "plans",
}

AnyEvent = StripeEvent | ThinEvent


class _ApplyFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def ingest_event(
    *, engine: Engine, event: AnyEvent, received_at: datetime, raw_payload: str | None = None
) -> DeliveryResult:
    """Record one verified delivery and apply its event once, in one transaction."""
    return _process(engine, event, received_at, raw_payload, delivery=True)


def recover_event(
    *, engine: Engine, event: StripeEvent, now: datetime, raw_payload: str | None = None
) -> DeliveryResult:
    """Apply an event fetched from Stripe's API that the store lacks or failed to apply.

    Not a delivery: it is recorded with no deliveries, so "last webhook received" and webhook
    health still speak of webhooks only. A dismissed or already applied event is left alone.
    """
    return _process(engine, event, now, raw_payload, delivery=False, retry_dismissed=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One verified delivery waiting to be applied."""

    event: AnyEvent
    received_at: datetime
    raw_payload: str | None = None


def ingest_batch(*, engine: Engine, deliveries: Sequence[Delivery]) -> list[DeliveryResult]:
    """Apply several deliveries in one transaction (group commit), each exactly as alone.

    Every event's record commits together with its effects, as with `ingest_event`. The batch
    claims all its event ids in one statement, then applies the effects in order; on
    PostgreSQL these go out pipelined, a few round trips for the whole batch. When anything
    fails other than the database being unreachable (an event that cannot be applied, or
    PostgreSQL picking the batch as a deadlock victim), the batch rolls back and each delivery
    is applied on its own, so that only a failing event ends up `failed`.
    """
    try:
        with write_transaction(engine) as conn, pipeline(conn):
            return _ingest_all(conn, deliveries)
    except DBAPIError as exc:
        deadlock = getattr(exc.orig, "sqlstate", None) in RETRY_ALONE_SQLSTATES
        if is_unavailable(exc) and not deadlock:
            raise
        log.info("batch of %d deliveries hit %s; applying them one by one", len(deliveries), exc)
    except _ApplyFailed:
        pass
    return [_ingest_alone(engine, d) for d in deliveries]


def _ingest_alone(engine: Engine, delivery: Delivery) -> DeliveryResult:
    """One delivery of a batch that failed, applied on its own: whatever goes wrong with it,
    other than the database being unavailable, fails this delivery alone (500, kept for
    replay when the store can keep it), never the others of its batch."""
    event = delivery.event
    failure: Exception
    try:
        return ingest_event(
            engine=engine,
            event=event,
            received_at=delivery.received_at,
            raw_payload=delivery.raw_payload,
        )
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise
        failure = exc
    except Exception as exc:  # a bug met by this event alone: it fails, the batch goes on
        failure = exc
    message = _describe(failure)
    log.exception(
        "event %s (%s) could not be stored: %s",
        loggable(event.id),
        loggable(event.type),
        loggable(message),
    )
    try:
        payload = delivery.raw_payload or _event_json(event)
        with write_transaction(engine) as conn:
            _record_failure(conn, event, delivery.received_at, message, payload, delivery=True)
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise
        log.warning("event %s could not be kept as failed either: %s", loggable(event.id), exc)
    except Exception as exc:
        log.warning("event %s could not be kept as failed either: %s", loggable(event.id), exc)
    return DeliveryResult(Outcome.FAILED, event.id, message)


def replay_event(
    *, engine: Engine, event_id: str, now: datetime, payload: str | None = None
) -> DeliveryResult:
    """Reprocess a failed (or dismissed) event from its kept payload, or from `payload`.

    A replay is not a delivery: it leaves "last webhook received" alone.
    """
    with engine.connect() as conn:
        row = conn.execute(
            select(webhook_events.c.status, webhook_events.c.payload).where(
                webhook_events.c.id == event_id
            )
        ).first()
    if row is None:
        raise ReplayError(f"no event {event_id!r} in the store")
    if row.status not in ("failed", "dismissed"):
        raise ReplayError(f"event {event_id!r} is {row.status}, not failed: nothing to replay")
    text = payload if payload is not None else row.payload
    if not text:
        raise ReplayError(f"event {event_id!r} has no kept payload; re-fetch it from Stripe")
    try:
        event = parse_payload(json.loads(text), received_at=now)
    except (ValueError, NotAStripeEvent) as exc:
        raise ReplayError(f"event {event_id!r} has an unreadable payload: {exc}") from None
    if event.id != event_id:
        raise ReplayError(f"the payload given is event {event.id!r}, not {event_id!r}")
    return _process(engine, event, now, text, delivery=False, retry_dismissed=True)


def failed_event_ids(*, engine: Engine) -> list[str]:
    """Ids of the events that failed to apply and still wait, oldest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(webhook_events.c.id)
                .where(webhook_events.c.status == "failed")
                .order_by(webhook_events.c.first_received_at, webhook_events.c.id)
            ).scalars()
        )


def dismiss_event(*, engine: Engine, event_id: str, actor: str, now: datetime) -> None:
    """An admin's decision that a failed event needs no more work; health stops saying error."""
    with write_transaction(engine) as conn:
        dismissed = conn.execute(
            update(webhook_events)
            .where(webhook_events.c.id == event_id, webhook_events.c.status == "failed")
            .values(status="dismissed", dismissed_by=actor[:255])
        ).rowcount
        if dismissed:
            record_action(conn, actor=actor, action="event_dismissed", target=event_id, now=now)
    if not dismissed:
        raise ReplayError(f"no failed event {event_id!r} to dismiss")


class ReplayError(ValueError):
    """A replay or dismissal was refused; the message says why."""


def _process(
    engine: Engine,
    event: AnyEvent,
    now: datetime,
    raw_payload: str | None,
    *,
    delivery: bool,
    retry_dismissed: bool = False,
) -> DeliveryResult:
    try:
        with write_transaction(engine) as conn:
            return _ingest(
                conn, event, now, raw_payload, delivery=delivery, retry_dismissed=retry_dismissed
            )
    except _ApplyFailed as failure:
        log.warning(
            "event %s (%s) failed: %s",
            loggable(event.id),
            loggable(event.type),
            loggable(failure.message),
        )
        payload = raw_payload if raw_payload is not None else _event_json(event)
        with write_transaction(engine) as conn:
            _record_failure(conn, event, now, failure.message, payload, delivery=delivery)
        return DeliveryResult(Outcome.FAILED, event.id, failure.message)


def _ingest(
    conn: Connection,
    event: AnyEvent,
    received_at: datetime,
    raw_payload: str | None,
    *,
    delivery: bool,
    retry_dismissed: bool = False,
) -> DeliveryResult:
    # Claim the id first: on PostgreSQL a concurrent delivery of the same id waits here
    # until this transaction ends, then sees the committed row.
    (claimed,) = _claim(conn, [Delivery(event, received_at, raw_payload)], delivery=delivery)
    return _apply(
        conn,
        event,
        received_at,
        raw_payload,
        claimed=claimed,
        delivery=delivery,
        retry_dismissed=retry_dismissed,
    )


def _ingest_all(conn: Connection, deliveries: Sequence[Delivery]) -> list[DeliveryResult]:
    """Deliveries in one transaction: every id claimed in one statement, then each applied."""
    claims = _claim(conn, deliveries, delivery=True)
    return [
        _apply(conn, d.event, d.received_at, d.raw_payload, claimed=claimed, delivery=True)
        for d, claimed in zip(deliveries, claims, strict=True)
    ]


def _claim(conn: Connection, deliveries: Sequence[Delivery], *, delivery: bool) -> list[bool]:
    """Record each event unless its id is stored already; which ones were new.

    A snapshot event is recorded as processed (its effects follow in the same transaction),
    a thin event about an object we keep as pending with its payload, any other thin event
    as ignored. An id given twice is new the first time only. Deliveries (not events
    recovered by sync) are counted per day, kind and API version.
    """
    dialect = conn.dialect.name
    params: dict[str, Any] = {}
    record: dict[str, Any] = {}
    for n, (event, received_at, raw_payload) in enumerate(
        (d.event, d.received_at, d.raw_payload) for d in deliveries
    ):
        at = statements.db_time(dialect, received_at)
        status, payload = "processed", None
        if isinstance(event, ThinEvent):
            pending = event.about_kept_object
            status = "pending" if pending else "ignored"
            payload = (raw_payload or _event_json(event)) if pending else None
        record = {
            "id": event.id,
            "type": event.type,
            "created": event.created,
            "api_version": event.api_version,
            "livemode": event.livemode,
            "status": status,
            "attempts": 1,
            "deliveries": 1 if delivery else 0,
            "first_received_at": at,
            "last_received_at": at,
            "processed_at": None if status == "pending" else at,
            "payload": payload,
        }
        params.update({f"{column}_{n}": value for column, value in record.items()})
    # Every record has the same columns: the last one names them.
    claim = statements.claim(dialect, webhook_events, tuple(record), len(deliveries))
    new_ids = {row[0] for row in statements.run(conn, claim, params).fetchall()}
    claimed = []
    for d in deliveries:
        new = d.event.id in new_ids
        claimed.append(new)
        new_ids.discard(d.event.id)
    if delivery:
        _count_api_versions(conn, [d for d, new in zip(deliveries, claimed, strict=True) if new])
    return claimed


def _count_api_versions(conn: Connection, deliveries: Sequence[Delivery]) -> None:
    """Add new deliveries to the per-day counts of kinds and API versions, in one statement."""
    counts: Counter[tuple[str, str, str]] = Counter(
        (
            d.received_at.astimezone(UTC).date().isoformat(),
            "thin" if isinstance(d.event, ThinEvent) else "snapshot",
            d.event.api_version or "",
        )
        for d in deliveries
    )
    if not counts:
        return
    params: dict[str, Any] = {"writer": _writer_name()}
    for n, ((day, kind, version), count) in enumerate(sorted(counts.items())):
        params.update(
            {f"day_{n}": day, f"kind_{n}": kind, f"api_version_{n}": version, f"count_{n}": count}
        )
    statements.run(conn, statements.add_api_version_counts(conn.dialect.name, len(counts)), params)


def _apply(
    conn: Connection,
    event: AnyEvent,
    received_at: datetime,
    raw_payload: str | None,
    *,
    claimed: bool,
    delivery: bool,
    retry_dismissed: bool = False,
) -> DeliveryResult:
    """Apply a claimed event's effects; for an id stored before, decide from its status."""
    this = {"object_id": event.id, "at": statements.db_time(conn.dialect.name, received_at)}
    if not claimed:
        previous = statements.fetch_one(conn, statements.lock(webhook_events), this)["status"]
        if delivery:
            statements.run(conn, statements.event_update("delivered"), this)
        # A dismissed event is settled; only an explicit replay retries it. A pending one
        # is the resolver's already.
        if previous in ("processed", "ignored", "pending") or (
            previous == "dismissed" and not retry_dismissed
        ):
            return DeliveryResult(Outcome.DUPLICATE, event.id)

    if isinstance(event, ThinEvent):
        return _take_thin(conn, event, this, raw_payload, claimed=claimed)

    handler = HANDLERS.get(event.type)
    if handler is None:
        statements.run(conn, statements.event_update("ignored"), this)
        return DeliveryResult(Outcome.IGNORED, event.id)

    try:
        handler(conn, event, received_at)
    except (OperationalError, InterfaceError):
        raise  # the database is unreachable or busy: not the event's fault; Stripe retries
    except Exception as exc:  # any failure rolls the effects back; the event is kept as failed
        raise _ApplyFailed(_describe(exc)) from exc

    if not claimed:  # a failed event, now processed from this delivery's (or replay's) payload
        statements.run(conn, statements.event_update("processed"), this)
    return DeliveryResult(Outcome.PROCESSED, event.id)


def _writer_name() -> str:
    """This thread's own rows of the API-version counts (see models.event_api_versions)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{threading.get_ident()}"[:100]


def _take_thin(
    conn: Connection,
    event: ThinEvent,
    this: dict[str, Any],
    raw_payload: str | None,
    *,
    claimed: bool,
) -> DeliveryResult:
    """A thin event: ignored, a duplicate of its applied snapshot twin, or queued (pending)."""
    if not event.about_kept_object:
        if not claimed:
            statements.run(conn, statements.event_update("ignored"), this)
        return DeliveryResult(Outcome.IGNORED, event.id)
    if event.related_id is None:
        # Guessing which object changed would corrupt the numbers: kept as failed, like a
        # snapshot event whose object has no id.
        raise _ApplyFailed(f"{event.type} names no {event.related_type} id in related_object")
    if event.snapshot_event is not None:
        twin = statements.fetch_optional(
            conn, statements.event_status, {"object_id": event.snapshot_event}
        )
        if twin is not None and twin["status"] in SETTLED_STATUSES:
            statements.run(conn, statements.event_update("settled"), this)
            return DeliveryResult(Outcome.DUPLICATE, event.id)
    if not claimed:  # it failed before; queued at last from this delivery's payload
        payload = raw_payload or _event_json(event)
        statements.run(conn, statements.event_update("pending"), {**this, "payload": payload})
    return DeliveryResult(Outcome.QUEUED, event.id)


def _record_failure(
    conn: Connection,
    event: AnyEvent,
    received_at: datetime,
    error: str,
    payload: str,
    *,
    delivery: bool,
) -> None:
    statement = insert_for(conn, webhook_events).values(
        id=event.id,
        type=event.type,
        created=event.created,
        api_version=event.api_version,
        livemode=event.livemode,
        status="failed",
        error=error,
        attempts=1,
        deliveries=1 if delivery else 0,
        first_received_at=received_at,
        last_received_at=received_at,
        payload=payload,
    )
    changes: dict[str, Any] = {
        "status": "failed",
        "error": error,
        "payload": payload,
        "attempts": webhook_events.c.attempts + 1,
        "dismissed_by": None,
    }
    if delivery:
        changes["deliveries"] = webhook_events.c.deliveries + 1
        changes["last_received_at"] = received_at
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_=changes,
            # A concurrent delivery may have processed it meanwhile: never undo that.
            where=webhook_events.c.status.in_(("failed", "dismissed")),
        )
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


def _event_json(event: AnyEvent) -> str:
    """The event as Stripe would have delivered it, for a caller that did not keep the body."""
    if isinstance(event, ThinEvent):
        related = None
        if event.related_type is not None and event.related_id is not None:
            path = RESOURCE_PATHS.get(event.related_type, f"{event.related_type}s")
            related = {
                "id": event.related_id,
                "type": event.related_type,
                "url": f"/v1/{path}/{event.related_id}",
            }
        created = datetime.fromtimestamp(event.created, UTC)
        return json.dumps(
            {
                "id": event.id,
                "object": "v2.core.event",
                "type": event.type,
                "livemode": event.livemode,
                "created": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "context": event.context,
                "related_object": related,
                "snapshot_event": event.snapshot_event,
            }
        )
    return json.dumps(
        {
            "id": event.id,
            "object": "event",
            "type": event.type,
            "created": event.created,
            "livemode": event.livemode,
            "api_version": event.api_version,
            "data": {"object": event.object},
        }
    )
