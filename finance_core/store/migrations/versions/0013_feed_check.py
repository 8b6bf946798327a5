"""feed check: Stripe's own view of the feed (SPEC 17), one row with its claim and result

`feed_check` holds the latest check's time, verdict, the problem that makes health `error`
(read by the health statement), the whole report as JSON, an admin's request to check now,
and the claim (`claimed_until`, `claimed_by`) that lets one process at a time run the check.

Revision ID: 0013_feed_check
Revises: 0012_history_stripe_dates
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import finance_core.store.models

revision: str = "0013_feed_check"
down_revision: str | None = "0012_history_stripe_dates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "feed_check",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("checked_at", finance_core.store.models.UTCDateTime(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("requested_at", finance_core.store.models.UTCDateTime(), nullable=True),
        sa.Column("claimed_until", finance_core.store.models.UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_check")),
    )
    op.bulk_insert(table, [{"id": 1}])


def downgrade() -> None:
    op.drop_table("feed_check")
