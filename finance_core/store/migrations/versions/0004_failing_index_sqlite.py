"""the failing-invoices index usable by SQLite's failed-payments count

SQLAlchemy renders `WHERE invoices.payment_failing` as `payment_failing = 1` on SQLite, which
SQLite's planner does not match to a partial index declared `WHERE payment_failing`: the count
read every invoice (145 ms p95 at a million invoices). PostgreSQL was already served.

Revision ID: 0004_failing_index_sqlite
Revises: 0003_count_triggers
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_failing_index_sqlite"
down_revision: str | None = "0003_count_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _recreate(where: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_invoices_failing", table_name="invoices")
    op.create_index(
        "ix_invoices_failing", "invoices", ["payment_failing"], sqlite_where=sa.text(where)
    )


def upgrade() -> None:
    _recreate("payment_failing = 1")


def downgrade() -> None:
    _recreate("payment_failing")
