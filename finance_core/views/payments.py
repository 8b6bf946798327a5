"""The failing invoices behind "Failed payments": keyset pages, totals per currency, CSV.

Exactly the invoices the Finance API's `failed_payments_count` counts (`payment_failing`),
read through the partial index on (failing_since, id) that holds only them, newest failure
first. Each carries the plan of the invoice itself (its first line's product, SPEC section 16;
its subscription's only when the invoice names none), its customer and Stripe's next retry.
"""

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Integer, String, bindparam, func, select, tuple_

from finance_core.store import statements as hot
from finance_core.store.db import snapshot
from finance_core.store.models import (
    UTCDateTime,
    failing_invoice_totals,
    invoices,
    products,
    subscriptions,
)
from finance_core.views.csv_export import csv_chunks, formula_safe, iso_time, keyset_rows
from finance_core.views.money import format_amount, major_units
from finance_core.views.queries import plan_id_for, plan_name_for, stripe_dashboard_url
from finance_core.views.recovery import Recovered, recovered

MAX_PAGE_SIZE = 500
NO_MORE_RETRIES = "no more retries"
CSV_COLUMNS = (
    "invoice",
    "customer",
    "subscription",
    "plan",
    "amount_due",
    "currency",
    "attempts",
    "next_retry",
    "failing_since",
    "stripe_url",
    "customer_url",
)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (failing_since, id) of its last invoice."""

    failing_since: datetime
    invoice_id: str


class BadCursor(ValueError):
    """A cursor that no page of this listing gave out."""


def cursor_token(cursor: Cursor) -> str:
    """The cursor as an opaque, URL-safe token (the Finance API's `next_cursor`)."""
    moment = cursor.failing_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    raw = f"{moment}|{cursor.invoice_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor_token(token: str) -> Cursor:
    """The cursor a `cursor_token` stands for; BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        moment, invoice_id = raw.split("|", 1)
        failing_since = datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("the cursor is not one this endpoint gave out") from None
    if not invoice_id or len(token) > 1000:
        raise BadCursor("the cursor is not one this endpoint gave out")
    return Cursor(failing_since, invoice_id)


@dataclass(frozen=True, slots=True)
class FailingInvoice:
    id: str
    customer_id: str | None
    subscription_id: str | None
    # The invoice's own product, else its subscription's; None: neither is known (yet).
    product_id: str | None
    plan_name: str | None
    amount_due: int | None  # in the currency's minor unit, as Stripe gives it
    currency: str | None
    attempts: int | None
    next_retry: datetime | None  # None: Stripe plans no more retries
    failing_since: datetime
    livemode: bool

    @property
    def stripe_url(self) -> str:
        return stripe_dashboard_url(f"invoices/{quote(self.id, safe='')}", livemode=self.livemode)

    @property
    def customer_url(self) -> str | None:
        """The customer's page in the Stripe Dashboard, when the invoice names its customer."""
        if not self.customer_id:
            return None
        path = f"customers/{quote(self.customer_id, safe='')}"
        return stripe_dashboard_url(path, livemode=self.livemode)

    @property
    def next_retry_text(self) -> str:
        """When Stripe retries next (UTC), or that it will not retry any more."""
        return iso_time(self.next_retry) if self.next_retry else NO_MORE_RETRIES

    @property
    def plan_id(self) -> str | None:
        return None if self.product_id is None else str(plan_id_for(self.product_id))

    @property
    def amount(self) -> str:
        """The amount due in major units with its currency: `29.00 USD`."""
        return format_amount(self.amount_due, self.currency)


@dataclass(frozen=True, slots=True)
class FailingPage:
    rows: list[FailingInvoice]
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """The failing invoices in one currency and what they leave unpaid."""

    currency: str | None
    invoices: int
    amount_due: int  # minor units; invoices without an amount count as 0

    @property
    def amount(self) -> str:
        return format_amount(self.amount_due, self.currency)


# The invoice's own product; its subscription's only when the invoice names none.
_PLAN_PRODUCT = func.coalesce(invoices.c.product_id, subscriptions.c.product_id)
_PAGE = (
    select(
        invoices.c.id,
        invoices.c.customer_id,
        invoices.c.subscription_id,
        _PLAN_PRODUCT.label("product_id"),
        products.c.name,
        invoices.c.amount_due,
        invoices.c.currency,
        invoices.c.attempt_count,
        invoices.c.next_payment_attempt,
        invoices.c.failing_since,
        invoices.c.livemode,
    )
    .select_from(
        invoices.outerjoin(
            subscriptions, subscriptions.c.id == invoices.c.subscription_id
        ).outerjoin(products, products.c.id == _PLAN_PRODUCT)
    )
    .where(invoices.c.payment_failing)
    .order_by(invoices.c.failing_since.desc(), invoices.c.id.desc())
)
# Run on the driver (`finance_core.store.statements`): a page of 500 through SQLAlchemy's result
# rows cost more than the database's own work. The first page, and a page after a cursor.
_PAGE_LIMIT = bindparam("limit", type_=Integer)
_FIRST_PAGE = _PAGE.limit(_PAGE_LIMIT)
_NEXT_PAGE = _PAGE.where(
    tuple_(invoices.c.failing_since, invoices.c.id)
    < tuple_(bindparam("after_since", type_=UTCDateTime), bindparam("after_id", type_=String))
).limit(_PAGE_LIMIT)
# Kept by triggers on `invoices` (migration 0012): a row per currency, whatever the store's size.
_TOTALS = select(
    failing_invoice_totals.c.currency,
    failing_invoice_totals.c.invoices,
    failing_invoice_totals.c.amount_due,
).where(failing_invoice_totals.c.invoices > 0)


def _row(row: Sequence[Any]) -> FailingInvoice:
    """A FailingInvoice from a `_PAGE` row as the driver stores it."""
    id_, customer, subscription, product_id, name, amount, currency = row[:7]
    attempts, retry, since, live = row[7:]
    failing_since = hot.stored_time(since)
    if failing_since is None:  # the failing rule sets it with payment_failing
        raise ValueError(f"failing invoice {id_} has no failing_since")
    return FailingInvoice(
        id=id_,
        customer_id=customer,
        subscription_id=subscription,
        product_id=product_id,
        plan_name=None if product_id is None else plan_name_for(product_id, name),
        amount_due=amount,
        currency=currency,
        attempts=attempts,
        next_retry=hot.stored_time(retry),
        failing_since=failing_since,
        livemode=bool(live),
    )


def failing_invoice_page(
    *, conn: Connection, limit: int = 50, after: Cursor | None = None
) -> FailingPage:
    """One page of the failing invoices, newest failure first, continuing after `after`."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    # One more than asked tells whether another page follows.
    params: dict[str, Any] = {"limit": limit + 1}
    statement = _FIRST_PAGE
    if after is not None:
        statement = _NEXT_PAGE
        params["after_since"] = hot.db_time(conn.dialect.name, after.failing_since)
        params["after_id"] = after.invoice_id
    rows = [_row(row) for row in hot.run(conn, statement, params).fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = Cursor(rows[-1].failing_since, rows[-1].id) if more else None
    return FailingPage(rows, next_cursor)


def failing_totals(*, conn: Connection) -> list[CurrencyTotal]:
    """Failing invoices and their amount due per currency, the most invoices first."""
    totals = [
        CurrencyTotal(row.currency or None, int(row.invoices), int(row.amount_due))
        for row in conn.execute(_TOTALS)
    ]
    totals.sort(key=lambda total: (-total.invoices, total.currency or ""))
    return totals


@dataclass(frozen=True, slots=True)
class FailedPayments:
    """One page of the failing invoices with the totals and what was recovered, one state."""

    page: FailingPage
    totals: list[CurrencyTotal]
    recovered: Recovered
    as_of: datetime


def failed_payments(
    conn: Connection,
    *,
    limit: int,
    after: Cursor | None,
    recovered_days: int,
    now: datetime,
) -> FailedPayments:
    """The Payments page's reads in one snapshot: a page, the totals and Recovered."""
    with snapshot(conn):
        return FailedPayments(
            page=failing_invoice_page(conn=conn, limit=limit, after=after),
            totals=failing_totals(conn=conn),
            recovered=recovered(conn, days=recovered_days, now=now),
            as_of=now,
        )


def csv_pages(*, engine: Engine, page_size: int = MAX_PAGE_SIZE) -> Iterator[str]:
    """Every failing invoice as CSV, a header and then one chunk per page; one snapshot."""

    def read_page(conn: Connection, after: Cursor | None) -> FailingPage:
        return failing_invoice_page(conn=conn, limit=page_size, after=after)

    rows = (_csv_values(row) for row in keyset_rows(engine=engine, read_page=read_page))
    return csv_chunks(CSV_COLUMNS, rows, rows_per_chunk=page_size)


def _csv_values(row: FailingInvoice) -> list[object]:
    amount: Decimal | str = ""
    if row.amount_due is not None and row.currency:
        amount = major_units(row.amount_due, row.currency)
    # Every text column through formula_safe: ids and names come from Stripe.
    return [
        formula_safe(row.id),
        formula_safe(row.customer_id or ""),
        formula_safe(row.subscription_id or ""),
        formula_safe(row.plan_name or ""),
        amount,
        formula_safe((row.currency or "").upper()),
        "" if row.attempts is None else row.attempts,
        row.next_retry_text,
        iso_time(row.failing_since),
        formula_safe(row.stripe_url),
        formula_safe(row.customer_url or ""),
    ]


def failing_at(*, conn: Connection, moment: datetime) -> int:
    """Invoices failing at `moment` as far as the store can tell afterwards: a first failure
    before it and no closing by then (an invoice that failed again after a successful retry
    is counted from its first failure). For a store that has no daily figures yet."""
    column = invoices.c
    return int(
        conn.execute(
            select(func.count()).where(
                column.first_failed_at <= moment,
                (column.closed_at.is_(None)) | (column.closed_at > moment),
            )
        ).scalar_one()
    )
