"""Create or upgrade the schema with Alembic; safe to run at every start, from several processes."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from finance_core.db import WRITE_OPTION

MIGRATIONS = Path(__file__).with_name("migrations")


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
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest schema."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


def make_revision(engine: Engine, message: str) -> None:
    """Autogenerate a new migration against the current models (a developer tool)."""
    config = _config()
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)
