"""thin events: a pending status and its claim, pause reasons, API versions per day

Revision ID: 0006_thin_events
Revises: 0005_leases
Create Date: 2026-12-01

`pending` is a new allowed value of webhook_events.status. Loosening a CHECK constraint cannot
invalidate a stored row, so neither database rewrites the table (on SQLite a rebuild of ten
million events would hold the start of every process for minutes): PostgreSQL swaps the
constraint (checking the rows, a scan without a rewrite), and on SQLite the table's stored
definition is edited in place, the procedure SQLite documents for removing or loosening a
CHECK constraint (https://www.sqlite.org/lang_altertable.html, "making other kinds of table
schema changes").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import finance_core.store.models

revision: str = "0006_thin_events"
down_revision: str | None = "0005_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CHECK = "status IN ('processed', 'ignored', 'failed', 'dismissed')"
NEW_CHECK = "status IN ('processed', 'ignored', 'failed', 'dismissed', 'pending')"
CONSTRAINT = "ck_webhook_events_status"


def _replace_check(old: str, new: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE webhook_events DROP CONSTRAINT {CONSTRAINT}, "
            f"ADD CONSTRAINT {CONSTRAINT} CHECK ({new})"
        )
        return
    table_sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'webhook_events'"
    ).scalar_one()
    if old not in table_sql:
        raise RuntimeError(f"webhook_events has no constraint {old!r} to replace")
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'webhook_events'",
        (table_sql.replace(old, new),),
    )
    # A new schema version makes every connection read the edited definition.
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("claimed_by", sa.String(length=255)))
    op.add_column(
        "webhook_events", sa.Column("claimed_until", finance_core.store.models.UTCDateTime())
    )
    op.add_column(
        "webhook_events", sa.Column("next_attempt_at", finance_core.store.models.UTCDateTime())
    )
    _replace_check(OLD_CHECK, NEW_CHECK)
    op.add_column("subscriptions", sa.Column("pause_reason", sa.String(length=64)))
    op.create_index(
        "ix_subscriptions_paused",
        "subscriptions",
        ["pause_reason"],
        sqlite_where=sa.text("status = 'paused'"),
        postgresql_where=sa.text("status = 'paused'"),
    )
    op.create_table(
        "event_api_versions",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("api_version", sa.String(length=64), nullable=False),
        sa.Column("writer", sa.String(length=100), nullable=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "kind", "api_version", "writer", name=op.f("pk_event_api_versions")
        ),
    )


def downgrade() -> None:
    op.drop_table("event_api_versions")
    op.drop_index("ix_subscriptions_paused", table_name="subscriptions")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("pause_reason")
    op.execute("DELETE FROM webhook_events WHERE status = 'pending'")
    _replace_check(NEW_CHECK, OLD_CHECK)
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
