"""alerts: each rule's state, every alert with its per-channel attempts, and hourly samples

Revision ID: 0007_alerts
Revises: 0006_thin_events
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import finance_core.store.models

revision: str = "0007_alerts"
down_revision: str | None = "0006_thin_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("changed_at", finance_core.store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule", name=op.f("pk_alert_rules")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", finance_core.store.models.UTCDateTime(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("triggered_by", sa.String(length=255), nullable=True),
        sa.Column("claimed_until", finance_core.store.models.UTCDateTime(), nullable=True),
        sa.CheckConstraint("kind IN ('started', 'ended', 'test')", name=op.f("ck_alerts_kind")),
        sa.CheckConstraint(
            "status IN ('sending', 'sent', 'failed', 'unsent')", name=op.f("ck_alerts_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_status_claimed_until", "alerts", ["status", "claimed_until"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("channel_name", sa.String(length=255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", finance_core.store.models.UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('sent', 'failed', 'timed_out')", name=op.f("ck_alert_deliveries_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    op.create_index("ix_alert_deliveries_alert_id", "alert_deliveries", ["alert_id"])
    op.create_table(
        "alert_samples",
        sa.Column("measure", sa.String(length=64), nullable=False),
        sa.Column("taken_at", finance_core.store.models.UTCDateTime(), nullable=False),
        sa.Column("sample_value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("measure", "taken_at", name=op.f("pk_alert_samples")),
    )


def downgrade() -> None:
    op.drop_table("alert_samples")
    op.drop_index("ix_alert_deliveries_alert_id", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alerts_status_claimed_until", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
