"""A small store for the morning digest: two plans, six subscriptions, two failing invoices."""

from finance_core.feed.ingest import StripeEvent, ingest_event
from tests.support import stripe_factory as sf


def feed(engine, event_type, obj, at):
    event = sf.event(event_type, obj, created=int(at.timestamp()))
    return ingest_event(engine=engine, event=StripeEvent.from_payload(event), received_at=at)


def fill(engine, at):
    """Two plans, five active subscriptions, one canceled; two failing invoices, usd and eur."""
    feed(engine, "product.created", sf.product("prod_pro", "Pro"), at)
    feed(engine, "product.created", sf.product("prod_starter", "Starter"), at)
    plans = [("active", "prod_pro")] * 3 + [("trialing", "prod_starter")] * 2
    for n, (status, plan) in enumerate([*plans, ("canceled", "prod_pro")]):
        subscription = sf.subscription(f"sub_d{n}", status, plan)
        # Started today, however the history dates subscriptions (seen or started).
        subscription["created"] = subscription["start_date"] = int(at.timestamp())
        feed(engine, "customer.subscription.created", subscription, at)
    feed(
        engine, "invoice.payment_failed", sf.invoice("in_d1", "open", subscription_id="sub_d0"), at
    )
    euro = sf.invoice("in_d2", "open", subscription_id="sub_d1", amount_due=4900)
    euro["currency"] = "eur"
    feed(engine, "invoice.payment_failed", euro, at)
