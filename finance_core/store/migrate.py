"""Create or upgrade the schema with Alembic; safe to run at every start, from several processes."""

import logging
from pathlib import Path

from sqlalchemy import Engine

from finance_core.store.db import WRITE_OPTION

# Alembic logs at INFO each plugin it registers (as it is imported) and each step of every
# upgrade: seven lines of chatter at every start of every process. Its warnings still show,
# and `upgrade` says in one line when it changed the schema. Set before Alembic is imported.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("finance_core.store.migrate")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema (idempotent)."""
    config = _config()
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        # One transaction for the whole upgrade, begun before Alembic looks at the version:
        # on SQLite Alembic would otherwise commit after each revision, and a second process
        # could migrate between the version this one read and the revision it applies next.
        with conn.begin():
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info("schema migrated from %s to %s", before or "an empty database", after)


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest schema."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head
