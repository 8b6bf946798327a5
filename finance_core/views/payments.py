"""The failing invoices behind "Failed payments": keyset pages, totals per currency, CSV.

Exactly the invoices the Finance API's `failed_payments_count` counts (`payment_failing`),
read through the partial index on (failing_since, id) that holds only them, newest failure
first. Each carries its subscription's plan as SPEC section 5 names plans.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, tuple_

from finance_core.store.models import invoices, products, subscriptions
from finance_core.views.csv_export import csv_chunks, formula_safe, iso_time, keyset_rows
from finance_core.views.money import format_amount, major_units
from finance_core.views.queries import plan_id_for, plan_name_for, stripe_dashboard_url

MAX_PAGE_SIZE = 500
CSV_COLUMNS = (
    "invoice",
    "subscription",
    "plan",
    "amount_due",
    "currency",
    "attempts",
    "failing_since",
    "stripe_url",
)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (failing_since, id) of its last invoice."""

    failing_since: datetime
    invoice_id: str


@dataclass(frozen=True, slots=True)
class FailingInvoice:
    id: str
    subscription_id: str | None
    product_id: str | None  # None: the subscription is not in the store (yet)
    plan_name: str | None
    amount_due: int | None  # in the currency's minor unit, as Stripe gives it
    currency: str | None
    attempts: int | None
    failing_since: datetime
    livemode: bool

    @property
    def stripe_url(self) -> str:
        return stripe_dashboard_url(f"invoices/{self.id}", livemode=self.livemode)

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


_PAGE = (
    select(
        invoices.c.id,
        invoices.c.subscription_id,
        subscriptions.c.product_id,
        products.c.name,
        invoices.c.amount_due,
        invoices.c.currency,
        invoices.c.attempt_count,
        invoices.c.failing_since,
        invoices.c.livemode,
    )
    .select_from(
        invoices.outerjoin(
            subscriptions, subscriptions.c.id == invoices.c.subscription_id
        ).outerjoin(products, products.c.id == subscriptions.c.product_id)
    )
    .where(invoices.c.payment_failing)
    .order_by(invoices.c.failing_since.desc(), invoices.c.id.desc())
)
# Stripe's currency codes are lower case, so grouping the column as it is stays in index order.
_TOTALS = (
    select(
        invoices.c.currency,
        func.count().label("invoices"),
        func.coalesce(func.sum(invoices.c.amount_due), 0).label("amount_due"),
    )
    .where(invoices.c.payment_failing)
    .group_by(invoices.c.currency)
)


def _row(row: Any) -> FailingInvoice:
    product_id = row.product_id
    return FailingInvoice(
        id=row.id,
        subscription_id=row.subscription_id,
        product_id=product_id,
        plan_name=None if product_id is None else plan_name_for(product_id, row.name),
        amount_due=row.amount_due,
        currency=row.currency,
        attempts=row.attempt_count,
        failing_since=row.failing_since,
        livemode=bool(row.livemode),
    )


def failing_invoice_page(
    *, conn: Connection, limit: int = 50, after: Cursor | None = None
) -> FailingPage:
    """One page of the failing invoices, newest failure first, continuing after `after`."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    statement = _PAGE
    if after is not None:
        key = tuple_(invoices.c.failing_since, invoices.c.id)
        statement = statement.where(key < tuple_(after.failing_since, after.invoice_id))
    # One more than asked tells whether another page follows.
    rows = [_row(row) for row in conn.execute(statement.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = Cursor(rows[-1].failing_since, rows[-1].id) if more else None
    return FailingPage(rows, next_cursor)


def failing_totals(*, conn: Connection) -> list[CurrencyTotal]:
    """Failing invoices and their amount due per currency, the most invoices first."""
    totals = [
        CurrencyTotal(row.currency, int(row.invoices), int(row.amount_due))
        for row in conn.execute(_TOTALS)
    ]
    totals.sort(key=lambda total: (-total.invoices, total.currency or ""))
    return totals


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
    return [
        formula_safe(row.id),
        formula_safe(row.subscription_id or ""),
        formula_safe(row.plan_name or ""),
        amount,
        (row.currency or "").upper(),
        "" if row.attempts is None else row.attempts,
        iso_time(row.failing_since),
        row.stripe_url,
    ]
