"""Alembic environment: runs on the connection finance_core.store.migrate hands over."""

from alembic import context
from sqlalchemy import text

from finance_core.store.models import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `python -m finance_core init-db`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Listener and dashboard migrate on start; one waits for the other.
        connection.execute(text("SELECT pg_advisory_xact_lock(7244150)"))
    context.run_migrations()
