"""Read the few fields we keep from Stripe objects, whatever the API version that wrote them."""

from datetime import UTC, datetime
from typing import Any


class MalformedObject(ValueError):
    """A verified event's object lacks what its type needs: our code or Stripe changed."""


MAX_ID_LENGTH = 255


def storable(value: str, *, max_length: int | None = None) -> str:
    """`value`, refused when PostgreSQL could not store it (a NUL, or longer than its column)
    though SQLite could: such an object fails alike on both stores, kept for replay."""
    if "\x00" in value:
        raise MalformedObject("a text field holds a NUL character, which cannot be stored")
    if max_length is not None and len(value) > max_length:
        raise MalformedObject(f"an id or status is longer than {max_length} characters")
    return value


def object_id(value: Any) -> str | None:
    """An id given either as a string or as an expanded object with an `id`."""
    if isinstance(value, str) and value:
        return storable(value, max_length=MAX_ID_LENGTH)
    if isinstance(value, dict):
        inner = value.get("id")
        if isinstance(inner, str) and inner:
            return storable(inner, max_length=MAX_ID_LENGTH)
    return None


def required_str(
    obj: dict[str, Any], key: str, what: str, *, max_length: int = MAX_ID_LENGTH
) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedObject(f"{what} has no {key!r} string (got {type(value).__name__})")
    return storable(value, max_length=max_length)


def optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return storable(value) if isinstance(value, str) else None


def optional_int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def optional_bool(obj: dict[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    return value if isinstance(value, bool) else None


def timestamp(value: Any) -> datetime | None:
    """A Stripe epoch-seconds timestamp as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def subscription_items(subscription: dict[str, Any]) -> list[dict[str, Any]]:
    """The subscription's items; a missing or non-list `items` is a malformed object."""
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else items
    if not isinstance(data, list):
        raise MalformedObject("subscription has no 'items' list")
    return [item for item in data if isinstance(item, dict)]


def item_product_and_price(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """Product and price of an item: `price` (2018+) or the older `plan`."""
    for key in ("price", "plan"):
        source = item.get(key)
        if isinstance(source, dict):
            product = object_id(source.get("product"))
            if product:
                return product, object_id(source)
    return None, object_id(item.get("price")) or object_id(item.get("plan"))


def subscription_period(
    subscription: dict[str, Any], first_item: dict[str, Any] | None
) -> tuple[datetime | None, datetime | None]:
    """`current_period_*` lives on the subscription before 2025-03-31.basil, on items after."""
    for source in (subscription, first_item or {}):
        start = timestamp(source.get("current_period_start"))
        end = timestamp(source.get("current_period_end"))
        if start or end:
            return start, end
    return None, None


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """`subscription` before 2025-03-31.basil, `parent.subscription_details.subscription` after."""
    direct = object_id(invoice.get("subscription"))
    if direct:
        return direct
    parent = invoice.get("parent")
    if isinstance(parent, dict):
        details = parent.get("subscription_details")
        if isinstance(details, dict):
            return object_id(details.get("subscription"))
    return None


def invoice_product(invoice: dict[str, Any]) -> str | None:
    """The product of an invoice's first line: `price.product`, the older `plan.product`, or
    (2025-03-31.basil on) `pricing.price_details.product`; None when the line names none."""
    lines = invoice.get("lines")
    data = lines.get("data") if isinstance(lines, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    if not isinstance(first, dict):
        return None
    for key in ("price", "plan"):
        source = first.get(key)
        if isinstance(source, dict):
            product = object_id(source.get("product"))
            if product:
                return product
    pricing = first.get("pricing")
    details = pricing.get("price_details") if isinstance(pricing, dict) else None
    return object_id(details.get("product")) if isinstance(details, dict) else None


# Where Stripe says when an invoice reached each terminal status (`deleted` has no time).
STATUS_TRANSITIONS = {
    "paid": "paid_at",
    "void": "voided_at",
    "uncollectible": "marked_uncollectible_at",
}


def invoice_closed_at(invoice: dict[str, Any], status: str) -> datetime | None:
    """When the invoice reached `status`, from its `status_transitions`, if Stripe says."""
    transitions = invoice.get("status_transitions")
    key = STATUS_TRANSITIONS.get(status)
    if key is None or not isinstance(transitions, dict):
        return None
    return timestamp(transitions.get(key))


def price_fields(price: dict[str, Any]) -> dict[str, Any]:
    """Amount, currency and interval of a price, or of a legacy plan object."""
    recurring = price.get("recurring")
    interval = recurring.get("interval") if isinstance(recurring, dict) else price.get("interval")
    amount = optional_int(price, "unit_amount")
    if amount is None:
        amount = optional_int(price, "amount")
    return {
        "product_id": object_id(price.get("product")),
        "active": optional_bool(price, "active"),
        "unit_amount": amount,
        "currency": optional_str(price, "currency"),
        "recurring_interval": interval if isinstance(interval, str) else None,
    }


def pause_reason(subscription: dict[str, Any]) -> str:
    """Why a paused subscription is paused (2026-09-30.endive's
    `status_details.paused.subscription.type`); older API versions pause only when a trial
    ends without a payment method, and say nothing: "unspecified"."""
    details = subscription.get("status_details")
    paused = details.get("paused") if isinstance(details, dict) else None
    inner = paused.get("subscription") if isinstance(paused, dict) else None
    reason = inner.get("type") if isinstance(inner, dict) else None
    return reason[:64] if isinstance(reason, str) and reason else "unspecified"


def subscription_dates(
    subscription: dict[str, Any], status: str
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """When it started (`start_date`, else `created`), and once canceled when it was canceled
    (`canceled_at`, else `ended_at`) and ended (`ended_at`, else `canceled_at`).

    Every API version carries these at the top level. A scheduled cancellation sets
    `canceled_at` on a subscription still active: only a canceled one's dates are kept. Neither
    is before the start.
    """
    started = timestamp(subscription.get("start_date")) or timestamp(subscription.get("created"))
    if status != "canceled":
        return started, None, None
    canceled = timestamp(subscription.get("canceled_at"))
    ended = timestamp(subscription.get("ended_at"))
    canceled, ended = canceled or ended, ended or canceled
    if started is not None:
        canceled = max(canceled, started) if canceled else None
        ended = max(ended, started) if ended else None
    return started, canceled, ended
