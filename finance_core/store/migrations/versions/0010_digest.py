"""the morning digest kept as an alert of its own kind

Every digest is kept in `alerts` (rule `digest`, kind `digest`) with its per-channel results,
as the rules' alerts are; the CHECK on `alerts.kind` now allows it. Which local day's digest
was sent last is the `digest` row of `alert_rules`, which needs no change.

Revision ID: 0010_digest
Revises: 0009_history_retention
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_digest"
down_revision: str | None = "0009_history_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _allow_kinds(*kinds: str) -> None:
    listed = ", ".join(f"'{kind}'" for kind in kinds)
    # SQLite cannot alter a constraint: batch mode copies the table with the new CHECK.
    with op.batch_alter_table("alerts", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_alerts_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_alerts_kind"), f"kind IN ({listed})")


def upgrade() -> None:
    _allow_kinds("started", "ended", "test", "digest")


def downgrade() -> None:
    op.execute(
        "DELETE FROM alert_deliveries WHERE alert_id IN "
        "(SELECT id FROM alerts WHERE kind = 'digest')"
    )
    op.execute("DELETE FROM alerts WHERE kind = 'digest'")
    op.execute("DELETE FROM alert_rules WHERE rule = 'digest'")
    _allow_kinds("started", "ended", "test")
