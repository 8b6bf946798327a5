"""Schema: Alembic migrations equal the models, run twice safely, and run from two processes."""

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from finance_core import migrate
from finance_core.db import make_engine
from finance_core.models import metadata


def test_migrations_match_the_models(engine):
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_upgrade_is_idempotent(engine):
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"subscriptions", "webhook_events", "api_tokens", "alembic_version"} <= tables


def test_two_processes_migrating_a_fresh_database_at_once(database_url):
    script = (
        "from finance_core.db import make_engine; from finance_core import migrate; "
        f"migrate.upgrade(make_engine({database_url!r}))"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE) for _ in range(2)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr.decode()
    engine = make_engine(database_url)
    try:
        assert migrate.is_current(engine)
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/wal.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() >= 5000
    engine.dispose()


def test_sqlite_creates_the_data_directory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/nested/dir/finance.db")
    migrate.upgrade(engine)
    engine.dispose()
    assert (tmp_path / "nested" / "dir" / "finance.db").exists()
