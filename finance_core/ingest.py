"""Apply verified Stripe events to the store: idempotent, order-tolerant, one transaction each.

`ingest_event` is the one entry point for webhooks, replays, sync and the demo. The event
record and its effects commit together; when applying fails the effects roll back and the
event is kept as `failed` with its error and payload, so that a redelivery or a replay can
finish the work.
"""

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, select, update

from finance_core.db import insert_for, insert_for_dialect, write_transaction
from finance_core.models import (
    invoices,
    prices,
    products,
    subscription_counts,
    subscriptions,
    webhook_events,
)
from finance_core.stripe_shapes import (
    MalformedObject,
    invoice_subscription,
    item_product_and_price,
    object_id,
    optional_bool,
    optional_int,
    optional_str,
    price_fields,
    required_str,
    subscription_items,
    subscription_period,
)

log = logging.getLogger(__name__)

TERMINAL_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
TERMINAL_INVOICE_STATUSES = frozenset({"paid", "void", "uncollectible", "deleted"})
MAX_ERROR_LENGTH = 2000


class NotAStripeEvent(ValueError):
    """Verified JSON that is not shaped like a Stripe event."""


class Outcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StripeEvent:
    """The envelope fields we rely on, plus the event's object as a plain dict."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    object: dict[str, Any]

    @classmethod
    def from_payload(cls, payload: Any) -> "StripeEvent":
        """Check the envelope of a parsed webhook body; raise NotAStripeEvent if it is not one."""
        if not isinstance(payload, dict):
            raise NotAStripeEvent("body is not a JSON object")
        if payload.get("object", "event") != "event":
            raise NotAStripeEvent("object is not 'event'")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
            raise NotAStripeEvent("event has no valid 'id'")
        if not isinstance(event_type, str) or not event_type or len(event_type) > 255:
            raise NotAStripeEvent("event has no valid 'type'")
        created = payload.get("created")
        if isinstance(created, bool) or not isinstance(created, int) or not 0 <= created < 2**62:
            raise NotAStripeEvent("event has no valid 'created' timestamp")
        data = payload.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise NotAStripeEvent("event has no 'data.object'")
        api_version = payload.get("api_version")
        if not isinstance(api_version, str) or len(api_version) > 64:
            api_version = None
        livemode = payload.get("livemode")
        if not isinstance(livemode, bool):
            livemode = data["object"].get("livemode") is True
        return cls(event_id, event_type, created, livemode, api_version, data["object"])


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    event_id: str
    error: str | None = None


class _ApplyFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def ingest_event(
    *, engine: Engine, event: StripeEvent, received_at: datetime, raw_payload: str | None = None
) -> DeliveryResult:
    """Record one verified delivery and apply its event once, in one transaction."""
    return _process(engine, event, received_at, raw_payload, delivery=True)


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
        event = StripeEvent.from_payload(json.loads(text))
    except (ValueError, NotAStripeEvent) as exc:
        raise ReplayError(f"event {event_id!r} has an unreadable payload: {exc}") from None
    if event.id != event_id:
        raise ReplayError(f"the payload given is event {event.id!r}, not {event_id!r}")
    return _process(engine, event, now, text, delivery=False)


def dismiss_event(*, engine: Engine, event_id: str, by: str) -> None:
    """An admin's decision that a failed event needs no more work; health stops saying error."""
    with write_transaction(engine) as conn:
        dismissed = conn.execute(
            update(webhook_events)
            .where(webhook_events.c.id == event_id, webhook_events.c.status == "failed")
            .values(status="dismissed", dismissed_by=by[:255])
        ).rowcount
    if not dismissed:
        raise ReplayError(f"no failed event {event_id!r} to dismiss")


class ReplayError(ValueError):
    """A replay or dismissal was refused; the message says why."""


def _process(
    engine: Engine, event: StripeEvent, now: datetime, raw_payload: str | None, *, delivery: bool
) -> DeliveryResult:
    try:
        with write_transaction(engine) as conn:
            return _ingest(conn, event, now, delivery=delivery)
    except _ApplyFailed as failure:
        log.warning("event %s (%s) failed: %s", event.id, event.type, failure.message)
        payload = raw_payload if raw_payload is not None else _event_json(event)
        with write_transaction(engine) as conn:
            _record_failure(conn, event, now, failure.message, payload, delivery=delivery)
        return DeliveryResult(Outcome.FAILED, event.id, failure.message)


# --- statements of the hot path, built once per dialect ----------------------------------
# Building a Core statement (coercing values, computing its cache key) costs more than running
# it on SQLite; these are built once and executed with plain parameter dicts.


@cache
def _claim(dialect: str, table: Table) -> Any:
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return (
        insert_for_dialect(dialect, table)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )


@cache
def _lock(table: Table) -> Any:
    return select(table).where(table.c.id == bindparam("object_id")).with_for_update()


@cache
def _overwrite(table: Table) -> Any:
    return update(table).where(table.c.id == bindparam("object_id"))


@cache
def _event_update(change: str) -> Any:
    statement = update(webhook_events).where(webhook_events.c.id == bindparam("object_id"))
    if change == "delivered":
        return statement.values(
            deliveries=webhook_events.c.deliveries + 1, last_received_at=bindparam("at")
        )
    if change == "ignored":
        return statement.values(
            status="ignored", processed_at=bindparam("at"), error=None, payload=None
        )
    return statement.values(  # "processed": a failed event, finished at last
        status="processed",
        attempts=webhook_events.c.attempts + 1,
        processed_at=bindparam("at"),
        error=None,
        payload=None,
        dismissed_by=None,
    )


@cache
def _count_down() -> Any:
    counts = subscription_counts.c
    return (
        update(subscription_counts)
        .where(
            counts.product_id == bindparam("key_product"), counts.status == bindparam("key_status")
        )
        .values(subscription_count=counts.subscription_count - 1)
    )


@cache
def _count_up(dialect: str) -> Any:
    return (
        insert_for_dialect(dialect, subscription_counts)
        .values(
            product_id=bindparam("key_product"),
            status=bindparam("key_status"),
            subscription_count=1,
        )
        .on_conflict_do_update(
            index_elements=["product_id", "status"],
            set_={"subscription_count": subscription_counts.c.subscription_count + 1},
        )
    )


def _ingest(
    conn: Connection, event: StripeEvent, received_at: datetime, *, delivery: bool
) -> DeliveryResult:
    # Claim the id first: on PostgreSQL a concurrent delivery of the same id waits here
    # until this transaction ends, then sees the committed row.
    dialect = conn.dialect.name
    claimed = (
        conn.execute(
            _claim(dialect, webhook_events),
            {
                "id": event.id,
                "type": event.type,
                "created": event.created,
                "api_version": event.api_version,
                "livemode": event.livemode,
                "status": "processed",
                "attempts": 1,
                "deliveries": 1,
                "first_received_at": received_at,
                "last_received_at": received_at,
                "processed_at": received_at,
            },
        ).first()
        is not None
    )
    if not claimed:
        previous = conn.execute(_lock(webhook_events), {"object_id": event.id}).one().status
        if delivery:
            conn.execute(_event_update("delivered"), {"object_id": event.id, "at": received_at})
        # A dismissed event is settled for deliveries; only an explicit replay retries it.
        if previous in ("processed", "ignored") or (delivery and previous == "dismissed"):
            return DeliveryResult(Outcome.DUPLICATE, event.id)

    handler = HANDLERS.get(event.type)
    if handler is None:
        conn.execute(_event_update("ignored"), {"object_id": event.id, "at": received_at})
        return DeliveryResult(Outcome.IGNORED, event.id)

    try:
        handler(conn, event, received_at)
    except Exception as exc:  # any failure rolls the effects back; the event is kept as failed
        raise _ApplyFailed(_describe(exc)) from exc

    if not claimed:  # a failed event, now processed from this delivery's (or replay's) payload
        conn.execute(_event_update("processed"), {"object_id": event.id, "at": received_at})
    return DeliveryResult(Outcome.PROCESSED, event.id)


def _record_failure(
    conn: Connection,
    event: StripeEvent,
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
        deliveries=1,
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


def _event_json(event: StripeEvent) -> str:
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


# --- per-object state with the ordering rule ------------------------------------------


def _newer(new_created: int, new_terminal: bool, old_created: int, old_terminal: bool) -> bool:
    """Whether an event's state replaces the stored one (SPEC 4, ordering)."""
    if new_created != old_created:
        return new_created > old_created
    return not (old_terminal and not new_terminal)


def _apply_state(
    conn: Connection,
    table: Table,
    row: dict[str, Any],
    *,
    is_terminal: Callable[[Mapping[str, Any]], bool],
    keep_when_missing: Iterable[str] = (),
    default_when_new: Mapping[str, Any] | None = None,
) -> tuple[bool, Any]:
    """Write an object's new state unless the stored one is newer.

    Returns (applied, previous row or None). Columns in `keep_when_missing` whose new value is
    None keep their stored value; a new row takes them from `default_when_new`.
    """
    keep = tuple(keep_when_missing)
    first = {**row, **{k: v for k, v in (default_when_new or {}).items() if row.get(k) is None}}
    inserted = conn.execute(_claim(conn.dialect.name, table), first).first()
    if inserted is not None:
        return True, None
    previous = conn.execute(_lock(table), {"object_id": row["id"]}).one()
    old = previous._mapping
    if not _newer(row["state_created"], is_terminal(row), old["state_created"], is_terminal(old)):
        return False, previous
    values = {k: v for k, v in row.items() if k != "id"}
    for column in keep:
        if values.get(column) is None:
            values[column] = old[column]
    values["object_id"] = row["id"]
    conn.execute(_overwrite(table), values)
    return True, previous


def _state(event: StripeEvent, received_at: datetime) -> dict[str, Any]:
    return {
        "state_created": event.created,
        "state_event_id": event.id,
        "updated_at": received_at,
        "livemode": event.livemode,
    }


def _move_subscription_count(
    conn: Connection, old: tuple[str, str] | None, new: tuple[str, str] | None
) -> None:
    """Keep subscription_counts equal to the subscriptions table, grouped by plan and status."""
    if old == new:
        return
    # A fixed order of row locks, so that two transactions cannot deadlock on PostgreSQL.
    changes = sorted((key, delta) for key, delta in ((old, -1), (new, 1)) if key is not None)
    for (product_id, status), delta in changes:
        key = {"key_product": product_id, "key_status": status}
        if delta > 0:
            conn.execute(_count_up(conn.dialect.name), key)
        # A plain UPDATE: an upsert would check the -1 row before it finds the conflict.
        elif conn.execute(_count_down(), key).rowcount != 1:
            raise RuntimeError(f"subscription_counts has no row for {product_id!r}/{status!r}")


# --- handlers, one per kind of object -------------------------------------------------


def apply_subscription(conn: Connection, event: StripeEvent, received_at: datetime) -> None:
    obj = event.object
    subscription_id = required_str(obj, "id", "subscription")
    status = required_str(obj, "status", "subscription")
    items = subscription_items(obj)
    first_item = items[0] if items else None
    product_id, price_id = item_product_and_price(first_item) if first_item else (None, None)
    period_start, period_end = subscription_period(obj, first_item)
    row = {
        "id": subscription_id,
        "status": status,
        "product_id": product_id or "",
        "price_id": price_id,
        "customer_id": object_id(obj.get("customer")),
        "current_period_start": period_start,
        "current_period_end": period_end,
        "cancel_at_period_end": optional_bool(obj, "cancel_at_period_end"),
        **_state(event, received_at),
    }
    applied, previous = _apply_state(
        conn,
        subscriptions,
        row,
        is_terminal=lambda r: r["status"] in TERMINAL_SUBSCRIPTION_STATUSES,
    )
    if applied:
        old = (previous.product_id, previous.status) if previous is not None else None
        _move_subscription_count(conn, old, (row["product_id"], status))


def apply_product(conn: Connection, event: StripeEvent, received_at: datetime) -> None:
    obj = event.object
    deleted = event.type.endswith(".deleted") or obj.get("deleted") is True
    name = optional_str(obj, "name")
    row = {
        "id": required_str(obj, "id", "product"),
        "name": name[:500] if name else None,
        "active": False if deleted else optional_bool(obj, "active"),
        "deleted": deleted,
        **_state(event, received_at),
    }
    _apply_state(conn, products, row, is_terminal=_is_deleted, keep_when_missing=("name",))


def apply_price(conn: Connection, event: StripeEvent, received_at: datetime) -> None:
    obj = event.object
    deleted = event.type.endswith(".deleted") or obj.get("deleted") is True
    fields = price_fields(obj)
    row = {
        "id": required_str(obj, "id", event.type.split(".")[0]),
        **fields,
        "active": False if deleted else fields["active"],
        "deleted": deleted,
        **_state(event, received_at),
    }
    _apply_state(
        conn,
        prices,
        row,
        is_terminal=_is_deleted,
        keep_when_missing=("product_id", "unit_amount", "currency", "recurring_interval"),
    )


INVOICE_STATUS_BY_EVENT = {
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
    "invoice.deleted": "deleted",
}


def apply_invoice(conn: Connection, event: StripeEvent, received_at: datetime) -> None:
    obj = event.object
    invoice_id = required_str(obj, "id", "invoice")
    status = INVOICE_STATUS_BY_EVENT.get(event.type)
    if status is None:
        status = optional_str(obj, "status") or ""
        if event.type == "invoice.payment_failed" and not status:
            status = "open"
        if not status:
            raise MalformedObject(f"{event.type} invoice has no 'status'")
    if status in TERMINAL_INVOICE_STATUSES:
        failing: bool | None = False
    elif event.type == "invoice.payment_failed":
        failing = True
    elif status == "open" and isinstance(obj.get("attempted"), bool):
        # An open invoice that has been attempted is one whose attempts have failed so far.
        failing = obj["attempted"]
    elif status != "open":
        failing = False  # draft: not yet attempted
    else:
        failing = None  # no word on the last attempt: keep what we knew
    row = {
        "id": invoice_id,
        "subscription_id": invoice_subscription(obj),
        "status": status,
        "payment_failing": failing,
        "amount_due": optional_int(obj, "amount_due"),
        "currency": optional_str(obj, "currency"),
        "attempt_count": optional_int(obj, "attempt_count"),
        **_state(event, received_at),
    }
    _apply_state(
        conn,
        invoices,
        row,
        is_terminal=lambda r: r["status"] in TERMINAL_INVOICE_STATUSES,
        keep_when_missing=("payment_failing", "subscription_id", "amount_due", "currency"),
        default_when_new={"payment_failing": False},
    )


def _is_deleted(row: Mapping[str, Any]) -> bool:
    return bool(row["deleted"])


Handler = Callable[[Connection, StripeEvent, datetime], None]

SUBSCRIPTION_EVENTS = (
    "created",
    "updated",
    "deleted",
    "paused",
    "resumed",
    "trial_will_end",
    "pending_update_applied",
    "pending_update_expired",
)
HANDLERS: dict[str, Handler] = {
    **{f"customer.subscription.{name}": apply_subscription for name in SUBSCRIPTION_EVENTS},
    **{f"product.{name}": apply_product for name in ("created", "updated", "deleted")},
    **{f"price.{name}": apply_price for name in ("created", "updated", "deleted")},
    # Legacy plan objects are prices under another name.
    **{f"plan.{name}": apply_price for name in ("created", "updated", "deleted")},
    "invoice.payment_failed": apply_invoice,
    "invoice.updated": apply_invoice,
    **{event_type: apply_invoice for event_type in INVOICE_STATUS_BY_EVENT},
}
