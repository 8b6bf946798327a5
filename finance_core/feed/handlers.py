"""Event handlers, one per kind of Stripe object, and the per-object ordering rule.

Each Stripe object row remembers the `created` time and id of the event that set its state. An
older event changes nothing; on an equal `created` the later arrival wins, except that a terminal
state is never replaced by a non-terminal one (SPEC section 4). The rule runs inside the one
statement that writes the state (`statements.upsert_state`), so a webhook costs one statement
per object, which a batch sends pipelined on PostgreSQL; `subscription_counts` follows the
subscriptions by trigger (migration 0003).
"""

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Connection, Table

from finance_core.feed.events import StripeEvent
from finance_core.feed.stripe_shapes import (
    MalformedObject,
    invoice_closed_at,
    invoice_product,
    invoice_subscription,
    item_product_and_price,
    object_id,
    optional_bool,
    optional_int,
    optional_str,
    pause_reason,
    price_fields,
    required_str,
    subscription_dates,
    subscription_items,
    subscription_period,
    timestamp,
)
from finance_core.store import statements
from finance_core.store.models import invoices, prices, products, subscriptions

TERMINAL_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
TERMINAL_INVOICE_STATUSES = frozenset({"paid", "void", "uncollectible", "deleted"})
# The handler an object read from Stripe's API goes through (sync, thin events), as if a
# webhook of this type carried it; and for one Stripe no longer has (a 404).
API_STATE_EVENT_TYPES = {
    "product": "product.updated",
    "price": "price.updated",
    "plan": "plan.updated",
    "subscription": "customer.subscription.updated",
    "invoice": "invoice.updated",
}
DELETED_EVENT_TYPES = {
    "product": "product.deleted",
    "price": "price.deleted",
    "plan": "plan.deleted",
    "invoice": "invoice.deleted",
}


class Change(StrEnum):
    """What applying one object state did to the store."""

    APPLIED = "applied"  # written unless the stored state is newer (webhooks do not ask which)
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # same values; only the state's event and time moved on
    KEPT_NEWER = "kept_newer"  # the stored state is newer and stays


STATE_COLUMNS = frozenset({"state_created", "state_event_id", "updated_at", "livemode"})


def _apply_state(
    conn: Connection,
    table: Table,
    row: dict[str, Any],
    *,
    terminal_statuses: frozenset[str] | None,
    keep_when_missing: tuple[str, ...] = (),
    default_when_new: Mapping[str, Any] | None = None,
    since_flag: tuple[str, str] | None = None,
    terminal_since: str | None = None,
    report_change: bool = False,
) -> Change:
    """Write an object's new state unless the stored one is newer.

    `row` holds stored values (times through `statements.db_time`). Columns in
    `keep_when_missing` whose new value is None keep their stored value; a new row takes them
    from `default_when_new`. `terminal_statuses` None: the `deleted` flag is the terminal state.
    `since_flag`: a since column that follows a flag column, `terminal_since` one that follows
    the terminal status (`statements.upsert_state`).
    With `report_change` the stored row is read first, to tell created, updated and unchanged
    apart (sync reports them); webhooks skip that read, and do not read whether the state was
    written either: the ordering rule is the upsert's own WHERE.
    """
    old = None
    if report_change:
        old = statements.fetch_optional(conn, statements.lock(table), {"object_id": row["id"]})
    params = {**row, **{k: v for k, v in (default_when_new or {}).items() if row.get(k) is None}}
    params.update({f"keep_{column}": row[column] for column in keep_when_missing})
    upsert = statements.upsert_state(
        conn.dialect.name,
        table,
        tuple(row),
        keep_when_missing,
        terminal_statuses,
        since_flag,
        terminal_since,
    )
    cursor = statements.run_with(conn, upsert, params, tuple(row))
    if not report_change:
        # Not read: on PostgreSQL reading it would wait for the answer (see db.pipeline).
        return Change.APPLIED
    if cursor.fetchone() is None:
        return Change.KEPT_NEWER
    if old is None:
        return Change.CREATED
    new = {k: (old[k] if v is None and k in keep_when_missing else v) for k, v in row.items()}
    # Each follows its flag or status, compared there.
    derived = {since_flag[0]} if since_flag else set()
    derived |= {terminal_since} if terminal_since else set()
    same = all(old[k] == v for k, v in new.items() if k not in STATE_COLUMNS | derived)
    return Change.UNCHANGED if same else Change.UPDATED


def _state(conn: Connection, event: StripeEvent, received_at: datetime) -> dict[str, Any]:
    return {
        "state_created": event.created,
        "state_event_id": event.id,
        "updated_at": statements.db_time(conn.dialect.name, received_at),
        "livemode": event.livemode,
    }


# --- handlers, one per kind of object -------------------------------------------------


def apply_subscription(
    conn: Connection, event: StripeEvent, received_at: datetime, *, report_change: bool = False
) -> Change:
    obj = event.object
    subscription_id = required_str(obj, "id", "subscription")
    status = required_str(obj, "status", "subscription", max_length=64)
    items = subscription_items(obj)
    first_item = items[0] if items else None
    product_id, price_id = item_product_and_price(first_item) if first_item else (None, None)
    period_start, period_end = subscription_period(obj, first_item)
    started, canceled, ended = subscription_dates(obj, status)
    dialect = conn.dialect.name
    # Without Stripe's own dates (a payload that lacks them), the event's time dates them.
    happened = statements.db_time(dialect, timestamp(event.created))
    undated_cancel = status == "canceled" and canceled is None
    # ... but an event dated before the subscription began cannot be when it ended.
    event_time = timestamp(event.created)
    if started is not None and event_time is not None and event_time < started:
        event_time = started
    canceled_then = statements.db_time(dialect, event_time)
    row = {
        "id": subscription_id,
        "status": status,
        "product_id": product_id or "",
        "price_id": price_id,
        "customer_id": object_id(obj.get("customer")),
        "current_period_start": statements.db_time(dialect, period_start),
        "current_period_end": statements.db_time(dialect, period_end),
        "cancel_at_period_end": optional_bool(obj, "cancel_at_period_end"),
        "pause_reason": pause_reason(obj) if status == "paused" else None,
        "started_at": statements.db_time(dialect, started),
        "canceled_at": statements.db_time(dialect, canceled),
        "ended_at": statements.db_time(dialect, ended),
        **_state(conn, event, received_at),
    }
    change = _apply_state(
        conn,
        subscriptions,
        row,
        terminal_statuses=TERMINAL_SUBSCRIPTION_STATUSES,
        # A start is for good: one the payload does not give keeps the stored one, and a new
        # row without it starts when the event happened. So do cancel dates.
        keep_when_missing=("started_at", "canceled_at", "ended_at")
        if undated_cancel
        else ("started_at",),
        default_when_new={"started_at": happened}
        | ({"canceled_at": canceled_then, "ended_at": canceled_then} if undated_cancel else {}),
        report_change=report_change,
    )
    if undated_cancel:
        # Canceled without Stripe's dates (a trimmed payload): the earliest event that said so
        # dates it, whichever arrived first; later reads (each of another time) leave it alone.
        statements.run(
            conn,
            statements.earliest_cancel_dates(),
            {"object_id": subscription_id, "at": canceled_then},
        )
    return change


def apply_product(
    conn: Connection, event: StripeEvent, received_at: datetime, *, report_change: bool = False
) -> Change:
    obj = event.object
    deleted = event.type.endswith(".deleted") or obj.get("deleted") is True
    name = optional_str(obj, "name")
    row = {
        "id": required_str(obj, "id", "product"),
        "name": name[:500] if name else None,
        "active": False if deleted else optional_bool(obj, "active"),
        "deleted": deleted,
        **_state(conn, event, received_at),
    }
    return _apply_state(
        conn,
        products,
        row,
        terminal_statuses=None,
        keep_when_missing=("name",),
        report_change=report_change,
    )


def apply_price(
    conn: Connection, event: StripeEvent, received_at: datetime, *, report_change: bool = False
) -> Change:
    obj = event.object
    deleted = event.type.endswith(".deleted") or obj.get("deleted") is True
    fields = price_fields(obj)
    row = {
        "id": required_str(obj, "id", event.type.split(".")[0]),
        **fields,
        "active": False if deleted else fields["active"],
        "deleted": deleted,
        **_state(conn, event, received_at),
    }
    return _apply_state(
        conn,
        prices,
        row,
        terminal_statuses=None,
        keep_when_missing=("product_id", "unit_amount", "currency", "recurring_interval"),
        report_change=report_change,
    )


INVOICE_STATUS_BY_EVENT = {
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
    "invoice.deleted": "deleted",
}


# Columns an invoice object may lack (a partial or thin payload) that keep their stored value.
INVOICE_KEEP_WHEN_MISSING: tuple[str, ...] = (
    "payment_failing",
    "subscription_id",
    "amount_due",
    "amount_paid",
    "currency",
    "attempt_count",
    "customer_id",
    "product_id",
)


def apply_invoice(
    conn: Connection, event: StripeEvent, received_at: datetime, *, report_change: bool = False
) -> Change:
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
    dialect = conn.dialect.name
    closed_at = None
    if status in TERMINAL_INVOICE_STATUSES:
        closed_at = invoice_closed_at(obj, status) or timestamp(event.created)
    row = {
        "id": invoice_id,
        "subscription_id": invoice_subscription(obj),
        "status": status,
        "payment_failing": failing,
        "amount_due": optional_int(obj, "amount_due"),
        "amount_paid": optional_int(obj, "amount_paid"),
        "currency": optional_str(obj, "currency"),
        "attempt_count": optional_int(obj, "attempt_count"),
        "customer_id": object_id(obj.get("customer")),
        "product_id": invoice_product(obj),
        # None is Stripe's "no retry planned"; an object without the key keeps what we knew.
        "next_payment_attempt": statements.db_time(
            dialect, timestamp(obj.get("next_payment_attempt"))
        ),
        # When Stripe saw this failure; the upsert keeps an earlier start of the same run.
        "failing_since": statements.db_time(dialect, timestamp(event.created) if failing else None),
        "closed_at": statements.db_time(dialect, closed_at),
        **_state(conn, event, received_at),
    }
    keep: tuple[str, ...] = INVOICE_KEEP_WHEN_MISSING
    if "next_payment_attempt" not in obj:
        keep = (*keep, "next_payment_attempt")
    change = _apply_state(
        conn,
        invoices,
        row,
        terminal_statuses=TERMINAL_INVOICE_STATUSES,
        keep_when_missing=keep,
        default_when_new={"payment_failing": False},
        since_flag=("failing_since", "payment_failing"),
        terminal_since="closed_at",
        report_change=report_change,
    )
    if failing:
        # An invoice fails until it is paid, voided, marked uncollectible or deleted, all
        # terminal: every failure of a failing invoice is of one run, so its start is the
        # earliest failure whatever order they arrive in (an older one changes no state).
        statements.run(
            conn,
            statements.record_failure(invoices),
            {"object_id": invoice_id, "since": row["failing_since"]},
        )
    elif closed_at is not None and invoice_closed_at(obj, status) is None:
        # Closed at the event's time: an older event of the same closing, arriving late,
        # knows the earlier time (Stripe's own transition times need no such correction).
        statements.run(
            conn,
            statements.earlier_closing(invoices),
            {"object_id": invoice_id, "status": status, "at": row["closed_at"]},
        )
    return change


class Handler(Protocol):
    def __call__(
        self,
        conn: Connection,
        event: StripeEvent,
        received_at: datetime,
        *,
        report_change: bool = False,
    ) -> Change: ...


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
