"""the Payments page's totals kept by triggers on invoices, as subscription_counts is

Three tables follow every change of an invoice in the same statement: `failing_invoice_totals`
(per currency, the failing invoices and their amount due), `recovery_paid_daily` (per UTC day
of closing and currency, the invoices that had been failing and were paid, and the amount
paid) and `recovery_closings_daily` (per UTC day of first failure and status, the invoices
that failed and have closed). Each trigger moves an invoice's contribution from its old key
to its new one only when a column it counts changed, so an ordinary update costs nothing more;
on PostgreSQL the rows of one table are touched in key order, so that concurrent moves cannot
deadlock. The tables start from what the invoices hold. The index of the failing invoices by
currency, which only the totals read, goes.

Revision ID: 0014_payment_totals
Revises: 0013_feed_check
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_payment_totals"
down_revision: str | None = "0013_feed_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Key columns cannot be NULL: an invoice without a currency counts under ''.
_TOTALS_ADD = """
    ON CONFLICT (currency) DO UPDATE SET
        invoices = failing_invoice_totals.invoices + excluded.invoices,
        amount_due = failing_invoice_totals.amount_due + excluded.amount_due;
"""
_PAID_ADD = """
    ON CONFLICT (day, currency) DO UPDATE SET
        invoices = recovery_paid_daily.invoices + excluded.invoices,
        amount_paid = recovery_paid_daily.amount_paid + excluded.amount_paid;
"""
_CLOSINGS_ADD = """
    ON CONFLICT (day, status) DO UPDATE SET
        invoices = recovery_closings_daily.invoices + excluded.invoices;
"""
# What one invoice row counts for, in the same words on both databases.
_FAILING = "{r}.payment_failing"
_CLOSED_AFTER_FAILING = "{r}.first_failed_at IS NOT NULL AND {r}.closed_at IS NOT NULL"
_PAID_AFTER_FAILING = f"{_CLOSED_AFTER_FAILING} AND {{r}}.status = 'paid'"


def _sqlite_add(r: str) -> str:
    return f"""
    INSERT INTO failing_invoice_totals (currency, invoices, amount_due)
    SELECT coalesce({r}.currency, ''), 1, coalesce({r}.amount_due, 0)
    WHERE {_FAILING.format(r=r)}
    {_TOTALS_ADD}
    INSERT INTO recovery_paid_daily (day, currency, invoices, amount_paid)
    SELECT date({r}.closed_at), coalesce({r}.currency, ''), 1, coalesce({r}.amount_paid, 0)
    WHERE {_PAID_AFTER_FAILING.format(r=r)}
    {_PAID_ADD}
    INSERT INTO recovery_closings_daily (day, status, invoices)
    SELECT date({r}.first_failed_at), {r}.status, 1
    WHERE {_CLOSED_AFTER_FAILING.format(r=r)}
    {_CLOSINGS_ADD}
    """


def _sqlite_remove(r: str) -> str:
    return f"""
    UPDATE failing_invoice_totals SET invoices = invoices - 1,
        amount_due = amount_due - coalesce({r}.amount_due, 0)
    WHERE {_FAILING.format(r=r)} AND currency = coalesce({r}.currency, '');
    UPDATE recovery_paid_daily SET invoices = invoices - 1,
        amount_paid = amount_paid - coalesce({r}.amount_paid, 0)
    WHERE {_PAID_AFTER_FAILING.format(r=r)}
        AND day = date({r}.closed_at) AND currency = coalesce({r}.currency, '');
    UPDATE recovery_closings_daily SET invoices = invoices - 1
    WHERE {_CLOSED_AFTER_FAILING.format(r=r)}
        AND day = date({r}.first_failed_at) AND status = {r}.status;
    """


_COUNTED_COLUMNS = (
    "payment_failing",
    "currency",
    "amount_due",
    "status",
    "amount_paid",
    "first_failed_at",
    "closed_at",
)
_ANY_COUNTED_CHANGE = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _COUNTED_COLUMNS)
# An update that changes none of the counted columns, or only those of an invoice that
# neither fails nor ever failed, fires nothing.
_COUNTS_FOR = (
    f"({_ANY_COUNTED_CHANGE}) AND (OLD.payment_failing OR NEW.payment_failing "
    "OR OLD.first_failed_at IS NOT NULL OR NEW.first_failed_at IS NOT NULL)"
)

SQLITE = [
    f"""
    CREATE TRIGGER payment_totals_on_insert AFTER INSERT ON invoices
    WHEN NEW.payment_failing OR NEW.first_failed_at IS NOT NULL
    BEGIN {_sqlite_add("NEW")} END
    """,
    f"""
    CREATE TRIGGER payment_totals_on_update AFTER UPDATE ON invoices
    WHEN {_COUNTS_FOR}
    BEGIN {_sqlite_remove("OLD")} {_sqlite_add("NEW")} END
    """,
    f"""
    CREATE TRIGGER payment_totals_on_delete AFTER DELETE ON invoices
    WHEN OLD.payment_failing OR OLD.first_failed_at IS NOT NULL
    BEGIN {_sqlite_remove("OLD")} END
    """,
]

# On PostgreSQL, per table: take the old contribution off and put the new one on, as one
# change when the key stays, else the lower key first.
POSTGRESQL = [
    f"""
    CREATE FUNCTION payment_totals_follow() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        old_failing boolean := false;
        new_failing boolean := false;
        old_paid boolean := false;
        new_paid boolean := false;
        old_closed boolean := false;
        new_closed boolean := false;
        old_currency text;
        new_currency text;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            old_failing := OLD.payment_failing;
            old_closed := {_CLOSED_AFTER_FAILING.format(r="OLD")};
            old_paid := old_closed AND OLD.status = 'paid';
            old_currency := coalesce(OLD.currency, '');
        END IF;
        IF TG_OP <> 'DELETE' THEN
            new_failing := NEW.payment_failing;
            new_closed := {_CLOSED_AFTER_FAILING.format(r="NEW")};
            new_paid := new_closed AND NEW.status = 'paid';
            new_currency := coalesce(NEW.currency, '');
        END IF;
        IF TG_OP = 'UPDATE'
            AND OLD.payment_failing IS NOT DISTINCT FROM NEW.payment_failing
            AND OLD.currency IS NOT DISTINCT FROM NEW.currency
            AND OLD.amount_due IS NOT DISTINCT FROM NEW.amount_due
            AND OLD.status IS NOT DISTINCT FROM NEW.status
            AND OLD.amount_paid IS NOT DISTINCT FROM NEW.amount_paid
            AND OLD.first_failed_at IS NOT DISTINCT FROM NEW.first_failed_at
            AND OLD.closed_at IS NOT DISTINCT FROM NEW.closed_at THEN
            RETURN NULL;
        END IF;

        IF old_failing AND new_failing AND old_currency = new_currency THEN
            IF OLD.amount_due IS DISTINCT FROM NEW.amount_due THEN
                UPDATE failing_invoice_totals
                SET amount_due = amount_due + coalesce(NEW.amount_due, 0)
                    - coalesce(OLD.amount_due, 0)
                WHERE currency = new_currency;
            END IF;
        ELSE
            IF old_failing AND (NOT new_failing OR old_currency < new_currency) THEN
                UPDATE failing_invoice_totals SET invoices = invoices - 1,
                    amount_due = amount_due - coalesce(OLD.amount_due, 0)
                WHERE currency = old_currency;
            END IF;
            IF new_failing THEN
                INSERT INTO failing_invoice_totals (currency, invoices, amount_due)
                VALUES (new_currency, 1, coalesce(NEW.amount_due, 0))
                {_TOTALS_ADD}
            END IF;
            IF old_failing AND new_failing AND old_currency > new_currency THEN
                UPDATE failing_invoice_totals SET invoices = invoices - 1,
                    amount_due = amount_due - coalesce(OLD.amount_due, 0)
                WHERE currency = old_currency;
            END IF;
        END IF;

        IF old_paid AND new_paid
            AND (OLD.closed_at::date, old_currency) = (NEW.closed_at::date, new_currency) THEN
            IF OLD.amount_paid IS DISTINCT FROM NEW.amount_paid THEN
                UPDATE recovery_paid_daily
                SET amount_paid = amount_paid + coalesce(NEW.amount_paid, 0)
                    - coalesce(OLD.amount_paid, 0)
                WHERE day = NEW.closed_at::date AND currency = new_currency;
            END IF;
        ELSE
            IF old_paid AND (NOT new_paid OR (OLD.closed_at::date, old_currency)
                    < (NEW.closed_at::date, new_currency)) THEN
                UPDATE recovery_paid_daily SET invoices = invoices - 1,
                    amount_paid = amount_paid - coalesce(OLD.amount_paid, 0)
                WHERE day = OLD.closed_at::date AND currency = old_currency;
            END IF;
            IF new_paid THEN
                INSERT INTO recovery_paid_daily (day, currency, invoices, amount_paid)
                VALUES (NEW.closed_at::date, new_currency, 1, coalesce(NEW.amount_paid, 0))
                {_PAID_ADD}
            END IF;
            IF old_paid AND new_paid AND (OLD.closed_at::date, old_currency)
                    > (NEW.closed_at::date, new_currency) THEN
                UPDATE recovery_paid_daily SET invoices = invoices - 1,
                    amount_paid = amount_paid - coalesce(OLD.amount_paid, 0)
                WHERE day = OLD.closed_at::date AND currency = old_currency;
            END IF;
        END IF;

        IF NOT (old_closed AND new_closed
                AND (OLD.first_failed_at::date, OLD.status)
                    = (NEW.first_failed_at::date, NEW.status)) THEN
            IF old_closed AND (NOT new_closed OR (OLD.first_failed_at::date, OLD.status)
                    < (NEW.first_failed_at::date, NEW.status)) THEN
                UPDATE recovery_closings_daily SET invoices = invoices - 1
                WHERE day = OLD.first_failed_at::date AND status = OLD.status;
            END IF;
            IF new_closed THEN
                INSERT INTO recovery_closings_daily (day, status, invoices)
                VALUES (NEW.first_failed_at::date, NEW.status, 1)
                {_CLOSINGS_ADD}
            END IF;
            IF old_closed AND new_closed AND (OLD.first_failed_at::date, OLD.status)
                    > (NEW.first_failed_at::date, NEW.status) THEN
                UPDATE recovery_closings_daily SET invoices = invoices - 1
                WHERE day = OLD.first_failed_at::date AND status = OLD.status;
            END IF;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE TRIGGER payment_totals_follow
    AFTER INSERT OR DELETE OR UPDATE OF {", ".join(_COUNTED_COLUMNS)} ON invoices
    FOR EACH ROW EXECUTE FUNCTION payment_totals_follow()
    """,
]

_DAY = {"sqlite": "date({})", "postgresql": "({})::date"}
_FAILING_WHERE = {"sqlite": "payment_failing = 1", "postgresql": "payment_failing"}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "failing_invoice_totals",
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("invoices", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("currency", name=op.f("pk_failing_invoice_totals")),
    )
    op.create_table(
        "recovery_paid_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("invoices", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "currency", name=op.f("pk_recovery_paid_daily")),
    )
    op.create_table(
        "recovery_closings_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("invoices", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "status", name=op.f("pk_recovery_closings_daily")),
    )
    # What the invoices hold now is where the totals start.
    day = _DAY[dialect]
    op.execute(
        "INSERT INTO failing_invoice_totals (currency, invoices, amount_due) "
        "SELECT coalesce(currency, ''), count(*), coalesce(sum(amount_due), 0) FROM invoices "
        f"WHERE {_FAILING_WHERE[dialect]} GROUP BY coalesce(currency, '')"
    )
    paid_day = day.format("closed_at")
    op.execute(
        "INSERT INTO recovery_paid_daily (day, currency, invoices, amount_paid) "
        f"SELECT {paid_day}, coalesce(currency, ''), count(*), coalesce(sum(amount_paid), 0) "
        f"FROM invoices WHERE {_PAID_AFTER_FAILING.format(r='invoices')} "
        f"GROUP BY {paid_day}, coalesce(currency, '')"
    )
    failed_day = day.format("first_failed_at")
    op.execute(
        "INSERT INTO recovery_closings_daily (day, status, invoices) "
        f"SELECT {failed_day}, status, count(*) FROM invoices "
        f"WHERE {_CLOSED_AFTER_FAILING.format(r='invoices')} GROUP BY {failed_day}, status"
    )
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)
    op.drop_index("ix_invoices_failing_currency", table_name="invoices")


def downgrade() -> None:
    op.create_index(
        "ix_invoices_failing_currency",
        "invoices",
        ["currency", "amount_due"],
        sqlite_where=sa.text("payment_failing = 1"),
        postgresql_where=sa.text("payment_failing"),
    )
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER payment_totals_on_{trigger}")
    else:
        op.execute("DROP TRIGGER payment_totals_follow ON invoices")
        op.execute("DROP FUNCTION payment_totals_follow()")
    op.drop_table("recovery_closings_daily")
    op.drop_table("recovery_paid_daily")
    op.drop_table("failing_invoice_totals")
