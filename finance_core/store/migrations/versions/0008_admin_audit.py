"""the audit log, which refuses changes, and a session version per dashboard user

`audit_log` rows are written by the app and never changed: triggers refuse UPDATE and DELETE
(and, on PostgreSQL, TRUNCATE) on both databases, whoever connects. `session_version` is what
the dashboard's login cookie is signed with (finance_core.access.sessions); users of before this
revision start with '' and sign in once more, since their cookies were signed otherwise.

Revision ID: 0008_admin_audit
Revises: 0007_alerts
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import finance_core.store.models

revision: str = "0008_admin_audit"
down_revision: str | None = "0007_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSAL = "audit_log rows cannot be changed or deleted"

SQLITE = [
    f"""
    CREATE TRIGGER audit_log_refuse_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
    f"""
    CREATE TRIGGER audit_log_refuse_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END
    """,
]

POSTGRESQL = [
    f"""
    CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{REFUSAL} (%)', TG_OP USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_log_refuse_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()
    """,
    # Row triggers do not see TRUNCATE.
    """
    CREATE TRIGGER audit_log_refuse_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()
    """,
]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recorded_at", finance_core.store.models.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_recorded_at", "audit_log", ["recorded_at", "id"])
    op.create_index("ix_audit_log_actor_recorded", "audit_log", ["actor", "recorded_at"])
    op.create_index("ix_audit_log_action_recorded", "audit_log", ["action", "recorded_at"])
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL:
        op.execute(statement)
    op.add_column(
        "dashboard_users",
        sa.Column(
            "session_version", sa.String(length=64), nullable=False, server_default=sa.text("''")
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("dashboard_users") as batch:
        batch.drop_column("session_version")
    # Dropping the table drops its triggers; PostgreSQL's function stays until dropped.
    op.drop_table("audit_log")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_log_refuse_change()")
