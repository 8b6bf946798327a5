"""the daily history dated by Stripe's own dates: start, cancel and end of each subscription

`subscriptions` gains `started_at` (Stripe's `start_date`, else `created`), `canceled_at`
(`canceled_at`, else `ended_at`) and `ended_at` (`ended_at`, else `canceled_at`), the last
two set only once the subscription is canceled. The count triggers now date the history by
them: a subscription is new on the day it started, stops being active on the day it ended and
is counted canceled on the day it was canceled; any other move of plan or status lands on the
UTC day of the event's `created` (for an API read, the time it was read). A change of those
dates (a `sync` that learns a start date the store did not know) moves the subscription's
contribution from the old day to the new one. So the history is a recount of the
subscriptions' own dates plus the moves the store saw, and its sum per (plan, status) is
`subscription_counts`, in the same trigger as before.

What is stored is re-dated: rows written before this revision take their dates from the
stored payload of the event that set their state where it is still kept, else from when the
store last wrote them (a `sync` corrects them), and the history is rebuilt from those dates
in one set-based statement. `subscription_history_observed` remembers the day from which the
history is observed (the day of this revision); the days before it are reconstructed.

Revision ID: 0012_history_stripe_dates
Revises: 0011_invoice_collections
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

import finance_core.store.models

revision: str = "0012_history_stripe_dates"
down_revision: str | None = "0011_invoice_collections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HISTORY_ADD = """
    ON CONFLICT (day, product_id, status) DO UPDATE SET
        subscription_change = subscription_history.subscription_change
            + excluded.subscription_change,
        new_subscriptions = subscription_history.new_subscriptions + excluded.new_subscriptions,
        cancellations = subscription_history.cancellations + excluded.cancellations;
"""


def _day(dialect: str, moment: str) -> str:
    """The UTC day of a UTCDateTime (naive UTC) expression."""
    return f"date({moment})" if dialect == "sqlite" else f"({moment})::date"


def _epoch_day(dialect: str, seconds: str) -> str:
    if dialect == "sqlite":
        return f"date({seconds}, 'unixepoch')"
    return f"(to_timestamp({seconds}) AT TIME ZONE 'UTC')::date"


def _terms(dialect: str, row: str) -> dict[str, str]:
    """The day and flag expressions of one row (`NEW`, `OLD` or a table alias)."""
    return {
        "born": _day(dialect, f"coalesce({row}.started_at, {row}.updated_at)"),
        "ended": _day(dialect, f"coalesce({row}.ended_at, {row}.canceled_at, {row}.updated_at)"),
        "canceled_on": _day(
            dialect, f"coalesce({row}.canceled_at, {row}.ended_at, {row}.updated_at)"
        ),
        "canceled": f"(CASE WHEN {row}.status = 'canceled' THEN 1 ELSE 0 END)",
        "expired": f"(CASE WHEN {row}.status = 'incomplete_expired' THEN 1 ELSE 0 END)",
        # A canceled subscription's status before it ended is not known: counted `active`.
        "alive": f"(CASE WHEN {row}.status = 'canceled' THEN 'active' ELSE {row}.status END)",
        "plan": f"{row}.product_id",
        "status": f"{row}.status",
    }


Row = tuple[str, str, str, str, str, str]  # day, plan, status, change, new, canceled


def born_rows(dialect: str, row: str) -> list[Row]:
    """What one subscription adds to the history from its own dates: active (in its status,
    `active` if canceled) from the day it started, new that day unless it expired incomplete;
    ended and canceled on its own days."""
    t = _terms(dialect, row)
    return [
        (t["born"], t["plan"], t["alive"], "1", f"1 - {t['expired']}", "0"),
        (t["ended"], t["plan"], "'active'", f"-{t['canceled']}", "0", "0"),
        (t["ended"], t["plan"], "'canceled'", t["canceled"], "0", "0"),
        (t["canceled_on"], t["plan"], "'canceled'", "0", "0", t["canceled"]),
    ]


def update_rows(dialect: str) -> list[Row]:
    """What an update adds: its dates moved, then its move of plan or status."""
    old, new = _terms(dialect, "OLD"), _terms(dialect, "NEW")
    still = f"({old['canceled']} * {new['canceled']})"  # canceled before and after
    moved = (
        "(CASE WHEN OLD.product_id <> NEW.product_id OR OLD.status <> NEW.status THEN 1 ELSE 0 END)"
    )
    becomes_canceled = f"({new['canceled']} * (1 - {old['canceled']}))"
    becomes_expired = f"({new['expired']} * (1 - {old['expired']}))"
    move_day = (
        f"(CASE WHEN {becomes_canceled} = 1 THEN {new['ended']} "
        f"ELSE {_epoch_day(dialect, 'NEW.state_created')} END)"
    )
    return [
        # The start moved: the first day moves, in the current plan and status.
        (old["born"], "OLD.product_id", old["alive"], "-1", f"{old['expired']} - 1", "0"),
        (new["born"], "OLD.product_id", old["alive"], "1", f"1 - {old['expired']}", "0"),
        # A canceled one's end or cancel date moved.
        (old["ended"], "OLD.product_id", "'active'", still, "0", "0"),
        (old["ended"], "OLD.product_id", "'canceled'", f"-{still}", "0", "0"),
        (new["ended"], "OLD.product_id", "'active'", f"-{still}", "0", "0"),
        (new["ended"], "OLD.product_id", "'canceled'", still, "0", "0"),
        (old["canceled_on"], "OLD.product_id", "'canceled'", "0", "0", f"-{still}"),
        (new["canceled_on"], "OLD.product_id", "'canceled'", "0", "0", still),
        # The move itself: on the day it ended if it is the cancellation, else on the event's.
        (move_day, "OLD.product_id", "OLD.status", f"-{moved}", "0", "0"),
        (move_day, "NEW.product_id", "NEW.status", moved, "0", "0"),
        (new["canceled_on"], "NEW.product_id", "'canceled'", "0", "0", becomes_canceled),
        # Expired incomplete: it never started after all.
        (new["born"], "NEW.product_id", "'incomplete_expired'", "0", f"-{becomes_expired}", "0"),
    ]


_NAMES = ("day", "product_id", "status", "change", "new", "canceled")


def _union(rows: list[Row], source: str = "") -> str:
    return " UNION ALL ".join(
        "SELECT "
        + ", ".join(f"{expr} AS {name}" for expr, name in zip(row, _NAMES, strict=True))
        + source
        for row in rows
    )


def history_insert(rows: list[Row], source: str = "") -> str:
    """Add rows to the history, summed per key, zero rows left out, in key order (the order
    PostgreSQL locks them in, so that concurrent writers cannot deadlock)."""
    return f"""
        INSERT INTO subscription_history
            (day, product_id, status, subscription_change, new_subscriptions, cancellations)
        SELECT v.day, v.product_id, v.status, sum(v.change), sum(v.new), sum(v.canceled)
        FROM ({_union(rows, source)}) AS v
        WHERE true
        GROUP BY v.day, v.product_id, v.status
        HAVING sum(v.change) <> 0 OR sum(v.new) <> 0 OR sum(v.canceled) <> 0
        ORDER BY v.day, v.product_id, v.status
        {_HISTORY_ADD}
    """


_SQLITE_MOVED = "(OLD.product_id <> NEW.product_id OR OLD.status <> NEW.status)"
_DATES_CHANGED = (
    "OLD.started_at IS DISTINCT FROM NEW.started_at "
    "OR OLD.canceled_at IS DISTINCT FROM NEW.canceled_at "
    "OR OLD.ended_at IS DISTINCT FROM NEW.ended_at"
)


def sqlite_triggers() -> list[str]:
    changed = _DATES_CHANGED.replace("IS DISTINCT FROM", "IS NOT")
    return [
        "DROP TRIGGER subscription_counts_on_insert",
        "DROP TRIGGER subscription_counts_on_update",
        f"""
        CREATE TRIGGER subscription_counts_on_insert AFTER INSERT ON subscriptions
        BEGIN
            INSERT INTO subscription_counts (product_id, status, subscription_count)
            VALUES (NEW.product_id, NEW.status, 1)
            ON CONFLICT (product_id, status)
            DO UPDATE SET subscription_count = subscription_count + 1;
            {history_insert(born_rows("sqlite", "NEW"))}
        END
        """,
        f"""
        CREATE TRIGGER subscription_counts_on_update
        AFTER UPDATE OF product_id, status, started_at, canceled_at, ended_at ON subscriptions
        WHEN {_SQLITE_MOVED} OR {changed}
        BEGIN
            UPDATE subscription_counts SET subscription_count = subscription_count - 1
            WHERE product_id = OLD.product_id AND status = OLD.status AND {_SQLITE_MOVED};
            INSERT INTO subscription_counts (product_id, status, subscription_count)
            SELECT NEW.product_id, NEW.status, 1 WHERE {_SQLITE_MOVED}
            ON CONFLICT (product_id, status)
            DO UPDATE SET subscription_count = subscription_count + 1;
            {history_insert(update_rows("sqlite"))}
        END
        """,
    ]


def postgresql_triggers() -> list[str]:
    return [
        "DROP TRIGGER subscription_counts_follow ON subscriptions",
        f"""
        CREATE OR REPLACE FUNCTION subscription_counts_follow() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO subscription_counts (product_id, status, subscription_count)
                VALUES (NEW.product_id, NEW.status, 1)
                ON CONFLICT (product_id, status)
                DO UPDATE SET subscription_count = subscription_counts.subscription_count + 1;
                {history_insert(born_rows("postgresql", "NEW"))}
                RETURN NULL;
            END IF;
            IF OLD.product_id = NEW.product_id AND OLD.status = NEW.status
               AND NOT ({_DATES_CHANGED}) THEN
                RETURN NULL;
            END IF;
            IF OLD.product_id <> NEW.product_id OR OLD.status <> NEW.status THEN
                -- One order of row locks for every transaction, so that two subscriptions
                -- moving in opposite directions cannot deadlock: the lower key first.
                IF (OLD.product_id, OLD.status) < (NEW.product_id, NEW.status) THEN
                    UPDATE subscription_counts SET subscription_count = subscription_count - 1
                    WHERE product_id = OLD.product_id AND status = OLD.status;
                END IF;
                INSERT INTO subscription_counts (product_id, status, subscription_count)
                VALUES (NEW.product_id, NEW.status, 1)
                ON CONFLICT (product_id, status)
                DO UPDATE SET subscription_count = subscription_counts.subscription_count + 1;
                IF (OLD.product_id, OLD.status) > (NEW.product_id, NEW.status) THEN
                    UPDATE subscription_counts SET subscription_count = subscription_count - 1
                    WHERE product_id = OLD.product_id AND status = OLD.status;
                END IF;
            END IF;
            {history_insert(update_rows("postgresql"))}
            RETURN NULL;
        END
        $$
        """,
        """
        CREATE TRIGGER subscription_counts_follow
        AFTER INSERT OR UPDATE OF product_id, status, started_at, canceled_at, ended_at
        ON subscriptions FOR EACH ROW EXECUTE FUNCTION subscription_counts_follow()
        """,
    ]


def rebuild_statement(dialect: str) -> str:
    """The whole history recounted from every subscription's own dates, set-based: each
    subscription unnested into its four contributions, summed per (day, plan, status). Run on
    an empty history (no conflicts)."""
    return history_insert(born_rows(dialect, "s"), " FROM subscriptions AS s")


_TODAY = {"sqlite": "date('now')", "postgresql": "(now() AT TIME ZONE 'UTC')::date"}
# Where the payload of the event that set a row's state is still kept (a failed event), its
# dates; JSON read in SQL on each dialect.
_PAYLOAD_TIME = {
    "sqlite": "datetime(json_extract(e.payload, '$.data.object.{key}'), 'unixepoch')",
    "postgresql": "(to_timestamp((e.payload::jsonb #>> '{{data,object,{key}}}')::bigint) "
    "AT TIME ZONE 'UTC')",
}


def _redate_existing(dialect: str) -> None:
    def stored(key: str) -> str:
        return (
            f"(SELECT {_PAYLOAD_TIME[dialect].format(key=key)} FROM webhook_events AS e "
            "WHERE e.id = subscriptions.state_event_id AND e.payload IS NOT NULL)"
        )

    op.execute(
        "UPDATE subscriptions SET "
        f"started_at = coalesce({stored('start_date')}, {stored('created')}, updated_at)"
    )
    op.execute(
        "UPDATE subscriptions SET "
        f"canceled_at = coalesce({stored('canceled_at')}, {stored('ended_at')}, updated_at), "
        f"ended_at = coalesce({stored('ended_at')}, {stored('canceled_at')}, updated_at) "
        "WHERE status = 'canceled'"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        for column in ("started_at", "canceled_at", "ended_at"):
            batch_op.add_column(
                sa.Column(column, finance_core.store.models.UTCDateTime(), nullable=True)
            )
    op.create_table(
        "subscription_history_observed",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("observed_since", sa.Date(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_subscription_history_observed_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_history_observed")),
    )
    op.execute(
        "INSERT INTO subscription_history_observed (id, observed_since) "
        f"VALUES (1, {_TODAY[dialect]})"
    )
    # The dates before the new triggers (the old ones do not follow them), then the history
    # recounted once, instead of a trigger's statements per row.
    _redate_existing(dialect)
    for statement in sqlite_triggers() if dialect == "sqlite" else postgresql_triggers():
        op.execute(statement)
    op.execute("DELETE FROM subscription_history")
    op.execute(rebuild_statement(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    previous = context.script.get_revision("0009_history_retention").module
    op.drop_table("subscription_history_observed")
    if dialect == "postgresql":
        op.execute("DROP TRIGGER subscription_counts_follow ON subscriptions")
    else:  # SQLite: the triggers name the columns about to go
        op.execute("DROP TRIGGER subscription_counts_on_insert")
        op.execute("DROP TRIGGER subscription_counts_on_update")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        for column in ("ended_at", "canceled_at", "started_at"):
            batch_op.drop_column(column)
    # The triggers of 0009 again (the history stays as it is dated now).
    if dialect == "sqlite":
        for statement in previous.SQLITE[2:]:
            op.execute(statement)
    else:
        op.execute(previous.POSTGRESQL[0])
        counts = context.script.get_revision("0003_count_triggers").module
        op.execute(counts.POSTGRESQL[1])
