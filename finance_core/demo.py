"""Demo data: realistic signed Stripe events for a store with no Stripe behind it.

Test-mode events for a few plans and a few hundred subscriptions across every status, failed
then recovered payments, and the odd duplicate and late (older) delivery, as Stripe sends them.
Ids carry `demo` so that demo data is never mistaken for real data.
"""

import hashlib
import hmac
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, exists, select

from finance_core.access.audit import record_action
from finance_core.alerts import samples
from finance_core.feed.events import Outcome, StripeEvent
from finance_core.feed.ingest import ingest_event
from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.models import (
    invoices,
    prices,
    products,
    subscriptions,
    webhook_events,
)
from finance_core.views import payments

DEMO_EVENT_PREFIX = "evt_demo_"
DAY = 86400

PLANS = [
    ("prod_demo_starter", "Starter", 900),
    ("prod_demo_pro", "Pro", 2900),
    ("prod_demo_business", "Business", 9900),
    ("prod_demo_enterprise", "Enterprise", 49900),
]
PLAN_WEIGHTS = [45, 35, 15, 5]
# Most customers pay in dollars, some in euros, a few in yen (a zero-decimal currency), with
# the minor units of each per US cent of the plan's price.
CURRENCIES = [("usd", 1.0)] * 3 + [("eur", 1.0)] * 2 + [("jpy", 1.5)]

# The year the demo makes up: subscriptions that start over 13 months, more of them lately
# (sign-ups grow MONTHLY_GROWTH a month), and leave at MONTHLY_CHURN a month.
MONTHS = 13
MONTHLY_GROWTH = 0.06
MONTHLY_CHURN = 0.035
TRIAL_DAYS = 14
TRIAL_SHARE = 0.3
# Of the subscriptions still there: paying late (past_due, Stripe retrying), given up on by
# Stripe's retries (unpaid), paused; and of all, those whose first payment never went through.
PAST_DUE, UNPAID, PAUSED, EXPIRED = 0.06, 0.015, 0.01, 0.02
# A failed renewal in the last 60 days that a retry then paid; a canceled subscription's last
# invoice that failed and was voided.
RECOVERED, VOIDED = 0.10, 0.25
# Stripe's Smart Retries: up to 4 attempts a few days apart, then no more retries.
MAX_ATTEMPTS = 4


@dataclass
class DemoSubscription:
    """One made-up customer's subscription, as Stripe would have it now."""

    id: str
    product: str
    price: int  # US cents a month
    currency: str
    minor_per_cent: float
    start: int  # Stripe's start_date (and created), unix seconds
    status: str
    trial_end: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    period_start: int = 0

    @property
    def amount(self) -> int:
        """Its monthly invoice in the currency's minor units (yen: whole yen)."""
        return round(self.price * self.minor_per_cent)


def _event(kind: str, obj: dict[str, Any], created: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"evt_demo_{rng.getrandbits(64):016x}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": kind,
        "data": {"object": obj},
    }


def _price(sub: DemoSubscription) -> dict[str, Any]:
    return {
        "id": f"price_{sub.product[5:]}_{sub.currency}",
        "object": "price",
        "product": sub.product,
        "unit_amount": sub.amount,
        "currency": sub.currency,
        "recurring": {"interval": "month", "interval_count": 1},
        "type": "recurring",
    }


def _subscription(sub: DemoSubscription, status: str, at: int) -> dict[str, Any]:
    """The subscription as Stripe sends it at `at`, in `status`."""
    period_start = max(sub.start, at - (at - sub.start) % (30 * DAY))
    item = {
        "id": f"si_{sub.id[4:]}",
        "object": "subscription_item",
        "quantity": 1,
        "subscription": sub.id,
        "price": _price(sub),
        "current_period_start": period_start,
        "current_period_end": period_start + 30 * DAY,
    }
    ended = status in ("canceled", "incomplete_expired")
    return {
        "id": sub.id,
        "object": "subscription",
        "status": status,
        "livemode": False,
        "customer": f"cus_{sub.id[4:]}",
        "currency": sub.currency,
        "cancel_at_period_end": False,
        "created": sub.start,
        "start_date": sub.start,
        "trial_start": sub.start if sub.trial_end else None,
        "trial_end": sub.trial_end,
        "canceled_at": sub.canceled_at if status == "canceled" else None,
        "ended_at": sub.ended_at if ended else None,
        "items": {"object": "list", "data": [item], "has_more": False},
        "metadata": {},
    }


def _invoice(
    invoice_id: str,
    sub: DemoSubscription,
    status: str,
    *,
    created: int,
    attempt_count: int,
    next_payment_attempt: int | None,
    closed_at: int | None = None,
) -> dict[str, Any]:
    """A subscription's monthly invoice as Stripe sends it: open, paid or void."""
    amount = sub.amount
    line = {
        "id": f"il_{invoice_id[3:]}",
        "object": "line_item",
        "amount": amount,
        "currency": sub.currency,
        "quantity": 1,
        "subscription": sub.id,
        "price": _price(sub),
        "pricing": {
            "type": "price_details",
            "price_details": {"price": _price(sub)["id"], "product": sub.product},
        },
        "period": {"start": created, "end": created + 30 * DAY},
    }
    return {
        "id": invoice_id,
        "object": "invoice",
        "status": status,
        "customer": f"cus_{sub.id[4:]}",
        "amount_due": amount,
        "amount_paid": amount if status == "paid" else 0,
        "amount_remaining": 0 if status in ("paid", "void") else amount,
        "currency": sub.currency,
        "attempted": True,
        "attempt_count": attempt_count,
        "next_payment_attempt": next_payment_attempt,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": created,
        "livemode": False,
        "lines": {"object": "list", "data": [line], "has_more": False, "total_count": 1},
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub.id, "metadata": {}},
        },
        "status_transitions": {
            "finalized_at": created,
            "paid_at": closed_at if status == "paid" else None,
            "voided_at": closed_at if status == "void" else None,
            "marked_uncollectible_at": None,
        },
    }


class DemoWorld:
    """The demo's customers over the last MONTHS months, and the events that tell their story.

    `events` are in the order things happened; `backfill` delivers them as Stripe might.
    `tick` carries on from now at the same rates (the live trickle).
    """

    def __init__(self, *, subscriptions: int, now: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.subscriptions: list[DemoSubscription] = []
        self.failing: dict[str, tuple[DemoSubscription, int, int]] = {}  # id: sub, attempts, at
        self.events: list[dict[str, Any]] = []
        self._invoices = 0
        first = now - MONTHS * 30 * DAY
        growth = math.log1p(MONTHLY_GROWTH) / (30 * DAY)
        span = now - first
        for _ in range(subscriptions):
            # Sign-ups with a rate growing as exp(growth * t): the inverse of its distribution.
            u = self.rng.random()
            offset = math.log1p(u * math.expm1(growth * span)) / growth
            self._sign_up(int(first + offset), history=True)
        self.events.sort(key=lambda event: event["created"])

    def _emit(self, kind: str, obj: dict[str, Any], at: int) -> None:
        self.events.append(_event(kind, obj, at, self.rng))

    def _sign_up(self, start: int, *, history: bool) -> DemoSubscription:
        rng = self.rng
        product, _, price = rng.choices(PLANS, PLAN_WEIGHTS)[0]
        currency, minor_per_cent = rng.choice(CURRENCIES)
        sub = DemoSubscription(
            id=f"sub_demo_{len(self.subscriptions):05d}",
            product=product,
            price=price,
            currency=currency,
            minor_per_cent=minor_per_cent,
            start=start,
            status="active",
        )
        self.subscriptions.append(sub)
        if rng.random() < EXPIRED:  # the first payment never went through
            self._emit(
                "customer.subscription.created", _subscription(sub, "incomplete", start), start
            )
            if start + DAY < self.now:
                sub.status, sub.ended_at = "incomplete_expired", start + 23 * 3600
                self._emit(
                    "customer.subscription.updated",
                    _subscription(sub, sub.status, sub.ended_at),
                    sub.ended_at,
                )
            else:
                sub.status = "incomplete"
            return sub
        if rng.random() < TRIAL_SHARE:
            sub.trial_end = start + TRIAL_DAYS * DAY
            sub.status = "trialing"
        self._emit("customer.subscription.created", _subscription(sub, sub.status, start), start)
        if not history:
            return sub
        hazard = -math.log1p(-MONTHLY_CHURN) / (30 * DAY)
        leaves = start + int(rng.expovariate(hazard))
        if sub.trial_end and sub.trial_end < min(leaves, self.now):
            sub.status = "active"
            self._emit(
                "customer.subscription.updated",
                _subscription(sub, "active", sub.trial_end),
                sub.trial_end,
            )
        if leaves < self.now:
            if rng.random() < VOIDED and leaves - 10 * DAY > start:
                self._failed_then(sub, leaves - 10 * DAY, "void", leaves)
            self._cancel(sub, leaves)
            return sub
        roll = rng.random()
        if sub.status == "active" and roll < PAST_DUE + UNPAID:
            attempts = MAX_ATTEMPTS if roll < UNPAID else rng.randint(1, MAX_ATTEMPTS - 1)
            failed_at = self.now - rng.randint(attempts - 1, 3 * attempts) * DAY - 3600
            self._fail(sub, max(failed_at, start + 3600), attempts)
        elif sub.status == "active" and roll < PAST_DUE + UNPAID + PAUSED:
            sub.status = "paused"
            at = self.now - rng.randint(1, 20) * DAY
            self._emit("customer.subscription.updated", _subscription(sub, "paused", at), at)
        elif sub.status == "active" and rng.random() < RECOVERED and self.now - start > 40 * DAY:
            failed_at = self.now - rng.randint(2, 60) * DAY
            self._failed_then(sub, failed_at, "paid", failed_at + rng.randint(1, 6) * DAY)
        return sub

    def _new_invoice_id(self) -> str:
        self._invoices += 1
        return f"in_demo_{self._invoices:06d}"

    def _fail(self, sub: DemoSubscription, at: int, attempts: int) -> None:
        """A renewal that failed `attempts` times by now: past_due while Stripe retries."""
        invoice_id = self._new_invoice_id()
        retry = (
            None if attempts >= MAX_ATTEMPTS else max(self.now, at) + self.rng.randint(1, 4) * DAY
        )
        last_attempt = at + (attempts - 1) * 2 * DAY
        self._emit(
            "invoice.payment_failed",
            _invoice(
                invoice_id,
                sub,
                "open",
                created=at,
                attempt_count=attempts,
                next_payment_attempt=retry,
            ),
            min(last_attempt, self.now - 60),
        )
        sub.status = "unpaid" if retry is None else "past_due"
        self._emit(
            "customer.subscription.updated",
            _subscription(sub, sub.status, min(last_attempt, self.now - 60)),
            min(last_attempt, self.now - 60) + 1,
        )
        self.failing[invoice_id] = (sub, attempts, at)

    def _failed_then(self, sub: DemoSubscription, at: int, outcome: str, closed: int) -> None:
        """A renewal that failed, then was paid by a retry (recovered) or voided."""
        invoice_id = self._new_invoice_id()
        self._emit(
            "invoice.payment_failed",
            _invoice(
                invoice_id,
                sub,
                "open",
                created=at,
                attempt_count=1,
                next_payment_attempt=at + 3 * DAY,
            ),
            at,
        )
        kind = "invoice.paid" if outcome == "paid" else "invoice.voided"
        attempts = 2 if outcome == "paid" else 1
        self._emit(
            kind,
            _invoice(
                invoice_id,
                sub,
                outcome,
                created=at,
                attempt_count=attempts,
                next_payment_attempt=None,
                closed_at=closed,
            ),
            closed,
        )

    def _cancel(self, sub: DemoSubscription, at: int) -> None:
        sub.status, sub.canceled_at, sub.ended_at = "canceled", at, at
        self._emit("customer.subscription.deleted", _subscription(sub, "canceled", at), at)

    def tick(self, now: int, seconds: float) -> list[dict[str, Any]]:
        """What happens in the `seconds` before `now`, at the history's rates.

        Sign-ups at the last month's rate, cancellations at MONTHLY_CHURN, failures, recoveries
        and renewals in step; and when none of those happened, an update that changes nothing
        counted, so that the feed stays live.
        """
        self.now, self.events = now, []
        rng = self.rng
        live = [s for s in self.subscriptions if s.status in ("active", "trialing", "past_due")]
        month = 30 * DAY
        recent = sum(s.start > now - month for s in self.subscriptions)
        if rng.random() < recent * seconds / month:
            self._sign_up(now, history=False)
        if live and rng.random() < len(live) * MONTHLY_CHURN * seconds / month:
            self._cancel(rng.choice(live), now)
        active = [s for s in live if s.status == "active"]
        if active and rng.random() < len(active) * (PAST_DUE / 1.5) * seconds / month:
            self._fail(rng.choice(active), now, 1)
        if self.failing and rng.random() < len(self.failing) * 0.5 * seconds / month:
            invoice_id = rng.choice(sorted(self.failing))
            sub, attempts, at = self.failing.pop(invoice_id)
            # Paid on a retry (recovered), unless the customer left meanwhile: then voided.
            closed = "void" if sub.status == "canceled" else "paid"
            self._emit(
                "invoice.paid" if closed == "paid" else "invoice.voided",
                _invoice(
                    invoice_id,
                    sub,
                    closed,
                    created=at,
                    attempt_count=attempts + (closed == "paid"),
                    next_payment_attempt=None,
                    closed_at=now,
                ),
                now,
            )
            if closed == "paid":
                sub.status = "active"
                self._emit("customer.subscription.updated", _subscription(sub, "active", now), now)
        if active and rng.random() < len(active) * seconds / month:
            sub = rng.choice(active)  # a monthly renewal, paid at the first attempt
            invoice = _invoice(
                self._new_invoice_id(),
                sub,
                "paid",
                created=now,
                attempt_count=1,
                next_payment_attempt=None,
                closed_at=now,
            )
            self._emit("invoice.paid", invoice, now)
        if not self.events and live:  # Stripe's other updates: the feed stays live
            sub = rng.choice(live)
            self._emit("customer.subscription.updated", _subscription(sub, sub.status, now), now)
        return self.events


def world(*, subscriptions: int = 300, seed: int = 2026, now: int | None = None) -> DemoWorld:
    """The demo's year of customers ending now."""
    return DemoWorld(subscriptions=subscriptions, now=now or int(time.time()), seed=seed)


def backfill(demo: DemoWorld) -> list[dict[str, Any]]:
    """The year's events in the order Stripe might deliver them (duplicates and late ones)."""
    rng = random.Random(len(demo.events))
    created = min((event["created"] for event in demo.events), default=demo.now) - DAY
    events = [
        _event(
            "product.created",
            {"id": p, "object": "product", "name": n, "active": True, "created": created},
            created,
            rng,
        )
        for p, n, _ in PLANS
    ] + list(demo.events)
    for _ in range(len(events) // 40):  # late deliveries: an older event arrives after newer ones
        i = rng.randrange(len(PLANS), len(events) - 1)
        events.insert(min(len(events), i + rng.randrange(2, 20)), events.pop(i))
    events.extend(rng.sample(events[len(PLANS) :], len(events) // 50))  # at-least-once
    return events


def malformed_event(seed: int | None = None) -> dict[str, Any]:
    """A subscription update whose object lacks its items, as a Stripe change might send it.

    It fails to apply and waits on the Webhooks page for an admin to replay or dismiss it.
    """
    rng = random.Random(seed)
    product, _, price = PLANS[1]
    sub = DemoSubscription("sub_demo_00001", product, price, "usd", 1.0, int(time.time()), "active")
    broken = _subscription(sub, "active", int(time.time()))
    del broken["items"]
    return _event("customer.subscription.updated", broken, int(time.time()), rng)


def trickle(demo: DemoWorld, seconds: float) -> Iterator[list[dict[str, Any]]]:
    """Endless: every `seconds`, what happened in them at the year's rates (never nothing)."""
    while True:
        yield demo.tick(int(time.time()), seconds)


def post(client: httpx.Client, url: str, event: dict[str, Any], secret: str) -> int:
    """POST one event signed as Stripe signs it; returns the status code."""
    body = json.dumps(event)
    t = int(time.time())
    v1 = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    response = client.post(
        f"{url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": f"t={t},v1={v1}", "Content-Type": "application/json"},
    )
    return response.status_code


class NotADemoStore(RuntimeError):
    """The store holds data that did not come from the demo; demo data would pollute it."""


def holds_non_demo_data(engine: Engine) -> bool:
    """Whether any event or object state in the store came from somewhere other than the demo."""
    demo_like = DEMO_EVENT_PREFIX.replace("_", r"\_") + "%"
    columns = [webhook_events.c.id] + [
        table.c.state_event_id for table in (products, prices, subscriptions, invoices)
    ]
    with engine.connect() as conn:
        return any(
            conn.execute(select(exists().where(column.not_like(demo_like, escape="\\")))).scalar()
            for column in columns
        )


def _refuse_non_demo(engine: Engine) -> None:
    if holds_non_demo_data(engine):
        raise NotADemoStore(
            "this store already holds data that is not demo data; demo events go only to a "
            "store of their own (set DATABASE_URL to a new file, e.g. sqlite:///data/demo.db)"
        )


def is_demo_store(engine: Engine) -> bool:
    """Whether the store holds demo events and nothing else (where a demo may break things)."""
    if holds_non_demo_data(engine):
        return False
    demo_like = DEMO_EVENT_PREFIX.replace("_", r"\_") + "%"
    with engine.connect() as conn:
        return bool(
            conn.execute(
                select(exists().where(webhook_events.c.id.like(demo_like, escape="\\")))
            ).scalar()
        )


def send_broken_event(*, engine: Engine, actor: str, now: datetime) -> str:
    """Ingest a malformed demo event, so that an admin sees a failure, its alert, replay and
    dismissal; audited. Demo stores only (`is_demo_store`). Returns the event's id."""
    if not is_demo_store(engine):
        raise NotADemoStore("a broken event is sent only to a demo store (make run's demo)")
    payload = malformed_event()
    ingest_event(
        engine=engine,
        event=StripeEvent.from_payload(payload),
        received_at=now,
        raw_payload=json.dumps(payload),
    )
    with write_transaction(engine) as conn:
        record_action(
            conn,
            actor=actor,
            action="demo_broken_event_sent",
            target=payload["id"],
            detail="a customer.subscription.updated without its items, to fail on purpose",
            now=now,
        )
    return str(payload["id"])


def seed_failed_payment_days(*, engine: Engine, now: datetime, days: int = 8) -> None:
    """Close the last `days` UTC days' failed payments, which the alert job keeps from its
    first day on: the demo's year arrived at once, so the Overview has changes to show."""
    today = now.astimezone(UTC).date()
    for back in range(days, 0, -1):
        day = today - timedelta(days=back - 1)
        day_end = datetime(day.year, day.month, day.day, tzinfo=UTC)
        with read_transaction(engine) as conn:
            value = payments.failing_at(conn=conn, moment=day_end)
        samples.record_day_figure(
            engine=engine,
            measure=samples.FAILED_PAYMENTS_DAILY_MEASURE,
            value=value,
            now=day_end - timedelta(seconds=1),
        )


def fill_store(*, engine: Engine, now: Any, subscriptions: int = 300) -> dict[Outcome, int]:
    """Ingest the demo year in-process through the same path as webhooks; count outcomes.

    The history is dated by the events' own Stripe dates, as for any store.
    """
    _refuse_non_demo(engine)
    outcomes = dict.fromkeys(Outcome, 0)
    events = backfill(world(subscriptions=subscriptions))
    for payload in events:
        result = ingest_event(
            engine=engine,
            event=StripeEvent.from_payload(payload),
            received_at=now(),
            raw_payload=json.dumps(payload),
        )
        outcomes[result.outcome] += 1
    seed_failed_payment_days(engine=engine, now=now())
    return outcomes
