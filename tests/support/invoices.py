"""Stripe-shaped invoices for collections: lines naming their plan, customers, retries."""

from typing import Any

from tests.support import stripe_factory as sf


def line(product: str, shape: str) -> dict[str, Any]:
    """An invoice's first line naming `product` as one API version or another does."""
    if shape == "price":  # 2018 on: price (and plan alongside, on older versions)
        return {"price": {"id": "price_1", "product": product}, "plan": None}
    if shape == "plan":  # before prices: the legacy plan only
        return {"plan": {"id": "plan_1", "product": product}}
    if shape == "expanded":  # the product expanded to its object
        return {"price": {"id": "price_1", "product": {"id": product, "object": "product"}}}
    # 2025-03-31.basil on: no price or plan on the line, the product under pricing
    return {
        "pricing": {
            "type": "price_details",
            "price_details": {"price": "price_1", "product": product},
        }
    }


def invoice(
    invoice_id: str,
    status: str,
    *,
    product: str | None = None,
    shape: str = "price",
    customer: Any = "cus_1",
    next_attempt: int | None = None,
    transitions: dict[str, int | None] | None = None,
    currency: str = "usd",
    **fields: Any,
) -> dict[str, Any]:
    """A Stripe-shaped invoice: the factory's, with lines, a customer and retries."""
    obj = sf.invoice(invoice_id, status, **fields)
    obj["currency"] = currency
    obj["customer"] = customer
    obj["lines"] = {"object": "list", "data": [line(product, shape)] if product else []}
    obj["next_payment_attempt"] = next_attempt
    if transitions is not None:
        obj["status_transitions"] = transitions
    return obj
