"""The schema: minimal references to Stripe objects, the webhook log, and our own credentials.

Stripe statuses are plain text (a new Stripe status must not need a migration); our own
statuses are text with CHECK constraints. Every Stripe object row remembers the `created`
time and id of the event that set its state, which is what the ordering rules compare.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC on every backend and always returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """A stored datetime (naive means UTC) as an aware UTC datetime."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# `pending`: a thin event stored and acknowledged, waiting for its object from Stripe's API.
EVENT_STATUSES = ("processed", "ignored", "failed", "dismissed", "pending")
SYNC_STATUSES = ("running", "succeeded", "failed", "interrupted")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """A CHECK that `column` holds one of `values`, named after the column."""
    listed = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


def _state_columns() -> list[Column[Any]]:
    """Which event set this row's state, for the per-object ordering rule."""
    return [
        Column("state_created", BigInteger, nullable=False),
        Column("state_event_id", String(255), nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ]


products = Table(
    "products",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(500)),
    Column("active", Boolean),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("livemode", Boolean, nullable=False),
    *_state_columns(),
)

prices = Table(
    "prices",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("product_id", String(255)),
    Column("active", Boolean),
    Column("unit_amount", BigInteger),
    Column("currency", String(16)),
    Column("recurring_interval", String(32)),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("livemode", Boolean, nullable=False),
    *_state_columns(),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("status", String(64), nullable=False),
    # '' when the subscription has no item yet: a plan of its own ("No plan").
    Column("product_id", String(255), nullable=False),
    Column("price_id", String(255)),
    Column("customer_id", String(255)),
    Column("current_period_start", UTCDateTime),
    Column("current_period_end", UTCDateTime),
    Column("cancel_at_period_end", Boolean),
    # Why Stripe paused it (status_details.paused.subscription.type, from 2026-09-30.endive);
    # None unless paused.
    Column("pause_reason", String(64)),
    # Stripe's own dates, which date the history (migration 0010): `start_date` (else
    # `created`); once canceled, `canceled_at` (else `ended_at`) and `ended_at` (else
    # `canceled_at`).
    Column("started_at", UTCDateTime),
    Column("canceled_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("livemode", Boolean, nullable=False),
    *_state_columns(),
    CheckConstraint("length(status) > 0", name="status_not_empty"),
    Index(
        "ix_subscriptions_paused",
        "pause_reason",
        sqlite_where=text("status = 'paused'"),
        postgresql_where=text("status = 'paused'"),
    ),
)


# Maintained in the same transaction as `subscriptions`, so that the summary reads a few
# rows instead of counting a million.
subscription_counts = Table(
    "subscription_counts",
    metadata,
    Column("product_id", String(255), primary_key=True),
    Column("status", String(64), primary_key=True),
    Column("subscription_count", BigInteger, nullable=False),
    CheckConstraint("subscription_count >= 0", name="count_not_negative"),
)

# The same triggers keep a daily history, dated by Stripe (migrations 0012 and 0015): per UTC
# day and plan, the day's net change of each status (a column per status of Stripe's, another
# for a status Stripe may add), and how many subscriptions started or were canceled that day
# (their own `started_at` and `canceled_at`; other moves on the day of the event). A day's
# counts are today's minus the changes since, so trends read one row per day and plan of the
# window at any size.
HISTORY_STATUSES = (
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)
OTHER_STATUSES = "other_statuses"  # the column of a status not in HISTORY_STATUSES


def history_column(status: str) -> str:
    """The history column that holds a status's daily change."""
    return status if status in HISTORY_STATUSES else OTHER_STATUSES


subscription_history = Table(
    "subscription_history",
    metadata,
    Column("day", Date, primary_key=True),
    Column("product_id", String(255), primary_key=True),
    *(
        Column(name, BigInteger, nullable=False, server_default=text("0"))
        for name in (*HISTORY_STATUSES, OTHER_STATUSES)
    ),
    Column("new_subscriptions", BigInteger, nullable=False),
    Column("cancellations", BigInteger, nullable=False),
)

# One row: the first UTC day the store observed; days before are reconstructed from Stripe's
# dates, their status detail (trialing, past due) unknown.
subscription_history_observed = Table(
    "subscription_history_observed",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("observed_since", Date, nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("subscription_id", String(255)),
    Column("status", String(64), nullable=False),
    # The latest payment attempt failed and the invoice is still open.
    Column("payment_failing", Boolean, nullable=False),
    Column("amount_due", BigInteger),
    Column("currency", String(16)),
    Column("attempt_count", Integer),
    # When the invoice's current run of failures began (the failing event's `created`);
    # NULL while it is not failing.
    Column("failing_since", UTCDateTime),
    # For collections (migration 0010): the customer (a reference, never personal data), the
    # invoice's own product (its first line's; NULL when it names none), when Stripe retries
    # next (NULL: no retry planned, Stripe stopped), and what the amount paid was.
    Column("customer_id", String(255)),
    Column("product_id", String(255)),
    Column("next_payment_attempt", UTCDateTime),
    Column("amount_paid", BigInteger),
    # The earliest failure ever seen, kept after the invoice closes: "was failing".
    Column("first_failed_at", UTCDateTime),
    # When it reached its terminal status (paid, void, uncollectible, deleted; which one is
    # `status`): Stripe's status_transitions time, else the closing event's `created`.
    # NULL while the invoice is open.
    Column("closed_at", UTCDateTime),
    Column("livemode", Boolean, nullable=False),
    *_state_columns(),
    # The failing few, newest failure first: the failed-payments count and the Payments
    # page's keyset pages. Spelled as each dialect renders `WHERE invoices.payment_failing`
    # (SQLite: `= 1`), or the planners would not use it.
    Index(
        "ix_invoices_failing",
        "failing_since",
        "id",
        sqlite_where=text("payment_failing = 1"),
        postgresql_where=text("payment_failing"),
    ),
    # Recovered: invoices that were failing, by how and when they closed, read from the index
    # alone (SQLite wants the predicate's column in it for that); only invoices that ever
    # failed are in it.
    Index(
        "ix_invoices_closed_after_failing",
        "status",
        "closed_at",
        "currency",
        "amount_paid",
        "first_failed_at",
        sqlite_where=text("first_failed_at IS NOT NULL"),
        postgresql_where=text("first_failed_at IS NOT NULL"),
    ),
    # The recovery rate: invoices that failed and have closed, by when they first failed and
    # how they closed, read from the index alone.
    Index(
        "ix_invoices_failed_then_closed",
        "first_failed_at",
        "status",
        "closed_at",
        sqlite_where=text("first_failed_at IS NOT NULL AND closed_at IS NOT NULL"),
        postgresql_where=text("first_failed_at IS NOT NULL AND closed_at IS NOT NULL"),
    ),
)

# The Payments page's aggregates, kept by triggers on `invoices` in the same statement as the
# invoice (migration 0012), so that they read a few rows at any size. Key columns are not
# NULL: an invoice without a currency counts under ''. Rows at zero stay.
# Per currency: the failing invoices and their amount due (NULL amounts as 0).
failing_invoice_totals = Table(
    "failing_invoice_totals",
    metadata,
    Column("currency", String(16), primary_key=True),
    Column("invoices", BigInteger, nullable=False),
    Column("amount_due", BigInteger, nullable=False),
)
# Per UTC day of `closed_at` and currency: the invoices that had been failing and were paid.
recovery_paid_daily = Table(
    "recovery_paid_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("currency", String(16), primary_key=True),
    Column("invoices", BigInteger, nullable=False),
    Column("amount_paid", BigInteger, nullable=False),
)
# Per UTC day of `first_failed_at` and status: the invoices that failed and have closed.
recovery_closings_daily = Table(
    "recovery_closings_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("status", String(64), primary_key=True),
    Column("invoices", BigInteger, nullable=False),
)


webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("api_version", String(64)),
    Column("livemode", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("attempts", Integer, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("first_received_at", UTCDateTime, nullable=False),
    Column("last_received_at", UTCDateTime, nullable=False),
    Column("processed_at", UTCDateTime),
    # Kept while the event is failed (for a replay) or a pending thin event (for the resolver);
    # cleared once it is processed or ignored.
    Column("payload", Text),
    Column("dismissed_by", String(255)),
    # A pending thin event: which resolver has it, until when, and when it may be tried again.
    Column("claimed_by", String(255)),
    Column("claimed_until", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
    _one_of("status", EVENT_STATUSES),
    Index("ix_webhook_events_last_received_at", "last_received_at"),
    Index("ix_webhook_events_status_received", "status", "first_received_at"),
    Index("ix_webhook_events_type_received", "type", "first_received_at"),
    Index("ix_webhook_events_first_received_at", "first_received_at"),
)

# Deliveries per day (UTC, "YYYY-MM-DD") by kind (snapshot or thin) and API version ("" when the
# event names none), kept as events arrive so that "which versions reach us" costs a few rows.
# Each writing thread counts in rows of its own (`writer`), summed when read: writers of
# several listener processes never wait for each other's row lock.
event_api_versions = Table(
    "event_api_versions",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("api_version", String(64), primary_key=True),
    Column("writer", String(100), primary_key=True),
    Column("event_count", BigInteger, nullable=False),
)

# One row per `sync` run: when, who asked, what it changed (a JSON report) or why it stopped.
sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("triggered_by", String(255), nullable=False),
    Column("report", Text),
    Column("error", Text),
    _one_of("status", SYNC_STATUSES),
)

# A ring of the latest rejections (trimmed on insert) plus one total per reason.
KEEP_LATEST_REJECTIONS = 5000
rejected_deliveries = Table(
    "rejected_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("client_address", String(64)),
)

rejection_totals = Table(
    "rejection_totals",
    metadata,
    Column("reason", String(64), primary_key=True),
    Column("rejection_count", BigInteger, nullable=False),
    Column("last_rejected_at", UTCDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("roles", String(1000), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

dashboard_users = Table(
    "dashboard_users",
    metadata,
    Column("username", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("email", String(255)),
    Column("password_hash", String(255), nullable=False),
    Column("roles", String(1000), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Random, and replaced whenever the user's sessions end (finance_core.access.sessions): the
    # login cookie's signature depends on it, so a new one voids every cookie issued before.
    Column("session_version", String(64), nullable=False, server_default=text("''")),
)

# Who changed what, from the dashboard or the CLI. Rows are only ever inserted: triggers in
# the database refuse UPDATE and DELETE (migration 0008), whatever the client.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False),
    Column("detail", String(1000), nullable=False),
    Index("ix_audit_log_recorded_at", "recorded_at", "id"),
    Index("ix_audit_log_actor_recorded", "actor", "recorded_at"),
    Index("ix_audit_log_action_recorded", "action", "recorded_at"),
)

# Jobs that must run in one place at a time (alert evaluation, housekeeping): whoever holds an
# unexpired lease does the work; a process that dies leaves it to expire and be taken over.
leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Alerts (SPEC 12). Each rule's state, so that it alerts once when its condition starts and once
# when it ends, across restarts; changing it is the claim that decides which process sends.
ALERT_STATE_OK = "ok"
ALERT_KINDS = ("started", "ended", "test", "digest")
ALERT_STATUSES = ("sending", "sent", "failed", "unsent")
ALERT_OUTCOMES = ("sent", "failed", "timed_out")


alert_rules = Table(
    "alert_rules",
    metadata,
    Column("rule", String(64), primary_key=True),
    # ALERT_STATE_OK, or the state the condition started in ("delayed", "bad_signature", ...).
    Column("state", String(64), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

# Every alert, sent or not (no channel configured), for the Alerts page. Rare: never trimmed.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("rule", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("state", String(64), nullable=False),
    Column("title", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("triggered_by", String(255)),
    # While sending: its sender's hold; past it another process sends it (the sender died).
    Column("claimed_until", UTCDateTime),
    _one_of("kind", ALERT_KINDS),
    _one_of("status", ALERT_STATUSES),
    Index("ix_alerts_status_claimed_until", "status", "claimed_until"),
)

# Each attempt to send an alert to a channel, named without its secrets (scheme and host).
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, nullable=False),
    Column("channel", Integer, nullable=False),  # its place in ALERT_URLS, from 1
    Column("channel_name", String(255), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", String(500)),
    _one_of("outcome", ALERT_OUTCOMES),
    Index("ix_alert_deliveries_alert_id", "alert_id"),
)

# A measure sampled once a minute over the last hour (failed payments, for their rise).
alert_samples = Table(
    "alert_samples",
    metadata,
    Column("measure", String(64), primary_key=True),
    Column("taken_at", UTCDateTime, primary_key=True),
    Column("sample_value", BigInteger, nullable=False),
)

# The feed check (SPEC 17): Stripe's own view of the feed, one row (id 1). `claimed_until` is
# the claim that lets one process at a time run the check; `problem` (the reason health is
# `error`, in words) is read by the health statement; `report` is the whole result as JSON.
FEED_CHECK_ROW = 1
FEED_CHECK_VERDICTS = ("ok", "warning", "error", "off", "unavailable")
feed_check = Table(
    "feed_check",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("checked_at", UTCDateTime),
    Column("verdict", String(16)),
    Column("problem", Text),
    Column("report", Text),
    Column("requested_at", UTCDateTime),
    Column("claimed_until", UTCDateTime),
    Column("claimed_by", String(255)),
)
