"""the daily history keeps one row per day and plan, a column per status

`subscription_history` had a row per (day, plan, status): a year of 20 plans in five statuses
is 34,000 rows, and a 365-day trend read them all (17 ms of a 35-42 ms answer at a million
subscriptions). Now a row per (day, plan) holds the day's net change of each of Stripe's
subscription statuses in its own column (`other_statuses` for a status Stripe may add), with
the day's new subscriptions and cancellations: 7,300 rows a year, and a window's active count
is a sum of columns. The triggers of 0012 keep the same rules (what each insert and update
adds, from the same row builders); only the last step changes, summing the candidate rows per
(day, plan) into the columns before the upsert, still in key order on PostgreSQL. On SQLite the
common move (a change of plan or status, the dates as they were) gets a trigger of its own that
upserts its two rows directly, and so does a new subscription that is not canceled or expired
(its one row, its start).

Existing rows are folded into the new shape in one statement. Going down spreads them back
out per status; new subscriptions are put on the `active` row and cancellations on the
`canceled` row of their day and plan, which is all the readers of that shape used.

Revision ID: 0015_history_by_plan
Revises: 0014_payment_totals
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import context, op

revision: str = "0015_history_by_plan"
down_revision: str | None = "0014_payment_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in finance_core.store.models at this revision (a migration does not follow later models).
STATUSES = (
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)
OTHER = "other_statuses"
COLUMNS = (*STATUSES, OTHER)
_KNOWN = ", ".join(f"'{status}'" for status in STATUSES)


def _by_status(status_expr: str, change_expr: str) -> dict[str, str]:
    """Each column's sum of `change_expr` over the rows whose status is the column's."""
    sums = {
        status: f"sum(CASE WHEN {status_expr} = '{status}' THEN {change_expr} ELSE 0 END)"
        for status in STATUSES
    }
    sums[OTHER] = f"sum(CASE WHEN {status_expr} NOT IN ({_KNOWN}) THEN {change_expr} ELSE 0 END)"
    return sums


_UPSERT = (
    "ON CONFLICT (day, product_id) DO UPDATE SET "
    + ", ".join(f"{name} = subscription_history.{name} + excluded.{name}" for name in COLUMNS)
    + ", new_subscriptions = subscription_history.new_subscriptions + excluded.new_subscriptions"
    + ", cancellations = subscription_history.cancellations + excluded.cancellations"
)
_INSERT = (
    "INSERT INTO subscription_history (day, product_id, "
    + ", ".join(COLUMNS)
    + ", new_subscriptions, cancellations)"
)


def history_insert(rows: list[tuple[str, ...]], source: str = "") -> str:
    """Add 0012's candidate rows (day, plan, status, change, new, canceled) to the history,
    summed per (day, plan) into the status columns, rows of nothing left out, in key order (the
    order PostgreSQL locks them in, so that concurrent writers cannot deadlock)."""
    union = " UNION ALL ".join(
        "SELECT "
        + ", ".join(
            f"{expr} AS {name}"
            for expr, name in zip(
                row, ("day", "product_id", "status", "change", "new", "canceled"), strict=True
            )
        )
        + source
        for row in rows
    )
    sums = _by_status("v.status", "v.change")
    summed = ", ".join(f"{expr} AS {name}" for name, expr in sums.items())
    totals = (*COLUMNS, "new_subscriptions", "cancellations")
    anything = " OR ".join(f"g.{name} <> 0" for name in totals)
    return f"""
        {_INSERT}
        SELECT g.day, g.product_id, {", ".join(f"g.{name}" for name in totals)}
        FROM (
            SELECT v.day AS day, v.product_id AS product_id, {summed},
                   sum(v.new) AS new_subscriptions, sum(v.canceled) AS cancellations
            FROM ({union}) AS v
            GROUP BY v.day, v.product_id
        ) AS g
        WHERE {anything}
        ORDER BY g.day, g.product_id
        {_UPSERT};
    """


def _earlier() -> ModuleType:
    return context.script.get_revision("0012_history_stripe_dates").module


def _flag(status: str, row: str) -> str:
    """1 when the row's status is in this history column, else 0 (SQLite's booleans)."""
    if status == OTHER:
        return f"({row}.status NOT IN ({_KNOWN}))"
    return f"({row}.status = '{status}')"


# The common move, on SQLite: a subscription changes plan or status, its dates as they were and
# known, and it is not its cancellation or expiry. Of 0012's twelve candidate rows only the
# move's two remain (the others cancel out): two upserts, not twelve rows to build and group.
# The writer's CPU per event: see docs/performance.md.
_COMMON_MOVE = (
    "(OLD.product_id <> NEW.product_id OR OLD.status <> NEW.status) "
    "AND NEW.status NOT IN ('canceled', 'incomplete_expired') "
    "AND NEW.started_at IS NOT NULL AND OLD.started_at IS NEW.started_at "
    "AND OLD.canceled_at IS NEW.canceled_at AND OLD.ended_at IS NEW.ended_at"
)
_COUNTS_MOVE = """
    UPDATE subscription_counts SET subscription_count = subscription_count - 1
    WHERE product_id = OLD.product_id AND status = OLD.status AND {moved};
    INSERT INTO subscription_counts (product_id, status, subscription_count)
    SELECT NEW.product_id, NEW.status, 1 WHERE {moved}
    ON CONFLICT (product_id, status)
    DO UPDATE SET subscription_count = subscription_count + 1;
"""


_COUNTS_NEW = """
    INSERT INTO subscription_counts (product_id, status, subscription_count)
    VALUES (NEW.product_id, NEW.status, 1)
    ON CONFLICT (product_id, status)
    DO UPDATE SET subscription_count = subscription_count + 1;
"""


def sqlite_triggers(earlier: ModuleType) -> list[str]:
    changed = earlier._DATES_CHANGED.replace("IS DISTINCT FROM", "IS NOT")
    moved = earlier._SQLITE_MOVED
    move_day = earlier._epoch_day("sqlite", "NEW.state_created")
    left = ", ".join(f"-{_flag(name, 'OLD')}" for name in COLUMNS)
    joined = ", ".join(_flag(name, "NEW") for name in COLUMNS)
    born = earlier._terms("sqlite", "NEW")["born"]
    return [
        f"""
        CREATE TRIGGER subscription_counts_on_insert AFTER INSERT ON subscriptions
        WHEN NEW.status IN ('canceled', 'incomplete_expired')
        BEGIN
            {_COUNTS_NEW}
            {history_insert(earlier.born_rows("sqlite", "NEW"))}
        END
        """,
        # Not canceled nor expired: of its four candidate rows only its start remains.
        f"""
        CREATE TRIGGER subscription_counts_on_start AFTER INSERT ON subscriptions
        WHEN NEW.status NOT IN ('canceled', 'incomplete_expired')
        BEGIN
            {_COUNTS_NEW}
            {_INSERT} VALUES ({born}, NEW.product_id, {joined}, 1, 0)
            {_UPSERT};
        END
        """,
        f"""
        CREATE TRIGGER subscription_counts_on_update
        AFTER UPDATE OF product_id, status, started_at, canceled_at, ended_at ON subscriptions
        WHEN ({moved} OR {changed}) AND NOT ({_COMMON_MOVE})
        BEGIN
            {_COUNTS_MOVE.format(moved=moved)}
            {history_insert(earlier.update_rows("sqlite"))}
        END
        """,
        f"""
        CREATE TRIGGER subscription_counts_on_move
        AFTER UPDATE OF product_id, status, started_at, canceled_at, ended_at ON subscriptions
        WHEN {_COMMON_MOVE}
        BEGIN
            {_COUNTS_MOVE.format(moved="true")}
            {_INSERT} VALUES ({move_day}, OLD.product_id, {left}, 0, 0)
            {_UPSERT};
            {_INSERT} VALUES ({move_day}, NEW.product_id, {joined}, 0, 0)
            {_UPSERT};
        END
        """,
    ]


def postgresql_function(earlier: ModuleType) -> str:
    """0012's function with the history written by plan: the same statements otherwise."""
    function: str = earlier.postgresql_triggers()[1]
    for rows in (earlier.born_rows("postgresql", "NEW"), earlier.update_rows("postgresql")):
        old = earlier.history_insert(rows)
        if old not in function:
            raise RuntimeError("0012's trigger function is not as this migration expects")
        function = function.replace(old, history_insert(rows))
    return function


def _drop_triggers(dialect: str, *names: str) -> None:
    if dialect == "sqlite":
        for name in ("subscription_counts_on_insert", "subscription_counts_on_update", *names):
            op.execute(f"DROP TRIGGER {name}")


def _history_table(columns: list[sa.Column[int]], key: tuple[str, ...]) -> None:
    op.create_table(
        "subscription_history",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("product_id", sa.String(length=255), nullable=False),
        *columns,
        sa.Column("new_subscriptions", sa.BigInteger(), nullable=False),
        sa.Column("cancellations", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_subscription_history")),
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    earlier = _earlier()
    _drop_triggers(dialect)
    sums = _by_status("status", "subscription_change")
    op.execute(
        "CREATE TEMPORARY TABLE history_by_plan AS SELECT day, product_id, "
        + ", ".join(f"{expr} AS {name}" for name, expr in sums.items())
        + ", sum(new_subscriptions) AS new_subscriptions, sum(cancellations) AS cancellations "
        "FROM subscription_history GROUP BY day, product_id"
    )
    op.drop_table("subscription_history")
    _history_table(
        [
            sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            for name in COLUMNS
        ],
        ("day", "product_id"),
    )
    op.execute(
        f"{_INSERT} SELECT day, product_id, {', '.join(COLUMNS)}, new_subscriptions, "
        "cancellations FROM history_by_plan"
    )
    op.execute("DROP TABLE history_by_plan")
    if dialect == "sqlite":
        for statement in sqlite_triggers(earlier):
            op.execute(statement)
    else:
        op.execute(postgresql_function(earlier))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    earlier = _earlier()
    _drop_triggers(dialect, "subscription_counts_on_move", "subscription_counts_on_start")
    spread = " UNION ALL ".join(
        f"SELECT day, product_id, '{name if name != OTHER else 'other'}' AS status, "
        f"{name} AS change, "
        f"{'new_subscriptions' if name == 'active' else '0'} AS new, "
        f"{'cancellations' if name == 'canceled' else '0'} AS canceled "
        "FROM subscription_history"
        for name in COLUMNS
    )
    op.execute(
        "CREATE TEMPORARY TABLE history_by_status AS "
        "SELECT day, product_id, status, change, new, canceled "
        f"FROM ({spread}) AS s WHERE change <> 0 OR new <> 0 OR canceled <> 0"
    )
    op.drop_table("subscription_history")
    _history_table(
        [
            sa.Column("status", sa.String(length=64), nullable=False),
            sa.Column("subscription_change", sa.BigInteger(), nullable=False),
        ],
        ("day", "product_id", "status"),
    )
    op.execute(
        "INSERT INTO subscription_history (day, product_id, status, subscription_change, "
        "new_subscriptions, cancellations) "
        "SELECT day, product_id, status, change, new, canceled FROM history_by_status"
    )
    op.execute("DROP TABLE history_by_status")
    if dialect == "sqlite":
        for statement in earlier.sqlite_triggers()[2:]:
            op.execute(statement)
    else:
        op.execute(earlier.postgresql_triggers()[1])
