"""subscription_counts maintained by triggers

The ingest path writes a subscription's state in one upsert; the database moves its count from
the old (plan, status) to the new one in the same statement, instead of two more round trips.

Revision ID: 0003_count_triggers
Revises: 0002_sync_runs
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_count_triggers"
down_revision: str | None = "0002_sync_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_COUNT_UP = """
    INSERT INTO subscription_counts (product_id, status, subscription_count)
    VALUES (NEW.product_id, NEW.status, 1)
    ON CONFLICT (product_id, status) DO UPDATE SET subscription_count = subscription_count + 1;
"""

SQLITE = [
    f"""
    CREATE TRIGGER subscription_counts_on_insert AFTER INSERT ON subscriptions
    BEGIN {_SQLITE_COUNT_UP} END
    """,
    f"""
    CREATE TRIGGER subscription_counts_on_update AFTER UPDATE OF product_id, status
    ON subscriptions
    WHEN OLD.product_id <> NEW.product_id OR OLD.status <> NEW.status
    BEGIN
        UPDATE subscription_counts SET subscription_count = subscription_count - 1
        WHERE product_id = OLD.product_id AND status = OLD.status;
        {_SQLITE_COUNT_UP}
    END
    """,
]

POSTGRESQL = [
    """
    CREATE FUNCTION subscription_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
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
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER subscription_counts_follow
    AFTER INSERT OR UPDATE OF product_id, status ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION subscription_counts_follow()
    """,
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER subscription_counts_on_insert")
        op.execute("DROP TRIGGER subscription_counts_on_update")
    else:
        op.execute("DROP TRIGGER subscription_counts_follow ON subscriptions")
        op.execute("DROP FUNCTION subscription_counts_follow()")
