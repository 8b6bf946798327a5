"""Schema: Alembic migrations equal the models, run twice safely, and run from many processes."""

import subprocess
import sys
import time

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from finance_core import migrate
from finance_core.db import is_unavailable, make_engine, write_transaction
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


@pytest.mark.parametrize("starting_revision", [None, "0001_initial"])
def test_processes_migrating_one_database_at_once(database_url, starting_revision):
    """Listener, dashboard and workers all migrate on start, on a new or an older database."""
    if starting_revision:
        engine = make_engine(database_url)
        with engine.connect() as conn, conn.begin():
            config = migrate._config()
            config.attributes["connection"] = conn
            command.upgrade(config, starting_revision)
        engine.dispose()
    # Each process imports first, then all start migrating at the same moment.
    start_at = time.time() + 3
    script = (
        "import time; from finance_core.db import make_engine; from finance_core import migrate; "
        f"engine = make_engine({database_url!r}); time.sleep(max(0, {start_at} - time.time())); "
        "migrate.upgrade(engine)"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE) for _ in range(4)
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


def test_sqlite_errors_that_mean_try_later_are_told_from_the_others(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/busy.db")
    migrate.upgrade(engine)
    with pytest.raises(OperationalError) as missing, engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    assert not is_unavailable(missing.value)  # a bug or a wrong schema: a 500, not a retry

    with write_transaction(engine) as holder:
        holder.execute(text("DELETE FROM rejection_totals"))
        with engine.connect() as other:
            other.exec_driver_sql("PRAGMA busy_timeout = 0")
            other.commit()
            with pytest.raises(OperationalError) as locked:
                other.exec_driver_sql(
                    "INSERT INTO rejection_totals VALUES (?, ?, ?)", ("x", 1, "2026-01-01")
                )
    assert is_unavailable(locked.value)
    engine.dispose()
