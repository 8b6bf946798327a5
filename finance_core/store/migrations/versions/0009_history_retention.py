"""a daily subscription history kept by the count triggers, and when invoices began failing

The triggers of 0003 now also write `subscription_history`: on every change of a
subscription's plan or status, one more upsert (two rows on an update, in key order on
PostgreSQL so that concurrent moves cannot deadlock) adds the day's net change per (plan,
status) and counts the day's new subscriptions and cancellations. The day is the UTC date of
the row's `updated_at`, when the store saw the change. Existing counts start the history on
the day of this migration. The partial index of the failing invoices moves to
(failing_since, id), which serves the failed-payments count as before and the Payments page's
keyset pages too, and another over (currency, amount_due) gives the totals per currency from
the index alone; the invoices failing now are taken to fail since they were last written.

Revision ID: 0009_history_retention
Revises: 0008_admin_audit
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

import finance_core.store.models

revision: str = "0009_history_retention"
down_revision: str | None = "0008_admin_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_COUNT_UP = """
    INSERT INTO subscription_counts (product_id, status, subscription_count)
    VALUES (NEW.product_id, NEW.status, 1)
    ON CONFLICT (product_id, status) DO UPDATE SET subscription_count = subscription_count + 1;
"""
_HISTORY_ADD = """
    ON CONFLICT (day, product_id, status) DO UPDATE SET
        subscription_change = subscription_history.subscription_change
            + excluded.subscription_change,
        new_subscriptions = subscription_history.new_subscriptions + excluded.new_subscriptions,
        cancellations = subscription_history.cancellations + excluded.cancellations;
"""
_HISTORY_COLUMNS = (
    "INSERT INTO subscription_history "
    "(day, product_id, status, subscription_change, new_subscriptions, cancellations)"
)

SQLITE = [
    "DROP TRIGGER subscription_counts_on_insert",
    "DROP TRIGGER subscription_counts_on_update",
    f"""
    CREATE TRIGGER subscription_counts_on_insert AFTER INSERT ON subscriptions
    BEGIN
        {_SQLITE_COUNT_UP}
        {_HISTORY_COLUMNS}
        VALUES (date(NEW.updated_at), NEW.product_id, NEW.status, 1, 1, NEW.status = 'canceled')
        {_HISTORY_ADD}
    END
    """,
    f"""
    CREATE TRIGGER subscription_counts_on_update AFTER UPDATE OF product_id, status
    ON subscriptions
    WHEN OLD.product_id <> NEW.product_id OR OLD.status <> NEW.status
    BEGIN
        UPDATE subscription_counts SET subscription_count = subscription_count - 1
        WHERE product_id = OLD.product_id AND status = OLD.status;
        {_SQLITE_COUNT_UP}
        {_HISTORY_COLUMNS}
        VALUES (date(NEW.updated_at), OLD.product_id, OLD.status, -1, 0, 0),
               (date(NEW.updated_at), NEW.product_id, NEW.status, 1, 0,
                NEW.status = 'canceled' AND OLD.status <> 'canceled')
        {_HISTORY_ADD}
    END
    """,
]

POSTGRESQL = [
    f"""
    CREATE OR REPLACE FUNCTION subscription_counts_follow() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        seen_on date := NEW.updated_at::date;  -- naive UTC: the UTC day
        canceled int := (NEW.status = 'canceled')::int;
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.product_id = NEW.product_id AND OLD.status = NEW.status THEN
            RETURN NULL;
        END IF;
        -- One order of row locks for every transaction, so that two subscriptions moving in
        -- opposite directions cannot deadlock: the lower (plan, status) key first.
        IF TG_OP = 'UPDATE' AND (OLD.product_id, OLD.status) < (NEW.product_id, NEW.status) THEN
            UPDATE subscription_counts SET subscription_count = subscription_count - 1
            WHERE product_id = OLD.product_id AND status = OLD.status;
        END IF;
        INSERT INTO subscription_counts (product_id, status, subscription_count)
        VALUES (NEW.product_id, NEW.status, 1)
        ON CONFLICT (product_id, status)
        DO UPDATE SET subscription_count = subscription_counts.subscription_count + 1;
        IF TG_OP = 'UPDATE' AND (OLD.product_id, OLD.status) > (NEW.product_id, NEW.status) THEN
            UPDATE subscription_counts SET subscription_count = subscription_count - 1
            WHERE product_id = OLD.product_id AND status = OLD.status;
        END IF;
        -- The history's rows in the same key order (rows of one INSERT lock in VALUES order).
        IF TG_OP = 'INSERT' THEN
            {_HISTORY_COLUMNS}
            VALUES (seen_on, NEW.product_id, NEW.status, 1, 1, canceled)
            {_HISTORY_ADD}
        ELSE
            IF OLD.status = 'canceled' THEN
                canceled := 0;
            END IF;
            IF (OLD.product_id, OLD.status) < (NEW.product_id, NEW.status) THEN
                {_HISTORY_COLUMNS}
                VALUES (seen_on, OLD.product_id, OLD.status, -1, 0, 0),
                       (seen_on, NEW.product_id, NEW.status, 1, 0, canceled)
                {_HISTORY_ADD}
            ELSE
                {_HISTORY_COLUMNS}
                VALUES (seen_on, NEW.product_id, NEW.status, 1, 0, canceled),
                       (seen_on, OLD.product_id, OLD.status, -1, 0, 0)
                {_HISTORY_ADD}
            END IF;
        END IF;
        RETURN NULL;
    END
    $$
    """,
]

_TODAY = {"sqlite": "date('now')", "postgresql": "(now() AT TIME ZONE 'UTC')::date"}


def _failing_index(columns: list[str]) -> None:
    op.drop_index("ix_invoices_failing", table_name="invoices")
    op.create_index(
        "ix_invoices_failing",
        "invoices",
        columns,
        # As 0004 spelled it for SQLite's planner.
        sqlite_where=sa.text("payment_failing = 1"),
        postgresql_where=sa.text("payment_failing"),
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "subscription_history",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("subscription_change", sa.BigInteger(), nullable=False),
        sa.Column("new_subscriptions", sa.BigInteger(), nullable=False),
        sa.Column("cancellations", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "product_id", "status", name=op.f("pk_subscription_history")
        ),
    )
    # What the store holds today is where its history starts.
    op.execute(
        f"{_HISTORY_COLUMNS} SELECT {_TODAY[dialect]}, product_id, status, subscription_count, "
        "0, 0 FROM subscription_counts WHERE subscription_count <> 0"
    )
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failing_since", finance_core.store.models.UTCDateTime(), nullable=True)
        )
    op.execute("UPDATE invoices SET failing_since = updated_at WHERE payment_failing")
    _failing_index(["failing_since", "id"])
    op.create_index(
        "ix_invoices_failing_currency",
        "invoices",
        ["currency", "amount_due"],
        sqlite_where=sa.text("payment_failing = 1"),
        postgresql_where=sa.text("payment_failing"),
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_invoices_failing_currency", table_name="invoices")
    _failing_index(["payment_failing"])
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("failing_since")
    # The triggers of 0003 again, as that revision defines them.
    counts = context.script.get_revision("0003_count_triggers").module
    if dialect == "sqlite":
        op.execute("DROP TRIGGER subscription_counts_on_insert")
        op.execute("DROP TRIGGER subscription_counts_on_update")
        for statement in counts.SQLITE:
            op.execute(statement)
    else:
        op.execute(counts.POSTGRESQL[0].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.drop_table("subscription_history")
