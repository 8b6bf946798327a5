"""Owner-only files (SPEC 19): the store, its WAL files, data/ and demo.env after a run."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.postgres import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def clean_environment(**settings: str) -> dict[str, str]:
    drop = {"STRIPE_WEBHOOK_SECRET", "DATABASE_URL", "DASHBOARD_COOKIE_KEY", "LISTENER_HOST"}
    return {
        **{k: v for k, v in os.environ.items() if k not in drop and k != "DASHBOARD_ADDRESS"},
        **settings,
    }


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_make_run_leaves_the_store_its_wal_data_and_demo_env_to_their_owner(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as a fresh clone has it (data/.gitkeep)
    data.chmod(0o755)
    listener, dashboard = free_port(), free_port()
    old_umask = os.umask(0o022)  # the usual umask: the run must not depend on a stricter one
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "finance_core.run"],
            cwd=ROOT,
            env=clean_environment(
                LISTENER_PORT=str(listener),
                DASHBOARD_PORT=str(dashboard),
                FINANCE_DATA_DIR=str(data),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.umask(old_umask)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{listener}/healthz"))
        wait_until(lambda: answers(f"http://127.0.0.1:{dashboard}/_stcore/health"))
        # The demo sender writes through the listener: the WAL files exist while it runs.
        wait_until(lambda: (data / "demo.db-wal").exists() and (data / "demo.db-shm").exists())
        assert mode(data) == 0o700
        for name in ("demo.env", "demo.db", "demo.db-wal", "demo.db-shm"):
            assert mode(data / name) == 0o600, name
        assert {mode(path) & 0o077 for path in data.iterdir()} == {0}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_the_cli_creates_a_new_store_and_its_directory_for_its_owner_only(tmp_path):
    store = tmp_path / "new" / "finance.db"
    old_umask = os.umask(0o022)
    try:
        subprocess.run(
            [sys.executable, "-m", "finance_core", "init-db"],
            cwd=ROOT,
            env=clean_environment(DATABASE_URL=f"sqlite:///{store}"),
            check=True,
            capture_output=True,
        )
    finally:
        os.umask(old_umask)
    assert mode(store.parent) == 0o700
    assert mode(store) == 0o600
    for companion in store.parent.iterdir():
        assert mode(companion) == 0o600, companion.name


def test_an_existing_store_opened_more_openly_is_made_owner_only(tmp_path):
    from finance_core.store import migrate
    from finance_core.store.db import make_engine

    store = tmp_path / "finance.db"
    store.touch(mode=0o644)
    store.chmod(0o644)
    engine = make_engine(f"sqlite:///{store}")
    migrate.upgrade(engine)
    try:
        assert mode(store) == 0o600
        assert mode(Path(f"{store}-wal")) == 0o600
        assert mode(Path(f"{store}-shm")) == 0o600
    finally:
        engine.dispose()
