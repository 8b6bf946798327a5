"""Transient faults are waited out (SPEC 18): SQLite held by another process past its busy
timeout, PostgreSQL restarted mid-burst. Deliveries meanwhile get 503 (Stripe retries them);
afterwards the store equals a clean run, no event is failed and health is healthy again."""

import subprocess
import sys
import threading
import time

import pytest

from finance_core.store.db import SQLITE_BUSY_TIMEOUT_MS
from tests.conftest import skip_or_fail
from tests.support.bursts import (
    ALERTS_EVERY_SECOND,
    acknowledged_in,
    alerts_recovered_without_flapping,
    assert_same_as_a_clean_run,
    burst,
    codes,
    listener_and_writer,
    no_failed_events_and_healthy,
    redeliver_the_unacknowledged,
    send_all,
)
from tests.support.postgres import PostgresServer, find_pg_bin

pytestmark = pytest.mark.slow

HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_sqlite_held_past_its_busy_timeout_loses_nothing_and_heals(tmp_path) -> None:
    events = burst(400, seed=11)
    url = f"sqlite:///{tmp_path}/held.db"
    hold_s = SQLITE_BUSY_TIMEOUT_MS / 1000 + 3
    with listener_and_writer(url, **ALERTS_EVERY_SECOND) as (listener, writer):
        warm = events[:50]
        assert set(codes(send_all(listener.url, warm)).values()) == {200}
        with subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITE_LOCK, f"{tmp_path}/held.db", str(hold_s)],
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            first = send_all(listener.url, events[50:], workers=8)
            holder.wait(timeout=120)
        answers = codes(first)
        assert 503 in answers.values() or None in answers.values(), "the lock held nothing up"
        assert set(answers.values()) <= {200, 503, None}  # never a 500, never a failed event
        redeliver_the_unacknowledged(listener.url, events[50:], answers, seed=12)
        assert listener.writer_pid() == writer  # waited out, not crashed
        acknowledged = acknowledged_in(answers) | {e["id"] for e in warm}
        alerts_recovered_without_flapping(url)
    assert_same_as_a_clean_run(tmp_path, url, events, acknowledged)
    no_failed_events_and_healthy(url)


@pytest.mark.postgres
def test_postgresql_restarted_mid_burst_loses_nothing_and_heals(tmp_path) -> None:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        skip_or_fail("no PostgreSQL server binaries", package="postgresql")
    assert bin_dir is not None
    server = PostgresServer(bin_dir)
    server.start()
    try:
        url = server.create_database("restarted")
        events = burst(1500, seed=21)
        with listener_and_writer(url, **ALERTS_EVERY_SECOND) as (listener, _writer):
            restarted = threading.Event()

            def restart() -> None:
                server.pause()  # a fast shutdown, as a package upgrade does
                time.sleep(2)  # the outage itself, not a wait for a condition
                server.resume()
                restarted.set()

            outage = threading.Thread(target=restart)
            first = send_all(listener.url, events, stop_after_acks=400, on_stop=outage.start)
            outage.join(timeout=120)
            assert restarted.is_set()
            answers = codes(first)
            assert set(answers.values()) <= {200, 503, None}
            redeliver_the_unacknowledged(listener.url, events, answers, seed=22)
            acknowledged = acknowledged_in(answers)
            alerts_recovered_without_flapping(url)
        assert_same_as_a_clean_run(tmp_path, url, events, acknowledged)
        no_failed_events_and_healthy(url)
    finally:
        server.stop()
