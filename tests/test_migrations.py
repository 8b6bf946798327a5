"""Schema: Alembic migrations equal the models, run twice safely, and run from many processes."""

import subprocess
import sys
import time

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError

from finance_core.store import migrate
from finance_core.store.db import is_unavailable, make_engine, write_transaction
from finance_core.store.models import metadata


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


@pytest.mark.slow
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
        "import time; from finance_core.store import migrate; "
        "from finance_core.store.db import make_engine; "
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


def test_the_pending_status_arrives_without_losing_or_loosening_anything(database_url):
    """0006 lets webhook_events take `pending` in place; old rows stay, bad statuses still fail."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            config = migrate._config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0005_leases")
        row = (
            "INSERT INTO webhook_events (id, type, created, livemode, status, attempts, "
            "deliveries, first_received_at, last_received_at) VALUES ('{id}', 'product.created', "
            "1, false, '{status}', 1, 1, '2026-11-30 10:00:00', '2026-11-30 10:00:00')"
        )
        with write_transaction(engine) as conn:
            conn.execute(text(row.format(id="evt_old", status="processed")))
        migrate.upgrade(engine)
        with write_transaction(engine) as conn:
            conn.execute(text(row.format(id="evt_thin", status="pending")))
        with pytest.raises(IntegrityError), write_transaction(engine) as conn:
            conn.execute(text(row.format(id="evt_bad", status="bogus")))
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT id, status FROM webhook_events")).all())
        assert stored == {"evt_old": "processed", "evt_thin": "pending"}
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        engine.dispose()
