"""what collections need per invoice: customer, its own plan, retries, and how it closed

Adds the invoice's customer id, its own product (its first line's), the next retry Stripe
plans, the amount paid, when it first failed (kept after it closes) and when it closed, with
two partial indexes over the invoices that ever failed: Recovered by how and when they
closed, the recovery rate over the closed ones by first failure. Invoices failing at the upgrade count as first failing at
their `failing_since`; closures before it are not known.

Revision ID: 0011_invoice_collections
Revises: 0010_digest
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import finance_core.store.models

revision: str = "0011_invoice_collections"
down_revision: str | None = "0010_digest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EVER_FAILED = "first_failed_at IS NOT NULL"
_FAILED_THEN_CLOSED = "first_failed_at IS NOT NULL AND closed_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("product_id", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column(
                "next_payment_attempt", finance_core.store.models.UTCDateTime(), nullable=True
            )
        )
        batch_op.add_column(sa.Column("amount_paid", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("first_failed_at", finance_core.store.models.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("closed_at", finance_core.store.models.UTCDateTime(), nullable=True)
        )
    op.execute("UPDATE invoices SET first_failed_at = failing_since WHERE payment_failing")
    op.create_index(
        "ix_invoices_closed_after_failing",
        "invoices",
        ["status", "closed_at", "currency", "amount_paid", "first_failed_at"],
        sqlite_where=sa.text(_EVER_FAILED),
        postgresql_where=sa.text(_EVER_FAILED),
    )
    op.create_index(
        "ix_invoices_failed_then_closed",
        "invoices",
        ["first_failed_at", "status", "closed_at"],
        sqlite_where=sa.text(_FAILED_THEN_CLOSED),
        postgresql_where=sa.text(_FAILED_THEN_CLOSED),
    )


def downgrade() -> None:
    op.drop_index("ix_invoices_failed_then_closed", table_name="invoices")
    op.drop_index("ix_invoices_closed_after_failing", table_name="invoices")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        for column in (
            "closed_at",
            "first_failed_at",
            "amount_paid",
            "next_payment_attempt",
            "product_id",
            "customer_id",
        ):
            batch_op.drop_column(column)
